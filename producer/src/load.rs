//! The load generator: publish `count` jobs at up to `rate` per second with at most
//! `concurrency` outstanding, optionally awaiting each result, and report throughput and latency
//! percentiles. The figures it prints are what `docs/benchmarks.md` quotes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use warren_common::{Job, ResultStatus};

use crate::client::{Producer, PublishOptions};

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub count: u64,
    /// Jobs per second; 0 = as fast as confirms allow.
    pub rate: f64,
    pub concurrency: usize,
    pub wait: bool,
    pub result_timeout: Duration,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub published: u64,
    pub ok: u64,
    pub failed: u64,
    pub publish_errors: u64,
    pub timeouts: u64,
    pub elapsed: Duration,
    pub confirm_us: Option<Histogram<u64>>,
    pub end_to_end_us: Option<Histogram<u64>>,
}

impl LoadReport {
    /// Completed jobs (results when waiting, confirmed publishes otherwise) per second.
    pub fn rate(&self) -> f64 {
        let done = if self.end_to_end_us.as_ref().is_some_and(|h| !h.is_empty()) { self.ok } else { self.published };
        done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// End-to-end latency quantile in milliseconds, when results were awaited.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        self.end_to_end_us.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "published {} in {:.2}s ({:.1} jobs/s); ok {} failed {} publish errors {} timeouts {}",
            self.published,
            secs,
            self.published as f64 / secs,
            self.ok,
            self.failed,
            self.publish_errors,
            self.timeouts
        );
        for (name, h) in [("confirm", &self.confirm_us), ("end-to-end", &self.end_to_end_us)] {
            if let Some(h) = h.as_ref().filter(|h| !h.is_empty()) {
                println!(
                    "{name} latency ms: p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
                    h.value_at_quantile(0.50) as f64 / 1000.0,
                    h.value_at_quantile(0.95) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.max() as f64 / 1000.0
                );
            }
        }
    }
}

pub async fn run(producer: &Producer, job: Job, opts: PublishOptions, plan: &LoadPlan) -> LoadReport {
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    let state = Arc::new(Mutex::new(LoadReport { confirm_us: hist(), end_to_end_us: hist(), ..Default::default() }));
    let start = Instant::now();
    let interval = (plan.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate));
    let opts = PublishOptions { want_result: plan.wait, ..opts };
    futures_util::stream::iter(0..plan.count)
        .map(|i| {
            let (job, opts, state) = (&job, opts.clone(), state.clone());
            async move {
                if let Some(step) = interval {
                    // Open-loop pacing: job i is due at start + i x step, however late others are.
                    tokio::time::sleep_until((start + step.mul_f64(i as f64)).into()).await;
                }
                let t0 = Instant::now();
                let ticket = producer.publish(job, &opts).await;
                let confirm = t0.elapsed();
                let mut s = state.lock().await;
                let ticket = match ticket {
                    Ok(t) => t,
                    Err(e) => {
                        s.publish_errors += 1;
                        tracing::warn!(error = %e, "publish failed");
                        return;
                    }
                };
                s.published += 1;
                record(&mut s.confirm_us, confirm);
                drop(s);
                if plan.wait {
                    let outcome = ticket.wait(plan.result_timeout).await;
                    let mut s = state.lock().await;
                    match outcome {
                        Ok(r) if r.status == ResultStatus::Ok => s.ok += 1,
                        Ok(_) => s.failed += 1,
                        Err(_) => s.timeouts += 1,
                    }
                    record(&mut s.end_to_end_us, t0.elapsed());
                }
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect::<()>()
        .await;
    let mut report = std::mem::take(&mut *state.lock().await);
    report.elapsed = start.elapsed();
    report
}

fn record(h: &mut Option<Histogram<u64>>, d: Duration) {
    if let Some(h) = h {
        let _ = h.record((d.as_micros() as u64).max(1));
    }
}
