//! Every metric the consumer exports, defined here and only here, each recorded by one method
//! (an event) called from exactly one place. Names: `warren_` prefix, base units, counters end
//! in `_total`. Labels are low-cardinality: queue and kind come from configuration (a kind named
//! by a message that this worker does not know is reported as "unknown"), outcome and error_type
//! from fixed lists.

use std::time::Duration;

use prometheus::{Gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use warren_infra::metrics::{counter, counter_vec, gauge, histogram_vec, int_gauge, int_gauge_vec};

/// Buckets for times measured from a job's `timestamp` property (whole seconds): 0.5 s to 1 h.
const SINCE_PUBLISHED_SECONDS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Buckets for job durations: 1 ms to ~2 min.
const JOB_SECONDS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    received: IntCounterVec,
    completed: IntCounterVec,
    errors: IntCounterVec,
    run_seconds: HistogramVec,
    queue_wait_seconds: HistogramVec,
    end_to_end_seconds: HistogramVec,
    in_flight: IntGauge,
    pool_capacity: IntGauge,
    prefetch: IntGaugeVec,
    abandoned: IntGauge,
    publishes: IntCounterVec,
    redeliveries: IntCounterVec,
    not_started: IntCounterVec,
    consuming: IntGaugeVec,
    cancellations: IntCounterVec,
    reconnects: IntCounter,
    connected: IntGauge,
    model_load_seconds: Gauge,
    inference_seconds: HistogramVec,
    batch_size: HistogramVec,
    model_ready: IntGaugeVec,
    triton_errors: IntCounterVec,
    topology_missing: IntGauge,
    topology_declared: IntCounterVec,
    events: IntCounterVec,
    /// Job ids cancelled within the retention, as this worker knows them.
    pub cancels_known: IntGauge,
    ref_bytes: IntCounterVec,
    ref_seconds: HistogramVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = warren_infra::serve::registry();
        let r = &registry;
        let q = ["queue", "kind"];
        let model_load_seconds =
            gauge(r, "warren_model_load_seconds", "Time the model took to load (ort) or to be found ready (triton)");
        let m = ["model", "backend"];
        let prefetch =
            int_gauge_vec(r, "warren_prefetch", "Prefetch (unacked deliveries) per queue consumer", &["queue"]);
        let reconnects = counter(r, "warren_reconnects_total", "Broker connections re-established after a loss");
        Self {
            received: counter_vec(r, "warren_jobs_received_total", "Deliveries taken from a work queue", &q),
            completed: counter_vec(
                r,
                "warren_jobs_completed_total",
                "Jobs settled, by outcome",
                &["queue", "kind", "outcome"],
            ),
            errors: counter_vec(
                r,
                "warren_job_errors_total",
                "Job failures, by fixed error type",
                &["queue", "kind", "error_type"],
            ),
            run_seconds: histogram_vec(r, "warren_job_run_seconds", "Time a job ran on the pool", &q, &JOB_SECONDS),
            queue_wait_seconds: histogram_vec(
                r,
                "warren_job_queue_wait_seconds",
                "From the job's timestamp property to the start of its run (1 s resolution)",
                &q,
                &SINCE_PUBLISHED_SECONDS,
            ),
            end_to_end_seconds: histogram_vec(
                r,
                "warren_job_end_to_end_seconds",
                "From the job's timestamp property to its result being confirmed (1 s resolution)",
                &q,
                &SINCE_PUBLISHED_SECONDS,
            ),
            in_flight: int_gauge(r, "warren_jobs_in_flight", "Jobs running on the pool now"),
            pool_capacity: int_gauge(r, "warren_pool_capacity", "Slots of the blocking pool"),
            abandoned: int_gauge(r, "warren_jobs_abandoned", "Threads still running jobs given up at their time limit"),
            publishes: counter_vec(
                r,
                "warren_publishes_total",
                "Publishes by what was published and how the broker answered",
                &["target", "outcome"],
            ),
            redeliveries: counter_vec(r, "warren_redeliveries_total", "Jobs that came back unanswered", &["queue"]),
            not_started: counter_vec(
                r,
                "warren_jobs_not_started_total",
                "Jobs dropped before they started, by reason (session_lost: the broker requeued them; draining: handed back)",
                &["queue", "reason"],
            ),
            consuming: int_gauge_vec(r, "warren_consuming", "1 while the queue's consumer is active", &["queue"]),
            cancellations: counter_vec(
                r,
                "warren_consumer_cancellations_total",
                "Consumers cancelled by the broker (queue deleted, its node down), each then resumed",
                &["queue"],
            ),
            connected: int_gauge(r, "warren_connected", "1 when connected to the broker and consuming"),
            inference_seconds: histogram_vec(
                r,
                "warren_inference_seconds",
                "Time of one model run (triton: the whole gRPC request)",
                &m,
                &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
            ),
            batch_size: histogram_vec(
                r,
                "warren_batch_size",
                "Jobs per run of a batched kind (micro-batching)",
                &["kind", "model", "backend"],
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            model_ready: int_gauge_vec(r, "warren_model_ready", "1 while the model can take inference requests", &m),
            ref_bytes: counter_vec(
                r,
                "warren_ref_bytes_total",
                "Bytes of job references fetched, and of outputs stored under output_to",
                &["kind", "direction"],
            ),
            ref_seconds: histogram_vec(
                r,
                "warren_ref_seconds",
                "Time to fetch a job's references (all of them), or to store its outputs",
                &["kind", "direction"],
                &JOB_SECONDS,
            ),
            cancels_known: int_gauge(
                r,
                "warren_cancels_known",
                "Job ids cancelled within the retention that this worker has read from the cancel stream",
            ),
            events: counter_vec(
                r,
                "warren_events_total",
                "Lifecycle events, by outcome (published: confirmed by the broker; dropped: the \
                 buffer was full, never waiting; not_stored: the broker did not confirm it)",
                &["outcome"],
            ),
            topology_missing: int_gauge(
                r,
                "warren_topology_missing",
                "1 while part of the topology (an exchange) is missing and not yet declared again",
            ),
            topology_declared: counter_vec(
                r,
                "warren_topology_redeclared_total",
                "Topology declared again after a part of it was found missing, by how it was found \
                 (publish: a publish met a deleted exchange; check: the periodic check; unroutable: \
                 a queue missing)",
                &["found_by"],
            ),
            triton_errors: counter_vec(
                r,
                "warren_triton_errors_total",
                "Failed Triton requests, by gRPC status code (deadline_exceeded: cancelled at model.triton_timeout_ms)",
                &["code"],
            ),
            model_load_seconds,
            prefetch,
            reconnects,
            registry,
        }
    }

    pub fn configured(&self, pool: usize, prefetch: &[(String, u16)]) {
        self.pool_capacity.set(pool as i64);
        for outcome in ["published", "dropped", "not_stored"] {
            self.events.with_label_values(&[outcome]).inc_by(0);
        }
        for found_by in ["publish", "check", "unroutable"] {
            self.topology_declared.with_label_values(&[found_by]).inc_by(0);
        }
        for (q, p) in prefetch {
            self.prefetch.with_label_values(&[q.as_str()]).set(i64::from(*p));
        }
    }

    pub fn job_received(&self, queue: &str, kind: &str) {
        self.received.with_label_values(&[queue, kind]).inc();
    }

    pub fn job_ran(&self, queue: &str, kind: &str, queued_for: Option<Duration>, ran_for: Duration, abandoned: usize) {
        if let Some(wait) = queued_for {
            self.queue_wait_seconds.with_label_values(&[queue, kind]).observe(wait.as_secs_f64());
        }
        self.run_seconds.with_label_values(&[queue, kind]).observe(ran_for.as_secs_f64());
        self.abandoned.set(abandoned as i64);
    }

    /// A job's references fetched (`direction` "fetched") or its outputs stored ("stored"):
    /// `bytes` in all, in `took`.
    pub fn ref_transfer(&self, kind: &str, direction: &'static str, bytes: usize, took: Duration) {
        self.ref_bytes.with_label_values(&[kind, direction]).inc_by(bytes as u64);
        self.ref_seconds.with_label_values(&[kind, direction]).observe(took.as_secs_f64());
    }

    pub fn job_failed(&self, queue: &str, kind: &str, error_type: &str) {
        self.errors.with_label_values(&[queue, kind, error_type]).inc();
    }

    /// `outcome`: ok, retried, dead_lettered, requeued, handed_back or abandoned
    /// (`decide::counted_outcome`).
    pub fn job_settled(&self, queue: &str, kind: &str, outcome: &'static str, since_published: Option<Duration>) {
        self.completed.with_label_values(&[queue, kind, outcome]).inc();
        if outcome == "ok"
            && let Some(d) = since_published
        {
            self.end_to_end_seconds.with_label_values(&[queue, kind]).observe(d.as_secs_f64());
        }
    }

    /// `target`: result, error_result, retry, dead_letter, requeue; `outcome`: acked, nacked,
    /// unroutable, timeout, error.
    pub fn published(&self, target: &'static str, outcome: &'static str) {
        self.publishes.with_label_values(&[target, outcome]).inc();
    }

    pub fn redelivered(&self, queue: &str) {
        self.redeliveries.with_label_values(&[queue]).inc();
    }

    pub fn not_started(&self, queue: &str, reason: &'static str) {
        self.not_started.with_label_values(&[queue, reason]).inc();
    }

    pub fn consuming(&self, queue: &str, active: bool) {
        self.consuming.with_label_values(&[queue]).set(i64::from(active));
    }

    /// Whether each of `queues` has an active consumer.
    pub fn consuming_each(&self, queues: &[String]) -> Vec<bool> {
        queues.iter().map(|q| self.consuming.with_label_values(&[q.as_str()]).get() == 1).collect()
    }

    pub fn consumer_cancelled(&self, queue: &str) {
        self.cancellations.with_label_values(&[queue]).inc();
    }

    pub fn abandoned_now(&self, abandoned: usize) {
        self.abandoned.set(abandoned as i64);
    }

    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// A lifecycle event was published, dropped or not stored.
    pub fn event(&self, outcome: &'static str) {
        self.events_ended(outcome, 1);
    }

    /// `n` lifecycle events were published, dropped or not stored.
    pub fn events_ended(&self, outcome: &'static str, n: usize) {
        self.events.with_label_values(&[outcome]).inc_by(n as u64);
    }

    /// Lifecycle events with `outcome` so far.
    pub fn events(&self, outcome: &str) -> u64 {
        self.events.with_label_values(&[outcome]).get()
    }

    /// Part of the topology was found missing.
    pub fn topology_missing(&self) {
        self.topology_missing.set(1);
    }

    /// The topology was declared again after `found_by` found part of it missing.
    pub fn topology_restored(&self, found_by: &'static str) {
        self.topology_missing.set(0);
        self.topology_declared.with_label_values(&[found_by]).inc();
    }

    /// The whole topology was declared (a new session): nothing is missing.
    pub fn topology_whole(&self) {
        self.topology_missing.set(0);
    }

    /// Whether part of the topology is missing now.
    pub fn is_topology_missing(&self) -> bool {
        self.topology_missing.get() != 0
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get() == 1
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.get()
    }

    pub fn model_loaded(&self, took: Duration) {
        self.model_load_seconds.set(took.as_secs_f64());
    }

    /// The histogram an inference adapter observes each run into.
    pub fn inference_histogram(&self, model: &str, backend: &str) -> prometheus::Histogram {
        self.inference_seconds.with_label_values(&[model, backend])
    }

    /// The histogram of batch sizes of `kind` (over `model` on `backend`, "" when it has none).
    pub fn batch_size_histogram(&self, kind: &str, model: &str, backend: &str) -> prometheus::Histogram {
        self.batch_size.with_label_values(&[kind, model, backend])
    }

    /// The gauge kept at 1 while the model is ready, 0 while it is not.
    pub fn model_ready_gauge(&self, model: &str, backend: &str) -> IntGauge {
        self.model_ready.with_label_values(&[model, backend])
    }

    /// The counter of failed Triton requests, by fixed status-code label.
    pub fn triton_errors(&self) -> IntCounterVec {
        self.triton_errors.clone()
    }

    /// The gauge the pool keeps equal to its running jobs.
    pub fn in_flight_gauge(&self) -> IntGauge {
        self.in_flight.clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
