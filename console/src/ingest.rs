//! Reading the events: the console's durable queue (bound to the events exchange with `#`),
//! taken in batches of up to `console.batch` events or `console.batch_wait_ms`, each stored in
//! one transaction and acked only once it committed. A restart, a lost connection or a database
//! that is down loses nothing: what was not committed is still unacked, and the broker hands it
//! back. A message that is not events is dead-lettered with its reason (`<queue>.dead`) and the
//! rest of its batch goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use warren_infra::Settings;
use warren_infra::backoff::Backoff;
use warren_infra::topology::{self, Plan};

use crate::event::{self, Received};
use crate::metrics::Metrics;
use crate::store::{Job, Store};

/// What the console shares between its reader and its server.
#[derive(Debug, Clone)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub metrics: Metrics,
    /// Jobs as they are after each commit, for the live stream (sent only while someone listens).
    pub updates: broadcast::Sender<Arc<Vec<Job>>>,
    /// Consuming, and the database took the last batch.
    pub consuming: Arc<AtomicBool>,
    pub store_ok: Arc<AtomicBool>,
}

/// Reads events until `cancel`, reconnecting with backoff.
pub async fn run(shared: Shared, cancel: CancellationToken) {
    let b = &shared.settings.broker;
    let mut backoff =
        Backoff::new(Duration::from_millis(b.reconnect_min_ms), Duration::from_millis(b.reconnect_max_ms));
    while !cancel.is_cancelled() {
        match session(&shared, &cancel, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                shared.consuming.store(false, Ordering::Relaxed);
                shared.metrics.connected.set(0);
                let wait = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "event reader lost the broker");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    shared.consuming.store(false, Ordering::Relaxed);
    shared.metrics.connected.set(0);
}

/// Declares what the console reads (`Plan::console`) and returns the channel to read on. A
/// queue that exists with other arguments (a console of an earlier build declared it without
/// `console.queue_max_bytes`, or an operator changed it) is read as it is, with a warning each
/// time: refusing it would leave the console reading nothing while the queue grows.
async fn declare(connection: &lapin::Connection, s: &Settings) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    let plan = Plan::console(s);
    match topology::declare_plan(&channel, s, &plan).await {
        Ok(()) => Ok(channel),
        Err(e) if topology::is_inequivalent(&e) => {
            tracing::warn!(
                queue = %s.console.queue,
                broker_said = %format!("{e:#}"),
                "the console's queue exists with other arguments than configured (console.queue_max_bytes \
                 is not applied to it); reading it as it is. To apply them, delete the queue once while no \
                 console runs (its events are lost) and start the console"
            );
            // The broker closed the channel that asked.
            let channel = connection.create_channel().await?;
            let mut rest = plan;
            rest.queues.retain(|(queue, _)| *queue != s.console.queue);
            topology::declare_plan(&channel, s, &rest).await?;
            Ok(channel)
        }
        Err(e) => Err(e),
    }
}

