//! Creating and registering Prometheus metrics in one call, for the metric modules of every
//! binary. Definitions are constants in those modules: a failure here (an invalid name, the
//! same name registered twice) is a programming error found at start-up, hence the `expect`s.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry.register(Box::new(c.clone())).expect("each metric is registered once");
    c
}

pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help).expect("valid metric definition"))
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

pub fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(registry, HistogramVec::new(opts, labels).expect("valid metric definition"))
}

pub fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric definition"))
}

pub fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    registered(registry, Gauge::new(name, help).expect("valid metric definition"))
}
