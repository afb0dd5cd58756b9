//! The three shapes of a kind, carried out: blocking work on the bounded pool, batched work
//! through the micro-batcher (or alone on the pool), async work on the runtime under the kind's
//! own concurrency limit. Each turns a typed kind into a [`Runner`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use warren_common::{AsyncKind, BatchKind, BlockingKind, Context, JobBody, JobError, Kind, Limits, Output, Timing};

use crate::batcher::{Batcher, one_of_batch};
use crate::decide::Lane;
use crate::pool::{Ran, now_us, panic_message};
use crate::registry::{Input, RunCx, Runner};

/// Parses a job of kind `K`.
fn decode<K: Kind>(job: JobBody<'_>) -> Result<Input, JobError> {
    Ok(Box::new(job.decode::<K::Input>()?))
}

/// Validates a parsed job of kind `K`.
fn validate<K: Kind>(kind: &K, input: &Input, limits: &Limits) -> Result<(), JobError> {
    match input.downcast_ref::<K::Input>() {
        Some(input) => kind.validate(input, limits),
        None => Err(JobError::Panicked(format!("{}: input of another type", K::NAME))),
    }
}

/// The input back in its type. It was opened by the same runner, so this cannot fail; if it
/// did, the job fails permanently rather than the worker.
fn typed<K: Kind>(input: Input) -> Result<K::Input, JobError> {
    input
        .downcast::<K::Input>()
        .map(|b| *b)
        .map_err(|_| JobError::Panicked(format!("{}: input of another type", K::NAME)))
}

fn failed(e: JobError) -> Ran<Output> {
    let now = now_us();
    Ran::Done(Err(e), Timing { started_at_us: now, finished_at_us: now })
}

/// A [`BlockingKind`] on the pool.
pub struct Blocking<K>(pub Arc<K>);

impl<K: BlockingKind> Runner for Blocking<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError> {
        decode::<K>(job)
    }

    fn validate(&self, input: &Input, limits: &Limits) -> Result<(), JobError> {
        validate(&*self.0, input, limits)
    }

    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        let kind = self.0.clone();
        Box::pin(async move {
            let input = match typed::<K>(input) {
                Ok(i) => i,
                Err(e) => return failed(e),
            };
            let (attempt, limits, limit) = (cx.attempt, cx.limits.clone(), cx.time_limit);
            cx.pool
                .run(cx.time_limit, cx.retry_timeouts, cx.gate, move || {
                    let cx = Context::new(attempt, Instant::now() + limit, limits);
                    kind.run(input, &cx).map(Output::new::<K>)
                })
                .await
        })
    }
}

/// A [`BatchKind`]: jobs of the work queue through its batcher, when it batches; the returned
/// lane's jobs, and every job when it does not, alone on the pool.
pub struct Batched<K: BatchKind> {
    pub kind: Arc<K>,
    pub batcher: Option<Batcher<K>>,
}

impl<K: BatchKind> Runner for Batched<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError> {
        decode::<K>(job)
    }

    fn validate(&self, input: &Input, limits: &Limits) -> Result<(), JobError> {
        validate(&*self.kind, input, limits)
    }

    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        Box::pin(async move {
            let input = match typed::<K>(input) {
                Ok(i) => i,
                Err(e) => return failed(e),
            };
            match (&self.batcher, cx.lane) {
                (Some(batcher), Lane::Main) => batcher.submit(input, cx.attempt, cx.gate.clone()).await,
                _ => {
                    let (kind, attempt, limits, limit) =
                        (self.kind.clone(), cx.attempt, cx.limits.clone(), cx.time_limit);
                    cx.pool
                        .run(cx.time_limit, cx.retry_timeouts, cx.gate, move || {
                            let cx = Context::new(attempt, Instant::now() + limit, limits);
                            one_of_batch(&*kind, &[(input, cx)])
                        })
                        .await
                }
            }
        })
    }
}

/// An [`AsyncKind`] on the runtime, at most `concurrency` jobs at once in this worker.
pub struct Io<K> {
    pub kind: Arc<K>,
    pub permits: Arc<Semaphore>,
}

impl<K: AsyncKind> Runner for Io<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError> {
        decode::<K>(job)
    }

    fn validate(&self, input: &Input, limits: &Limits) -> Result<(), JobError> {
        validate(&*self.kind, input, limits)
    }

    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        Box::pin(async move {
            let input = match typed::<K>(input) {
                Ok(i) => i,
                Err(e) => return failed(e),
            };
            let _permit = tokio::select! {
                biased;
                () = cx.gate.cancelled() => return Ran::NotStarted,
                // The semaphore is never closed.
                permit = self.permits.acquire() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ran::NotStarted,
                },
            };
            let started_at_us = now_us();
            let context = Context::new(cx.attempt, Instant::now() + cx.time_limit, cx.limits.clone());
            // A panic in the kind's future fails its job, as on the pool.
            let work = AssertUnwindSafe(self.kind.run(input, context)).catch_unwind();
            let result = match tokio::time::timeout(cx.time_limit, work).await {
                Ok(Ok(r)) => r.map(Output::new::<K>),
                Ok(Err(payload)) => Err(JobError::Panicked(panic_message(payload.as_ref()))),
                Err(_) => {
                    tracing::warn!(limit = ?cx.time_limit, "job passed its time limit; its future is dropped");
                    Err(JobError::TimedOut { limit: cx.time_limit, retry: cx.retry_timeouts })
                }
            };
            Ran::Done(result, Timing { started_at_us, finished_at_us: now_us() })
        })
    }
}
