//! The bounded blocking pool. CPU and ML work runs on tokio's blocking threads, but never more
//! than `size` jobs at once within their time limits: a job first takes a slot (a semaphore
//! permit), and gives it back when its work ends, by a panic too. A job past its time limit gives
//! its slot back at once, but its thread cannot be stopped from outside and runs on until the
//! work returns: such threads are counted ([`WorkerPool::abandoned`]), and the worker stops for
//! good once there are as many as slots (`decide::worn_out`). Until it has stopped, a job past
//! its limit while the pool already has `size` abandoned threads keeps its slot until its thread
//! ends, so at most twice `size` threads ever run jobs, during the worn-out grace too. A job waits for its slot behind a gate: when the gate closes first (its session
//! was lost, or the worker is draining) the job never starts.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Span;
use warren_common::{JobError, Timing};

const RUNNING: u8 = 0;
const GIVEN_UP: u8 = 1;
const FINISHED: u8 = 2;
/// Past its limit with no room for another abandoned thread: it keeps its slot until it ends.
const HELD: u8 = 3;

#[derive(Debug, Clone)]
pub struct WorkerPool {
    permits: Arc<Semaphore>,
    size: usize,
    abandoned: Arc<AtomicUsize>,
    running: Option<prometheus::IntGauge>,
}

/// How a job submitted to the pool ended.
#[derive(Debug)]
pub enum Ran<T> {
    /// Its gate closed before it got a slot: it never started.
    NotStarted,
    Done(Result<T, JobError>, Timing),
    /// What ran it died under it (a Python kind's child process): a death, counted as a
    /// return toward `consumer.max_redeliveries`, as if the worker had died.
    Died(Timing),
}

/// A slot taken, for one job.
#[derive(Debug)]
pub struct Slot {
    permit: OwnedSemaphorePermit,
    pool: WorkerPool,
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

