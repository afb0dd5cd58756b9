//! Lifecycle events: one JSON message per step of a job (`docs/contract.md`, "Lifecycle
//! events"), published to the events exchange with routing key `<kind>.<event>`, for status
//! stores and other tools.
//!
//! Off the delivery path: the handler only queues an event (bounded by
//! `consumer.events_buffer`; a full queue drops it, counted in
//! `warren_events_total{outcome="dropped"}`), and a task of the session publishes them on a
//! publisher of its own, with confirms, [`PUBLISHING`] messages at a time. Each message holds
//! the events queued within [`LINGER`] of the first that share a routing key (a JSON array, up
//! to [`MAX_BATCH`]), so that under load the broker routes one message for many events rather
//! than one each; the task sleeps through the linger rather than wake for each event. Event
//! messages are transient unless `consumer.events_persistent`: stored persistent in a classic
//! queue nobody reads (a console that is down), they cost the trivial fleet 2-8 % of its rate,
//! transient ones nothing beyond the noise (docs/benchmarks.md, "Lifecycle events"; a quorum
//! queue stores both alike). Nothing about a job's settle
//! waits for its events, and an event is published after the step it reports is settled with
//! the broker, never before.

use std::sync::Arc;
use std::time::Duration;

use lapin::{BasicProperties, Connection};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use warren_common::JobError;
use warren_infra::{Publisher, Settings};

use crate::metrics::Metrics;

/// Event messages in flight at once from a session's event task: few, so that events queued
/// while they are confirmed go together in the next messages.
pub const PUBLISHING: usize = 4;

/// Most events taken from the buffer at once (then split by routing key).
pub const MAX_BATCH: usize = 512;

/// How long a batch waits for more events once its first came: under load, the events of many
/// jobs go in a few messages rather than a few events in each of many (the broker's work is per
/// message); an event is that much later, no job waits for it.
pub const LINGER: Duration = Duration::from_millis(20);

/// One step of one job. Fields that do not apply to a step are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The format's version: 1.
    pub version: u32,
    /// received, started, succeeded, retried, dead_lettered, returned, handed_back.
    pub event: &'static str,
    pub job_id: String,
    /// A kind the worker runs, or "unknown" (a job it could not read or does not know).
    pub kind: &'static str,
    /// The queue the job was taken from.
    pub queue: String,
    pub worker_id: String,
    /// The job's attempt (from 0) when the step happened.
    pub attempt: u32,
    /// When the step happened, in microseconds since the Unix epoch.
    pub at_us: u64,
    /// The W3C trace id the producer started, when it sent one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// succeeded: how long the job ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// succeeded: the size of the result message's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// retried: the delay before the next attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// retried, dead_lettered: what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// dead_lettered: `warren-dead-reason`; handed_back: draining, refused or unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// returned: how many times the job has come back unanswered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returns: Option<u32>,
    /// progress: how far the job is, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// progress: the kind's short text (at most 200 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An error as an event carries it: as a result does.
#[derive(Debug, Clone, Serialize)]
pub struct EventError {
    pub class: &'static str,
    #[serde(rename = "type")]
    pub error_type: &'static str,
    pub message: String,
}

impl From<&JobError> for EventError {
    fn from(e: &JobError) -> Self {
        Self { class: e.class().as_str(), error_type: e.error_type(), message: e.bounded_message() }
    }
}

impl Event {
    /// The step `event` of a job, with every optional field left out.
    pub fn new(event: &'static str, job_id: &str, kind: &'static str, queue: &str, worker_id: &str) -> Self {
        Self {
            version: 1,
            event,
            job_id: job_id.to_owned(),
            kind,
            queue: queue.to_owned(),
            worker_id: worker_id.to_owned(),
            attempt: 0,
            at_us: crate::pool::now_us(),
            trace_id: String::new(),
            run_ms: None,
            output_bytes: None,
            delay_ms: None,
            error: None,
            reason: None,
            returns: None,
            fraction: None,
            text: None,
        }
    }

    /// Its routing key: `<kind>.<event>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.kind, self.event)
    }
}

/// Where a session's handlers queue their events.
#[derive(Debug)]
pub struct Events {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Arc<Metrics>,
    /// Tells the event task to publish what it holds and end ([`Events::flush`]).
    finish: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Events {
    /// No events (no events exchange, or a buffer of 0).
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self::queueing(None, metrics)
    }

    fn queueing(tx: Option<mpsc::Sender<Event>>, metrics: Arc<Metrics>) -> Self {
        Self { tx, metrics, finish: CancellationToken::new(), task: std::sync::Mutex::new(None) }
    }

    /// Publishes every event queued so far (no lingering) and waits for their confirms, at most
    /// `bound`: a draining worker calls it after its last job settled and before it closes its
    /// connection, which would lose them.
    pub async fn flush(&self, bound: Duration) {
        self.finish.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && tokio::time::timeout(bound, task).await.is_err()
        {
            tracing::warn!(?bound, "lifecycle events still unconfirmed at the end of the drain");
        }
    }

