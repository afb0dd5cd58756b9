//! The worker's side of cancellation by job id: it reads the cancel stream from its start
//! (`warren_infra::cancels`) into a set that outlives sessions, catches up before it consumes
//! any job, and tells running jobs whose cancel arrives through their context's flag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Connection;
use tokio::sync::{oneshot, watch};
use warren_common::CancelFlag;
use warren_infra::cancels::{self, CancelSet, From, Record};
use warren_infra::{Publisher, Settings};

use crate::metrics::Metrics;
use crate::pool::now_us;

/// What this worker knows of cancels: the set, where to read on, the jobs running now.
pub struct Cancels {
    set: Mutex<CancelSet>,
    /// The offset after the last record read: a new session reads on from there.
    next: Mutex<Option<u64>>,
    running: Mutex<HashMap<String, Vec<CancelFlag>>>,
    metrics: Arc<Metrics>,
    /// (session, whether that session has read the stream to its marker or given up waiting):
    /// jobs start only once it has.
    caught_up: watch::Sender<(u64, bool)>,
}

/// A running job's registration; its flag is raised if a cancel for it arrives meanwhile.
pub struct Watch<'a> {
    cancels: &'a Cancels,
    job_id: String,
    pub flag: CancelFlag,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.cancels.running);
        if let Some(flags) = running.get_mut(&self.job_id) {
            flags.retain(|f| !f.same(&self.flag));
            if flags.is_empty() {
                running.remove(&self.job_id);
            }
        }
    }
}

impl std::fmt::Debug for Cancels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancels").field("known", &lock(&self.set).len()).field("next", &*lock(&self.next)).finish()
    }
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("job_id", &self.job_id).field("cancelled", &self.flag.is_raised()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cancels {
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            set: Mutex::new(CancelSet::new(Duration::from_secs(settings.topology.cancel_retention_s))),
            next: Mutex::new(None),
            running: Mutex::default(),
            metrics,
            caught_up: watch::Sender::new((0, settings.topology.cancel_stream.is_empty())),
        }
    }

    /// Returns once this session has read the cancel stream to its end (or given up waiting:
    /// bounded by `broker.confirm_timeout_ms`): a job that starts before would miss the
    /// cancels published before the worker came.
    pub async fn caught_up(&self) {
        if self.caught_up.borrow().1 {
            return;
        }
        let mut rx = self.caught_up.subscribe();
        let _ = rx.wait_for(|(_, done)| *done).await;
    }

    fn mark_caught_up(&self, session: u64) {
        self.caught_up.send_if_modified(|(s, done)| {
            let now = *s == session && !*done;
            *done |= now;
            now
        });
    }

    pub fn is_cancelled(&self, job_id: &str) -> bool {
        lock(&self.set).contains(job_id, now_us() / 1000)
    }

    /// Registers a job about to run. A cancel read between the job's check and this is seen
    /// here: [`Self::take`] records the id before it looks for running jobs, and this looks
    /// for the id after registering, so one of the two finds the other.
    pub fn watch(&self, job_id: &str) -> Watch<'_> {
        let flag = CancelFlag::default();
        lock(&self.running).entry(job_id.to_owned()).or_default().push(flag.clone());
        if self.is_cancelled(job_id) {
            flag.raise();
        }
        Watch { cancels: self, job_id: job_id.to_owned(), flag }
    }

    fn take(&self, offset: u64, record: Result<Record, String>) -> Option<String> {
        *lock(&self.next) = Some(offset.saturating_add(1));
        match record {
            Ok(Record::Cancel { job_ids, at_ms }) => {
                let added = {
                    let mut set = lock(&self.set);
                    let added = set.insert(&job_ids, at_ms, now_us() / 1000);
                    self.metrics.cancels_known.set(i64::try_from(set.len()).unwrap_or(i64::MAX));
                    added
                };
                let running = lock(&self.running);
                for id in &job_ids {
                    for flag in running.get(id).into_iter().flatten() {
                        tracing::info!(job_id = %id, "cancel for a running job: its context is told");
                        flag.raise();
                    }
                }
                tracing::debug!(ids = job_ids.len(), added, offset, "cancel record read");
                None
            }
            Ok(Record::Marker(m)) => Some(m),
            Err(e) => {
                tracing::warn!(offset, error = %e, "skipping a message of the cancel stream that is not a cancel record");
                None
            }
        }
    }

    /// Starts reading the cancel stream on `connection` (from where the last session stopped,
    /// or its first record), and marks the session caught up ([`Self::caught_up`]) once it has
    /// read everything published before now, so that no job cancelled before this moment starts
    /// here. Nothing waits here: the worker consumes at once (under a memory alarm, say, the
    /// marker's confirm may take long), and its jobs wait to start. Cancellation never stops a
    /// worker from working: past `within`, or when the marker cannot be published, the session
    /// counts as caught up, with a warning, and cancels read later still stop the jobs that
    /// have not started. The reader follows the stream again, from where it stopped, when the
    /// broker ends its consumer (a stream's leader moved).
    pub fn catch_up(
        self: &Arc<Self>,
        connection: Arc<Connection>,
        publisher: Publisher,
        settings: &Arc<Settings>,
        worker_id: &str,
        within: Duration,
    ) {
        if settings.topology.cancel_stream.is_empty() {
            return;
        }
        let session = self.caught_up.borrow().0.wrapping_add(1);
        self.caught_up.send_replace((session, false));
        let marker = format!("{worker_id}/{}", uuid::Uuid::new_v4());
        let (seen_tx, seen) = oneshot::channel();
        let (cancels, settings_for, mine, tag) =
            (self.clone(), settings.clone(), marker.clone(), format!("{worker_id}/cancels"));
        tokio::spawn(async move {
            let mut seen_tx = Some(seen_tx);
            while connection.status().connected() {
                let from = lock(&cancels.next).map_or(From::First, From::Offset);
                let read = cancels::follow(&connection, &settings_for, from, &tag, |offset, record| {
                    if cancels.take(offset, record).is_some_and(|m| m == mine)
                        && let Some(tx) = seen_tx.take()
                    {
                        let _ = tx.send(());
                    }
                    true
                })
                .await;
                if let Err(e) = read {
                    tracing::warn!(error = format!("{e:#}"), "reading the cancel stream stopped; reading on in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let (cancels, settings) = (self.clone(), settings.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let read_to_marker = async {
                cancels::publish(&publisher, &settings, &Record::Marker(marker)).await?;
                seen.await.map_err(|_| anyhow::anyhow!("the cancel stream's reader stopped"))
            };
            match tokio::time::timeout(within, read_to_marker).await {
                Ok(Ok(())) => {
                    let known = lock(&cancels.set).len();
                    tracing::info!(
                        known,
                        ms = started.elapsed().as_millis() as u64,
                        "read the cancel stream to its end"
                    );
                }
                Ok(Err(e)) => tracing::warn!(
                    error = format!("{e:#}"),
                    "could not read the cancel stream to its end; starting jobs without waiting for it"
                ),
                Err(_) => tracing::warn!(
                    ?within,
                    "the cancel stream was not read to its end in time; starting jobs without waiting for it"
                ),
            }
            cancels.mark_caught_up(session);
        });
    }
}
