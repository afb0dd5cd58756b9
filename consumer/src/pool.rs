//! The bounded blocking pool. CPU and ML work runs on tokio's blocking threads, but never more
//! than `size` jobs at once: a job first takes a semaphore permit, and the permit moves into
//! the blocking closure, so it is released exactly when the work ends (even by a panic).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tracing::Span;
use warren_common::{JobError, Timing};

const RUNNING: u8 = 0;
const GIVEN_UP: u8 = 1;
const FINISHED: u8 = 2;

#[derive(Debug, Clone)]
pub struct WorkerPool {
    permits: Arc<Semaphore>,
    size: usize,
    abandoned: Arc<AtomicUsize>,
    running: Option<prometheus::IntGauge>,
}

impl WorkerPool {
    /// A pool of `size` slots; 0 means one per available core.
    pub fn new(size: usize) -> Self {
        let size = if size == 0 { std::thread::available_parallelism().map(usize::from).unwrap_or(1) } else { size };
        Self { permits: Arc::new(Semaphore::new(size)), size, abandoned: Arc::default(), running: None }
    }

    /// Keeps `gauge` equal to the jobs holding a slot.
    pub fn with_gauge(mut self, gauge: prometheus::IntGauge) -> Self {
        self.running = Some(gauge);
        self
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs running right now.
    pub fn in_flight(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Threads still running jobs whose time limit passed: their slots were given back, but a
    /// thread cannot be stopped from outside, so each runs on until its job returns.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Runs `work` on a blocking thread once a slot is free, in the caller's tracing span, for at
    /// most `limit`. A panic inside `work` becomes a permanent [`JobError::Panicked`]; passing the
    /// limit becomes [`JobError::TimedOut`] (transient when `retry_timeouts`) and frees the slot
    /// at once, leaving the thread to finish on its own.
    pub async fn run<T, F>(&self, limit: Duration, retry_timeouts: bool, work: F) -> (Result<T, JobError>, Timing)
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, JobError> + Send + 'static,
    {
        // The semaphore is owned by the pool and never closed, so acquiring cannot fail.
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return (Err(JobError::ModelUnavailable("worker pool closed".into())), Timing::default());
        };
        let _running = self.running.as_ref().map(GaugeGuard::new);
        let span = Span::current();
        // RUNNING -> GIVEN_UP (the limit passed first) or RUNNING -> FINISHED; whoever moves
        // second knows the other's move happened, so the abandoned count is exact.
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (job_state, abandoned) = (state.clone(), self.abandoned.clone());
        let started_at_us = now_us();
        let handle = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let started_at_us = now_us();
            // The job owns its inputs and shares nothing mutable with us, so observing it
            // after a panic is sound.
            let result = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|payload| Err(JobError::Panicked(panic_message(payload.as_ref()))));
            if job_state.swap(FINISHED, Ordering::AcqRel) == GIVEN_UP {
                abandoned.fetch_sub(1, Ordering::AcqRel);
            }
            (result, Timing { started_at_us, finished_at_us: now_us() })
        });
        match tokio::time::timeout(limit, handle).await {
            Ok(Ok(done)) => done,
            // Only reachable if the runtime shuts down under us.
            Ok(Err(e)) => (Err(JobError::Panicked(format!("worker thread lost: {e}"))), Timing::default()),
            Err(_) => {
                // Count first, so the thread can never subtract before we added.
                self.abandoned.fetch_add(1, Ordering::AcqRel);
                if state.compare_exchange(RUNNING, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // It finished just now, after the limit: not abandoned after all.
                    self.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
                tracing::warn!(?limit, "job passed its time limit; its slot is freed and its thread abandoned");
                (
                    Err(JobError::TimedOut { limit, retry: retry_timeouts }),
                    Timing { started_at_us, finished_at_us: now_us() },
                )
            }
        }
    }
}

/// Holds a gauge one higher for as long as it lives.
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_size_at_once() {
        let pool = WorkerPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(LONG, true, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.expect("task").0.expect("job");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_is_a_permanent_error_and_frees_the_slot() {
        let pool = WorkerPool::new(1);
        let (r, _) = pool.run(LONG, true, || -> Result<(), JobError> { panic!("boom") }).await;
        let err = r.unwrap_err();
        assert_eq!(err.error_type(), "panic");
        assert!(err.to_string().contains("boom"));
        assert_eq!(pool.in_flight(), 0);
        let (r, _) = pool.run(LONG, true, || Ok(7)).await;
        assert_eq!(r.expect("second job runs"), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_past_its_limit_frees_its_slot() {
        let pool = WorkerPool::new(1);
        let slow = || {
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        };
        let (r, _) = pool.run(Duration::from_millis(50), false, slow).await;
        let err = r.unwrap_err();
        assert_eq!(err.error_type(), "timeout");
        assert_eq!(err.class(), warren_common::ErrorClass::Permanent);
        assert_eq!((pool.in_flight(), pool.abandoned()), (0, 1));
        // The slot is free while the abandoned thread still sleeps.
        let (r, _) = pool.run(LONG, true, || Ok(1)).await;
        assert_eq!(r.expect("runs in the freed slot"), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.abandoned() > 0 {
            assert!(std::time::Instant::now() < deadline, "the abandoned job never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