    /// Starts the session's event task on `connection`; it ends when `lost` is cancelled or
    /// every sender is gone.
    pub fn start(
        connection: Arc<Connection>,
        settings: &Settings,
        metrics: Arc<Metrics>,
        lost: CancellationToken,
    ) -> Self {
        let exchange = settings.topology.events_exchange.clone();
        let buffer = settings.consumer.events_buffer;
        if exchange.is_empty() || buffer == 0 {
            return Self::off(metrics);
        }
        let (tx, rx) = mpsc::channel(buffer);
        let confirm_timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let finish = CancellationToken::new();
        let persistent = settings.consumer.events_persistent;
        let to = To { exchange, persistent, confirm_timeout, lost, finish: finish.clone() };
        let task = tokio::spawn(publish_all(connection, to, rx, metrics.clone()));
        Self { tx: Some(tx), metrics, finish, task: std::sync::Mutex::new(Some(task)) }
    }

    /// Queues the event `make` builds for publishing, or drops it (counted) when the queue is
    /// full or closed. Never waits; builds nothing while events are off.
    pub fn emit(&self, make: impl FnOnce() -> Event) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(make()).is_err() {
            self.metrics.event("dropped");
        }
    }
}

/// Progress reports of one job, at most: the first always, then one per this (5 a second).
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Events {
    /// Where a job's [`warren_common::Context::progress`] reports go: `progress` events made
    /// from `template` (the job's), the first report at once and then at most one per
    /// [`PROGRESS_EVERY`] (the others are skipped, not counted as dropped), texts cut to 200
    /// characters. Nothing while events are off.
    /// Reports stop once the returned [`ProgressEnd`] is ended (the job's run is over: a job
    /// given up at its time limit may still be running on its thread, and its reports would
    /// come after its last step), and while the buffer is more than half full (progress gives
    /// way to the steps).
    pub fn reporter(&self, template: impl FnOnce() -> Event) -> (warren_common::Progress, ProgressEnd) {
        let ended = ProgressEnd::default();
        let Some(tx) = self.tx.clone() else { return (warren_common::Progress::default(), ended) };
        let (template, metrics, over) = (template(), self.metrics.clone(), ended.0.clone());
        let last = std::sync::Mutex::new(None::<std::time::Instant>);
        let progress = warren_common::Progress::to(move |fraction, text| {
            // Timed before the check: a report let through is older than the step that ends it.
            let at_us = crate::pool::now_us();
            if over.load(std::sync::atomic::Ordering::Acquire) || tx.capacity() < tx.max_capacity() / 2 {
                return;
            }
            let now = std::time::Instant::now();
            {
                let Ok(mut last) = last.lock() else { return };
                if last.is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY) {
                    return;
                }
                *last = Some(now);
            }
            let mut e = template.clone();
            e.at_us = at_us;
            e.fraction = Some(fraction);
            e.text = Some(text.chars().take(200).collect());
            if tx.try_send(e).is_err() {
                metrics.event("dropped");
            }
        });
        (progress, ended)
    }
}

/// Ends a job's progress reports ([`Events::reporter`]).
#[derive(Debug, Default, Clone)]
pub struct ProgressEnd(Arc<std::sync::atomic::AtomicBool>);

impl ProgressEnd {
    pub fn end(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Where and how event messages go, and what ends the event task: the session lost (what it
/// holds is lost with the connection), or the drain's flush (it publishes what it holds, then
/// ends).
struct To {
    exchange: String,
    persistent: bool,
    confirm_timeout: Duration,
    lost: CancellationToken,
    finish: CancellationToken,
}

async fn publish_all(connection: Arc<Connection>, to: To, mut rx: mpsc::Receiver<Event>, metrics: Arc<Metrics>) {
    let To { exchange, persistent, confirm_timeout, lost, finish } = to;
    let publisher = match Publisher::open_with_lanes(connection, confirm_timeout, PUBLISHING, 1).await {
        Ok(p) => p,
        Err(e) => {
            // Closing the receiver makes every later event count as dropped.
            tracing::warn!(error = %e, "could not open a channel for lifecycle events; they are dropped");
            return;
        }
    };
    let (slots, exchange) = (Arc::new(Semaphore::new(PUBLISHING)), Arc::new(exchange));
    loop {
        // Waits for a free message slot first: what is queued meanwhile goes in one batch.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let first = tokio::select! {
            biased;
            () = lost.cancelled() => return,
            event = rx.recv() => match event { Some(e) => e, None => return },
            () = finish.cancelled() => match rx.try_recv() {
                Ok(e) => e,
                // All published: wait for the confirms of those still in flight, then end.
                Err(_) => {
                    drop(permit);
                    let _ = slots.acquire_many(PUBLISHING as u32).await;
                    return;
                }
            },
        };
        // What is already queued goes at once; a batch not full by then waits out the linger
        // asleep and takes what came meanwhile: two wake-ups a batch, not one an event.
        let mut batch = vec![first];
        take_queued(&mut rx, &mut batch);
        if batch.len() < MAX_BATCH && !finish.is_cancelled() {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = finish.cancelled() => {}
            }
            take_queued(&mut rx, &mut batch);
        }
        let mut by_key: Vec<(String, Vec<Event>)> = Vec::new();
        for event in batch {
            let key = event.routing_key();
            match by_key.iter_mut().find(|(k, _)| *k == key) {
                Some((_, events)) => events.push(event),
                None => by_key.push((key, vec![event])),
            }
        }
        let (publisher, exchange, metrics) = (publisher.clone(), exchange.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            for (key, events) in by_key {
                let outcome = match serde_json::to_vec(&events) {
                    Ok(body) => {
                        let properties = properties(events[0].at_us, persistent);
                        let published = publisher.publish(&exchange, &key, &body, properties, false).await;
                        if published.is_ok() { "published" } else { "not_stored" }
                    }
                    Err(_) => "not_stored",
                };
                metrics.events_ended(outcome, events.len());
            }
        });
    }
}