async fn session(shared: &Shared, cancel: &CancellationToken, backoff: &mut Backoff) -> anyhow::Result<()> {
    let s = &shared.settings;
    let connection = warren_infra::connect(&s.broker, "console").await?;
    let channel = declare(&connection, s).await?;
    channel.basic_qos(s.console.prefetch.max(1), BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            s.console.queue.as_str().into(),
            "warren-console".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %s.console.queue, "reading lifecycle events");
    shared.consuming.store(true, Ordering::Relaxed);
    shared.metrics.connected.set(1);
    backoff.reset();
    let backlog = tokio::spawn(watch_backlog(
        connection.create_channel().await?,
        s.console.queue.clone(),
        shared.metrics.clone(),
    ));
    let _stop_backlog = AbortOnDrop(backlog);
    let wait = Duration::from_millis(s.console.batch_wait_ms);
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => {
                let _ = connection.close(200, "console stopping".into()).await;
                return Ok(());
            }
            d = consumer.next() => d,
        };
        let first = first.ok_or_else(|| anyhow::anyhow!("the broker ended the console's consumer"))??;
        let mut batch = Batch::default();
        batch.add(shared, first.delivery_tag, &first.data);
        let deadline = tokio::time::Instant::now() + wait;
        let most = usize::from(s.console.prefetch);
        while batch.events < s.console.batch && batch.messages < most {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(Ok(d)) => batch.add(shared, d.delivery_tag, &d.data),
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        settle(shared, &channel, batch, cancel).await?;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every 5 s, how many event messages wait (a passive declare: exact, unlike the management
/// API's sampled counts).
async fn watch_backlog(channel: Channel, queue: String, metrics: Metrics) {
    loop {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        match channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await {
            Ok(q) => metrics.backlog.set(i64::from(q.message_count())),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The messages of one batch: their events, and the tags to ack or reject.
#[derive(Debug, Default)]
struct Batch {
    /// Messages that hold events: (tag, their events).
    good: Vec<(u64, Vec<Received>)>,
    events: usize,
    /// Messages that are not events: (tag, why).
    malformed: Vec<(u64, event::Malformed)>,
    /// Messages taken (at `prefetch`, no more come until this batch is acked).
    messages: usize,
}

impl Batch {
    fn add(&mut self, shared: &Shared, tag: u64, body: &[u8]) {
        self.messages += 1;
        match event::parse(body) {
            Ok(parsed) => {
                for why in &parsed.refused {
                    tracing::warn!(delivery_tag = tag, error = %why, "an event that cannot be read: skipped, its neighbours stored");
                    shared.metrics.events.with_label_values(&["malformed"]).inc();
                }
                self.events += parsed.events.len();
                self.good.push((tag, parsed.events));
            }
            Err(why) => self.malformed.push((tag, why)),
        }
    }
}

/// Why a write failed: the database is unavailable (try again later), or it refuses what the
/// write holds (it never will take it).
fn refused_by_data(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => event::refused_by_data(db.code().as_deref()),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// Stores a batch in one transaction, trying again with backoff while the database is
/// unavailable; when it refuses the batch for what it holds, stores it message by message and
/// dead-letters the messages it refuses. Acks what was stored, only after its commit.
async fn settle(shared: &Shared, channel: &Channel, batch: Batch, cancel: &CancellationToken) -> anyhow::Result<()> {
    for (tag, why) in &batch.malformed {
        tracing::warn!(delivery_tag = tag, error = %why, "an event message that is not events: dead-lettered");
        shared.metrics.events.with_label_values(&["malformed"]).inc();
        channel.basic_reject(*tag, BasicRejectOptions { requeue: false }).await?;
    }
    let Some(&(last, _)) = batch.good.last() else { return Ok(()) };
    let all: Vec<Received> = batch.good.iter().flat_map(|(_, events)| events.iter().cloned()).collect();
    match store_until_taken(shared, &all, cancel).await {
        Some(Ok(stored)) => {
            channel.basic_ack(last, BasicAckOptions { multiple: true }).await?;
            stored_now(shared, &all, stored).await;
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, events = all.len(), "the status store refused a batch for what it holds; storing it message by message");
            for (tag, events) in &batch.good {
                match store_until_taken(shared, events, cancel).await {
                    Some(Ok(stored)) => {
                        channel.basic_ack(*tag, BasicAckOptions { multiple: false }).await?;
                        stored_now(shared, events, stored).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(delivery_tag = tag, error = %e, "the status store refuses this event message: dead-lettered");
                        shared.metrics.events.with_label_values(&["refused"]).inc_by(events.len() as u64);
                        channel.basic_reject(*tag, BasicRejectOptions { requeue: false }).await?;
                    }
                    None => return Ok(()),
                }
            }
        }
        // Stopping: unacked, the batch goes back to the queue when the connection closes.
        None => {}
    }
    Ok(())
}

/// Stores `events`, waiting out an unavailable database with backoff: the result, an error when
/// the database refuses them for what they hold, or None when the console stops first.
async fn store_until_taken(
    shared: &Shared,
    events: &[Received],
    cancel: &CancellationToken,
) -> Option<Result<crate::store::Stored, sqlx::Error>> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let started = std::time::Instant::now();
        match shared.store.store(events).await {
            Ok(stored) => {
                shared.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                shared.metrics.batches.with_label_values(&["committed"]).inc();
                shared.store_ok.store(true, Ordering::Relaxed);
                return Some(Ok(stored));
            }
            Err(e) if refused_by_data(&e) => {
                shared.metrics.batches.with_label_values(&["refused"]).inc();
                return Some(Err(e));
            }
            Err(e) => {
                shared.metrics.batches.with_label_values(&["failed"]).inc();
                shared.store_ok.store(false, Ordering::Relaxed);
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, events = events.len(), retry_in_ms = wait.as_millis() as u64,
                    "the status store is unavailable; holding the batch");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// What follows a commit: the metrics, and the live stream's update.
async fn stored_now(shared: &Shared, events: &[Received], stored: crate::store::Stored) {
    let now_us = now_us();
    for r in events {
        shared.metrics.lag_seconds.observe((now_us - r.event.at_us).max(0) as f64 / 1e6);
    }
    shared.metrics.events.with_label_values(&["stored"]).inc_by(stored.new);
    shared.metrics.events.with_label_values(&["duplicate"]).inc_by(stored.duplicate);
    if shared.updates.receiver_count() > 0 {
        match shared.store.jobs(&crate::store::job_ids(events)).await {
            Ok(jobs) => {
                let _ = shared.updates.send(Arc::new(jobs));
            }
            Err(e) => tracing::warn!(error = %e, "could not read back updated jobs for the live stream"),
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
