//! The bounded blocking pool. CPU and ML work runs on tokio's blocking threads, but never more
//! than `size` jobs at once: a job first takes a semaphore permit, and the permit moves into
//! the blocking closure, so it is released exactly when the work ends (even by a panic).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tracing::Span;
use warren_common::{JobError, Timing};

#[derive(Debug, Clone)]
pub struct WorkerPool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl WorkerPool {
    /// A pool of `size` slots; 0 means one per available core.
    pub fn new(size: usize) -> Self {
        let size = if size == 0 {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        } else {
            size
        };
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs running right now.
    pub fn in_flight(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Runs `work` on a blocking thread once a slot is free, in the caller's tracing span.
    /// A panic inside `work` becomes a permanent [`JobError::Panicked`].
    pub async fn run<T, F>(&self, work: F) -> (Result<T, JobError>, Timing)
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, JobError> + Send + 'static,
    {
        // The semaphore is owned by the pool and never closed, so acquiring cannot fail.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                return (
                    Err(JobError::ModelUnavailable("worker pool closed".into())),
                    Timing::default(),
                );
            }
        };
        let span = Span::current();
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _entered = span.enter();
            let started_at_us = now_us();
            // The job owns its inputs and shares nothing mutable with us, so observing it
            // after a panic is sound.
            let result = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|payload| Err(JobError::Panicked(panic_message(payload.as_ref()))));
            (
                result,
                Timing {
                    started_at_us,
                    finished_at_us: now_us(),
                },
            )
        });
        match handle.await {
            Ok(done) => done,
            // Only reachable if the runtime shuts down under us.
            Err(e) => (
                Err(JobError::Panicked(format!("worker thread lost: {e}"))),
                Timing::default(),
            ),
        }
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_size_at_once() {
        let pool = WorkerPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
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
        let (r, _) = pool
            .run(|| -> Result<(), JobError> { panic!("boom") })
            .await;
        let err = r.unwrap_err();
        assert_eq!(err.error_type(), "panic");
        assert!(err.to_string().contains("boom"));
        assert_eq!(pool.in_flight(), 0);
        let (r, _) = pool.run(|| Ok(7)).await;
        assert_eq!(r.expect("second job runs"), 7);
    }
}
