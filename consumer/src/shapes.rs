//! The three shapes of a kind, carried out: blocking work on the bounded pool, batched work
//! through the micro-batcher (or alone on the pool), async work on the runtime under the kind's
//! own concurrency limit. [`Typed`] turns a typed kind and its shape into a [`Runner`]: parsing,
//! validation and getting the input back in its type are written once, for every shape.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use warren_common::{AsyncKind, BatchKind, BlockingKind, Context, JobBody, JobError, Kind, Limits, Output, Timing};

use crate::batcher::{Batcher, one_of_batch};
use crate::decide::{self, Lane};
use crate::pool::{Ran, now_us, panic_message};
use crate::registry::{Input, RunCx, Runner};

/// How one shape runs a job of kind `K`, given its input in its type.
pub trait ShapeRun<K: Kind>: Send + Sync {
    fn run<'a>(&'a self, kind: &'a Arc<K>, input: K::Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>>;
}

/// A kind and the shape it runs in: the [`Runner`] the delivery path sees.
pub struct Typed<K, S> {
    pub kind: Arc<K>,
    pub shape: S,
}

impl<K: Kind, S: ShapeRun<K>> Runner for Typed<K, S> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError> {
        Ok(Box::new(job.decode::<K::Input>()?))
    }

    fn validate(&self, input: &Input, limits: &Limits) -> Result<(), JobError> {
        match input.downcast_ref::<K::Input>() {
            Some(input) => self.kind.validate(input, limits),
            None => Err(another_type::<K>()),
        }
    }

    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        // The input was decoded by this runner, so it is of this type; if it were not, the job
        // fails permanently rather than the worker.
        match input.downcast::<K::Input>() {
            Ok(input) => self.shape.run(&self.kind, *input, cx),
            Err(_) => {
                let now = now_us();
                Box::pin(std::future::ready(Ran::Done(
                    Err(another_type::<K>()),
                    Timing { started_at_us: now, finished_at_us: now },
                )))
            }
        }
    }
}

fn another_type<K: Kind>() -> JobError {
    JobError::Panicked(format!("{}: input of another type", K::NAME))
}

/// Runs `work` on the served queue's pool with the job's context, unless its gate closes
/// first, or it was cancelled or passed its deadline while it waited for its slot.
async fn on_pool<F>(cx: RunCx<'_>, work: F) -> Ran<Output>
where
    F: FnOnce(Context) -> Result<Output, JobError> + Send + 'static,
{
    let Some(slot) = cx.pool.slot(cx.gate).await else { return Ran::NotStarted };
    let limit = match starts(&cx) {
        Ok(limit) => limit,
        Err(not_started) => return not_started,
    };
    let (attempt, limits, progress, cancel) = (cx.attempt, cx.limits.clone(), cx.progress.clone(), cx.cancel.clone());
    let (result, timing) = slot
        .run(limit, cx.retry_timeouts, move || {
            work(Context::new(attempt, Instant::now() + limit, limits).with_progress(progress).with_cancel(cancel))
        })
        .await;
    Ran::Done(result, timing)
}

/// The job's time limit as it starts ([`decide::at_start`]), or its answer if it may not.
fn starts(cx: &RunCx<'_>) -> Result<std::time::Duration, Ran<Output>> {
    let left = cx.deadline.map(|d| d.saturating_duration_since(Instant::now()));
    decide::at_start(cx.cancel.is_raised(), left, cx.time_limit).map_err(|e| {
        let now = now_us();
        Ran::Done(Err(e), Timing { started_at_us: now, finished_at_us: now })
    })
}

/// [`BlockingKind`]s: on the pool.
pub struct Blocking;

impl<K: BlockingKind> ShapeRun<K> for Blocking {
    fn run<'a>(&'a self, kind: &'a Arc<K>, input: K::Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        let kind = kind.clone();
        Box::pin(on_pool(cx, move |cx| kind.run(input, &cx).map(Output::new::<K>)))
    }
}

/// [`BatchKind`]s: jobs of the work queue through the batcher, when the route batches; the
/// returned lane's jobs, and every job when it does not, alone on the pool.
pub struct Batched<K: BatchKind> {
    pub batcher: Option<Batcher<K>>,
}

impl<K: BatchKind> ShapeRun<K> for Batched<K> {
    fn run<'a>(&'a self, kind: &'a Arc<K>, input: K::Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        match (&self.batcher, cx.lane) {
            (Some(batcher), Lane::Main) => {
                Box::pin(batcher.submit(input, cx.attempt, cx.deadline, cx.gate.clone(), cx.progress, cx.cancel))
            }
            _ => {
                let kind = kind.clone();
                Box::pin(on_pool(cx, move |cx| one_of_batch(&*kind, &[(input, cx)])))
            }
        }
    }
}

/// [`AsyncKind`]s: on the runtime, at most `permits` jobs at once in this worker.
pub struct Io {
    pub permits: Arc<Semaphore>,
}

impl<K: AsyncKind> ShapeRun<K> for Io {
    fn run<'a>(&'a self, kind: &'a Arc<K>, input: K::Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        Box::pin(async move {
            let _permit = tokio::select! {
                biased;
                () = cx.gate.cancelled() => return Ran::NotStarted,
                // The semaphore is never closed.
                permit = self.permits.acquire() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ran::NotStarted,
                },
            };
            let limit = match starts(&cx) {
                Ok(limit) => limit,
                Err(not_started) => return not_started,
            };
            let started_at_us = now_us();
            let context = Context::new(cx.attempt, Instant::now() + limit, cx.limits.clone())
                .with_progress(cx.progress)
                .with_cancel(cx.cancel);
            // A panic in the kind's future fails its job, as on the pool.
            let work = AssertUnwindSafe(kind.run(input, context)).catch_unwind();
            let result = match tokio::time::timeout(limit, work).await {
                Ok(Ok(r)) => r.map(Output::new::<K>),
                Ok(Err(payload)) => Err(JobError::Panicked(panic_message(payload.as_ref()))),
                Err(_) => {
                    tracing::warn!(?limit, "job passed its time limit; its future is dropped");
                    Err(JobError::TimedOut { limit, retry: cx.retry_timeouts })
                }
            };
            Ran::Done(result, Timing { started_at_us, finished_at_us: now_us() })
        })
    }
}