/// Moves the events queued now into `batch`, up to [`MAX_BATCH`] in all.
fn take_queued(rx: &mut mpsc::Receiver<Event>, batch: &mut Vec<Event>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(_) => break,
        }
    }
}

/// An event message's properties (`docs/contract.md`): JSON, type `warren.events`, stamped with
/// its first event's second, persistent or transient as `consumer.events_persistent` says.
pub fn properties(first_at_us: u64, persistent: bool) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_type("warren.events".into())
        .with_timestamp(first_at_us / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_leaves_out_what_does_not_apply_and_is_routed_by_kind_and_step() {
        let mut e = Event::new("retried", "j1", "checksum", "warren.checksum", "w1");
        e.attempt = 1;
        e.delay_ms = Some(200);
        e.error = Some((&JobError::Injected("boom".into())).into());
        let json: serde_json::Value = serde_json::to_value(&e).expect("json");
        assert_eq!(e.routing_key(), "checksum.retried");
        assert_eq!(json["event"], "retried");
        assert_eq!(json["attempt"], 1);
        assert_eq!(json["delay_ms"], 200);
        assert_eq!(json["error"]["type"], "injected_fault");
        assert_eq!(json["error"]["class"], "transient");
        for absent in ["run_ms", "output_bytes", "reason", "returns", "trace_id"] {
            assert!(json.get(absent).is_none(), "{absent} left out");
        }
    }

    #[tokio::test]
    async fn progress_reports_are_events_a_few_a_second_with_short_texts() {
        let metrics = Arc::new(Metrics::new());
        let (tx, mut rx) = mpsc::channel(16);
        let events = Events::queueing(Some(tx), metrics.clone());
        let (reporter, end) = events.reporter(|| Event::new("progress", "j", "checksum", "q", "w"));
        let cx = warren_common::Context::new(0, std::time::Instant::now(), Arc::default()).with_progress(reporter);
        cx.progress(0.25, &"x".repeat(500));
        cx.progress(0.5, "skipped: too soon");
        let first = rx.try_recv().expect("the first report is an event");
        assert_eq!((first.event, first.fraction), ("progress", Some(0.25)));
        assert_eq!(first.text.as_deref().map(str::len), Some(200));
        assert!(rx.try_recv().is_err(), "a report within {PROGRESS_EVERY:?} is skipped");
        std::thread::sleep(PROGRESS_EVERY);
        cx.progress(7.0, "past the end");
        assert_eq!(rx.try_recv().expect("a later report").fraction, Some(1.0), "clamped");
        // The run is over (a job given up at its time limit runs on): no more reports.
        end.end();
        std::thread::sleep(PROGRESS_EVERY);
        cx.progress(0.9, "after the end");
        assert!(rx.try_recv().is_err(), "no report after the end");
        assert_eq!(metrics.events("dropped"), 0);
        let off = Events::off(metrics);
        assert!(format!("{:?}", off.reporter(|| unreachable!("built while off")).0).contains("none"));
    }

    #[test]
    fn event_messages_are_transient_unless_configured_persistent() {
        let at_us = 1_796_550_000_123_456;
        let transient = properties(at_us, false);
        assert_eq!(*transient.delivery_mode(), Some(1));
        assert_eq!(*properties(at_us, true).delivery_mode(), Some(2));
        assert_eq!(transient.kind().as_ref().map(|t| t.as_str()), Some("warren.events"));
        assert_eq!(transient.content_type().as_ref().map(|t| t.as_str()), Some("application/json"));
        assert_eq!(*transient.timestamp(), Some(1_796_550_000));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_event_and_counts_it_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let (tx, _rx) = mpsc::channel(1);
        let events = Events::queueing(Some(tx), metrics.clone());
        events.emit(|| Event::new("received", "a", "checksum", "q", "w"));
        events.emit(|| Event::new("received", "b", "checksum", "q", "w"));
        assert_eq!(metrics.events("dropped"), 1);
        let closed = Events::queueing(Some(mpsc::channel(1).0), metrics.clone());
        closed.emit(|| Event::new("received", "c", "checksum", "q", "w"));
        assert_eq!(metrics.events("dropped"), 2, "a closed queue drops too");
    }
}
