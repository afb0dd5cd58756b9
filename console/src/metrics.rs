//! The console's own metrics (`docs/operations.md` lists them; the Grafana dashboard charts them).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Registry};
use warren_infra::metrics as m;

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Events read, by outcome: stored, duplicate (held already), malformed (their message dead-lettered).
    pub events: IntCounterVec,
    /// Transactions, by outcome: committed, failed (held and tried again).
    pub batches: IntCounterVec,
    /// How long a batch's transaction took.
    pub commit_seconds: Histogram,
    /// From an event's step to the moment it could be queried.
    pub lag_seconds: Histogram,
    /// Event messages waiting in the console's queue.
    pub backlog: IntGauge,
    /// Jobs and events held, and the bytes they take.
    pub jobs: IntGauge,
    pub stored_events: IntGauge,
    pub store_bytes: IntGauge,
    /// Jobs deleted by retention.
    pub expired: IntCounter,
    /// Replay actions, by outcome: done, refused (no or a wrong token), failed.
    pub replays: IntCounterVec,
    /// 1 while the console consumes from the broker.
    pub connected: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("registered once");
            h
        };
        let fine = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        Self {
            events: m::counter_vec(
                registry,
                "warren_console_events_total",
                "Lifecycle events read, by outcome.",
                &["outcome"],
            ),
            batches: m::counter_vec(
                registry,
                "warren_console_batches_total",
                "Store transactions, by outcome.",
                &["outcome"],
            ),
            commit_seconds: histogram(
                "warren_console_commit_seconds",
                "Duration of one batch's transaction.",
                fine.clone(),
            ),
            lag_seconds: histogram(
                "warren_console_event_lag_seconds",
                "From a job's step to its event being queryable in the console.",
                fine,
            ),
            backlog: m::int_gauge(
                registry,
                "warren_console_backlog_messages",
                "Event messages waiting in the console's queue.",
            ),
            jobs: m::int_gauge(registry, "warren_console_jobs", "Jobs held in the status store."),
            stored_events: m::int_gauge(registry, "warren_console_stored_events", "Events held in the status store."),
            store_bytes: m::int_gauge(registry, "warren_console_store_bytes", "Bytes the status store takes on disk."),
            expired: m::counter(registry, "warren_console_expired_jobs_total", "Jobs deleted by retention."),
            replays: m::counter_vec(
                registry,
                "warren_console_replays_total",
                "Replay actions, by outcome.",
                &["outcome"],
            ),
            connected: m::int_gauge(registry, "warren_console_connected", "1 while the console consumes events."),
        }
    }
}
