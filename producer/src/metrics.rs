//! The producer's metrics, defined here only: publishes by kind and outcome, confirm latency,
//! results by status, reconnects and connection state.

use std::time::Duration;

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};
use warren_infra::metrics::{counter, counter_vec, histogram_vec, int_gauge};

#[derive(Debug, Clone)]
pub struct ProducerMetrics {
    pub registry: Registry,
    published: IntCounterVec,
    confirm_seconds: HistogramVec,
    results: IntCounterVec,
    reconnects: IntCounter,
    connected: IntGauge,
}

impl ProducerMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = warren_infra::serve::registry();
        let r = &registry;
        let published = counter_vec(
            r,
            "warren_producer_published_total",
            "Jobs published, by kind and outcome",
            &["kind", "outcome"],
        );
        let confirm_seconds = histogram_vec(
            r,
            "warren_producer_confirm_seconds",
            "From publish to the broker's confirm",
            &["kind"],
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0],
        );
        let results = counter_vec(r, "warren_producer_results_total", "Results received, by status", &["status"]);
        let reconnects = counter(r, "warren_producer_reconnects_total", "Connections re-established");
        let connected = int_gauge(r, "warren_producer_connected", "1 while connected to the broker");
        connected.set(1);
        Self { registry, published, confirm_seconds, results, reconnects, connected }
    }

    pub fn published(&self, kind: &str, outcome: &'static str, took: Duration) {
        // The kinds this producer's own code publishes; a name that could not be a kind is not a label.
        let kind = if warren_common::kind::valid_name(kind) { kind } else { "invalid" };
        self.published.with_label_values(&[kind, outcome]).inc();
        if outcome == "acked" {
            self.confirm_seconds.with_label_values(&[kind]).observe(took.as_secs_f64());
        }
    }

    pub fn result(&self, ok: bool) {
        self.results.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    pub fn connection(&self, up: bool, reconnected: bool) {
        self.connected.set(i64::from(up));
        if reconnected {
            self.reconnects.inc();
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.get() == 1
    }
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