    /// Waits for a free slot; `None` when `gate` is (or gets) cancelled first.
    pub async fn slot(&self, gate: &CancellationToken) -> Option<Slot> {
        let permit = tokio::select! {
            biased;
            () = gate.cancelled() => return None,
            // The semaphore is owned by the pool and never closed, so acquiring cannot fail.
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        Some(Slot { permit, pool: self.clone() })
    }

    /// Runs `work` once a slot is free, unless `gate` closes first: see [`Slot::run`].
    pub async fn run<T, F>(&self, limit: Duration, retry_timeouts: bool, gate: &CancellationToken, work: F) -> Ran<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, JobError> + Send + 'static,
    {
        match self.slot(gate).await {
            None => Ran::NotStarted,
            Some(slot) => {
                let (result, timing) = slot.run(limit, retry_timeouts, work).await;
                Ran::Done(result, timing)
            }
        }
    }
}

impl Slot {
    /// Runs `work` on a blocking thread in the caller's tracing span, for at most `limit`. A
    /// panic inside `work` becomes a permanent [`JobError::Panicked`]; passing the limit becomes
    /// [`JobError::TimedOut`] (transient when `retry_timeouts`) and frees the slot at once,
    /// leaving the thread to finish on its own, counted as abandoned; but when the pool already
    /// has `size` abandoned threads the slot stays taken until the thread ends.
    pub async fn run<T, F>(self, limit: Duration, retry_timeouts: bool, work: F) -> (Result<T, JobError>, Timing)
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, JobError> + Send + 'static,
    {
        let Slot { permit, pool } = self;
        // The slot (and the in-flight gauge) as long as the job holds it: given back by the
        // thread when it ends, or by us at the limit.
        let claim = Arc::new(Mutex::new(Some((permit, pool.running.clone().map(GaugeGuard::new)))));
        let span = Span::current();
        // RUNNING -> GIVEN_UP or HELD (the limit passed first) or RUNNING -> FINISHED; whoever
        // moves second knows the other's move happened, so the abandoned count is exact.
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (job_state, abandoned, job_claim) = (state.clone(), pool.abandoned.clone(), claim.clone());
        let started_at_us = now_us();
        let handle = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let started_at_us = now_us();
            // The job owns its inputs and shares nothing mutable with us, so observing it
            // after a panic is sound.
            let result = catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|payload| Err(JobError::Panicked(panic_message(payload.as_ref()))));
            // The end is taken before the slot is given back: a job that takes the slot next
            // starts after it.
            let timing = Timing { started_at_us, finished_at_us: now_us() };
            drop(lock(&job_claim).take());
            if job_state.swap(FINISHED, Ordering::AcqRel) == GIVEN_UP {
                abandoned.fetch_sub(1, Ordering::AcqRel);
            }
            (result, timing)
        });
        match tokio::time::timeout(limit, handle).await {
            Ok(Ok(done)) => done,
            // Only reachable if the runtime shuts down under us.
            Ok(Err(e)) => (Err(JobError::Panicked(format!("worker thread lost: {e}"))), Timing::default()),
            Err(_) => {
                // Count first, so the thread can never subtract before we added; the count
                // taken decides whether there is room for one more abandoned thread.
                let room = pool.abandoned.fetch_add(1, Ordering::AcqRel) < pool.size;
                let next = if room { GIVEN_UP } else { HELD };
                let moved = state.compare_exchange(RUNNING, next, Ordering::AcqRel, Ordering::Acquire).is_ok();
                if !room || !moved {
                    // No room (it keeps its slot), or it finished just now, after the limit.
                    pool.abandoned.fetch_sub(1, Ordering::AcqRel);
                }
                if moved && room {
                    drop(lock(&claim).take());
                    tracing::warn!(?limit, "job passed its time limit; its slot is freed and its thread abandoned");
                } else if moved {
                    tracing::warn!(
                        ?limit,
                        abandoned = pool.size,
                        "job passed its time limit with the pool worn out; its slot stays taken until its thread ends"
                    );
                }
                (
                    Err(JobError::TimedOut { limit, retry: retry_timeouts }),
                    Timing { started_at_us, finished_at_us: now_us() },
                )
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds a gauge one higher for as long as it lives.
struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn new(g: prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
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

    fn open() -> CancellationToken {
        CancellationToken::new()
    }

    fn done<T>(ran: Ran<T>) -> (Result<T, JobError>, Timing) {
        match ran {
            Ran::Done(r, t) => (r, t),
            Ran::NotStarted | Ran::Died(_) => panic!("the job did not start, or did not end"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_gate_closes_while_it_waits_never_starts() {
        let pool = WorkerPool::new(1);
        let gate = CancellationToken::new();
        let started = Arc::new(AtomicUsize::new(0));
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(LONG, true, &open(), || {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
                .await
            })
        };
        while pool.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let waiting = {
            let (pool, gate, started) = (pool.clone(), gate.clone(), started.clone());
            tokio::spawn(async move {
                pool.run(LONG, true, &gate, move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        };
        gate.cancel();
        assert!(matches!(waiting.await.expect("task"), Ran::NotStarted));
        done(busy.await.expect("task")).0.expect("the running job ends normally");
        assert_eq!(started.load(Ordering::SeqCst), 0);
        // A closed gate stops a job even when a slot is free.
        assert!(matches!(pool.run(LONG, true, &gate, || Ok(())).await, Ran::NotStarted));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_size_at_once() {
        let pool = WorkerPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(LONG, true, &open(), move || {
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
            done(t.await.expect("task")).0.expect("job");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_is_a_permanent_error_and_frees_the_slot() {
        let pool = WorkerPool::new(1);
        let (r, _) = done(pool.run(LONG, true, &open(), || -> Result<(), JobError> { panic!("boom") }).await);
        let err = r.unwrap_err();
        assert_eq!(err.error_type(), "panic");
        assert!(err.to_string().contains("boom"));
        assert_eq!(pool.in_flight(), 0);
        let (r, _) = done(pool.run(LONG, true, &open(), || Ok(7)).await);
        assert_eq!(r.expect("second job runs"), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_past_its_limit_frees_its_slot() {
        let pool = WorkerPool::new(1);
        let slow = || {
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        };
        let (r, _) = done(pool.run(Duration::from_millis(50), false, &open(), slow).await);
        let err = r.unwrap_err();
        assert_eq!(err.error_type(), "timeout");
        assert_eq!(err.class(), warren_common::ErrorClass::Permanent);
        assert_eq!((pool.in_flight(), pool.abandoned()), (0, 1));
        // The slot is free while the abandoned thread still sleeps.
        let (r, _) = done(pool.run(LONG, true, &open(), || Ok(1)).await);
        assert_eq!(r.expect("runs in the freed slot"), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.abandoned() > 0 {
            assert!(std::time::Instant::now() < deadline, "the abandoned job never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn job_threads_never_exceed_twice_the_pool_even_while_it_wears_out() {
        // Every job overruns its limit: each frees its slot while the pool has fewer abandoned
        // threads than slots; past that, an overrunning job keeps its slot until its thread
        // ends, so no more than `2 * size` threads ever run jobs.
        let pool = WorkerPool::new(2);
        let (live, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, live, peak) = (pool.clone(), live.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(Duration::from_millis(30), true, &open(), move || {
                    peak.fetch_max(live.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(400));
                    live.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for t in tasks {
            let (r, _) = done(t.await.expect("task"));
            assert_eq!(r.unwrap_err().error_type(), "timeout", "every job overran its limit");
        }
        println!("8 overrunning jobs on a pool of 2: at most {} job threads at once", peak.load(Ordering::SeqCst));
        assert!(peak.load(Ordering::SeqCst) <= 4, "{} job threads at once on a pool of 2", peak.load(Ordering::SeqCst));
        assert!(pool.abandoned() <= 2, "abandoned count {} past the pool size", pool.abandoned());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.abandoned() > 0 || pool.in_flight() > 0 || live.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "job threads never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
