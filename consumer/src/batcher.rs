//! Micro-batching for batched kinds (`BatchKind`): jobs that arrive close together share one run.
//!
//! Handlers submit their job and wait for its own answer; a collector task gathers up to the
//! route's `max_batch` jobs, or what arrived within its `max_batch_wait_ms` of the first, and
//! runs them as one job on the pool (one slot, the kind's time limit). Each job still has its
//! own outcome and each delivery is settled (result, retry or dead letter, then ack) by its own
//! handler. Prefetch for the queue is raised so that a batch can fill.
//!
//! A job whose gate closed (its session was lost, or the worker drains) while it waited is
//! dropped from its batch unstarted. When a batch panics, each of its jobs is run again alone,
//! so that only the job that panics fails (the inputs are lent to the kind, so nothing is copied
//! for that). A batch past its time limit fails every job in it with `timeout`: running them
//! again one by one could hold them for several time limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use warren_common::{BatchKind, Context, JobError, Limits, Output, Timing};

use crate::pool::{Ran, WorkerPool};

type Answer = Ran<Output>;

struct Item<K: BatchKind> {
    input: K::Input,
    attempt: u32,
    /// The job's own deadline, if it has one.
    deadline: Option<Instant>,
    gate: CancellationToken,
    reply: oneshot::Sender<Answer>,
    progress: warren_common::Progress,
    cancel: warren_common::CancelFlag,
}

pub struct Batcher<K: BatchKind> {
    tx: mpsc::Sender<Item<K>>,
}

impl<K: BatchKind> Clone for Batcher<K> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<K: BatchKind> std::fmt::Debug for Batcher<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("kind", &K::NAME).finish_non_exhaustive()
    }
}

/// How batches are formed and run.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub time_limit: Duration,
    pub retry_timeouts: bool,
}

impl<K: BatchKind> Batcher<K> {
    pub fn start(
        pool: WorkerPool,
        kind: Arc<K>,
        limits: Arc<Limits>,
        policy: BatchPolicy,
        batch_sizes: prometheus::Histogram,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Item<K>>(policy.max_batch.max(1) * 4);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + policy.max_wait;
                while batch.len() < policy.max_batch {
                    tokio::select! {
                        item = rx.recv() => match item {
                            Some(item) => batch.push(item),
                            None => break,
                        },
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
                batch_sizes.observe(batch.len() as f64);
                // Run without waiting here, so the next batch can form meanwhile; the pool's
                // semaphore bounds how many run at once.
                let (pool, kind, limits, policy) = (pool.clone(), kind.clone(), limits.clone(), policy.clone());
                tokio::spawn(async move { run(batch, pool, kind, limits, policy).await });
            }
        });
        Self { tx }
    }

    /// Submits one job and waits for its own outcome; it does not start once `gate` is closed.
    pub async fn submit(
        &self,
        input: K::Input,
        attempt: u32,
        deadline: Option<Instant>,
        gate: CancellationToken,
        progress: warren_common::Progress,
        cancel: warren_common::CancelFlag,
    ) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Item { input, attempt, deadline, gate, reply, progress, cancel }).await.is_err() {
            return Ran::Done(Err(JobError::ModelRequestFailed("the batcher stopped".into())), Timing::default());
        }
        answer.await.unwrap_or_else(|_| {
            Ran::Done(Err(JobError::ModelRequestFailed("the batch was lost".into())), Timing::default())
        })
    }
}

async fn run<K: BatchKind>(
    batch: Vec<Item<K>>,
    pool: WorkerPool,
    kind: Arc<K>,
    limits: Arc<Limits>,
    policy: BatchPolicy,
) {
    // The batch waits for a slot whatever its jobs' gates say; once it has one, only the jobs
    // whose gates are still open start.
    let Some(slot) = pool.slot(&CancellationToken::new()).await else { return };
    let mut jobs = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let started = Instant::now();
    for item in batch {
        if item.gate.is_cancelled() {
            let _ = item.reply.send(Ran::NotStarted);
            continue;
        }
        // A job cancelled or past its deadline while it waited does not join the run.
        let left = item.deadline.map(|d| d.saturating_duration_since(started));
        match crate::decide::at_start(item.cancel.is_raised(), left, policy.time_limit) {
            Ok(limit) => {
                let context = Context::new(item.attempt, started + limit, limits.clone());
                jobs.push((item.input, context.with_progress(item.progress).with_cancel(item.cancel)));
                replies.push((item.reply, item.gate));
            }
            Err(e) => {
                let now = crate::pool::now_us();
                let _ = item.reply.send(Ran::Done(Err(e), Timing { started_at_us: now, finished_at_us: now }));
            }
        }
    }
    if jobs.is_empty() {
        return;
    }
    let n = jobs.len();
    // Shared with the blocking thread, so that the inputs are still here if the batch panics.
    let jobs = Arc::new(jobs);
    let (outcome, timing) = {
        let (kind, jobs) = (kind.clone(), jobs.clone());
        slot.run(policy.time_limit, policy.retry_timeouts, move || Ok(kind.run_batch(&jobs))).await
    };
    match outcome {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (reply, _) in replies {
                let outcome = outcomes.next().unwrap_or_else(|| {
                    Err(JobError::Panicked(format!("{} answered a batch of {n} with fewer outcomes", K::NAME)))
                });
                let _ = reply.send(Ran::Done(outcome.map(Output::new::<K>), timing));
            }
        }
        Err(e @ JobError::Panicked(_)) if n > 1 => {
            tracing::warn!(error = %e, jobs = n, "batch panicked; running each of its jobs alone");
            // All at once, each on a slot of its own as slots free up (the pool bounds them). A
            // panic usually comes early; at worst this adds max_batch / pool time limits.
            let solo = replies.into_iter().enumerate().map(|(i, (reply, gate))| {
                let (pool, kind, jobs, policy) = (pool.clone(), kind.clone(), jobs.clone(), policy.clone());
                async move {
                    let ran = pool
                        .run(policy.time_limit, policy.retry_timeouts, &gate, move || {
                            one_of_batch(&*kind, std::slice::from_ref(&jobs[i]))
                        })
                        .await;
                    let _ = reply.send(ran);
                }
            });
            futures_util::future::join_all(solo).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = n, "batch failed");
            for (reply, _) in replies {
                let _ = reply.send(Ran::Done(Err(e.clone()), timing));
            }
        }
    }
}

/// Runs a batch of one and takes its answer.
pub(crate) fn one_of_batch<K: BatchKind>(kind: &K, one: &[(K::Input, Context)]) -> Result<Output, JobError> {
    kind.run_batch(one)
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(JobError::Panicked(format!("{} answered a batch of one with nothing", K::NAME))))
        .map(Output::new::<K>)
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use warren_common::classify::{Classifier, Classify, ClassifyJob, ElementType, InputTensor, ModelSpec};
    use warren_common::resize::Filter;

    use super::*;

    /// A stand-in model that panics on any batch holding a white image (mean input above 0.5).
    #[derive(Debug)]
    struct PanicsOnWhite(ModelSpec);

    impl Classifier for PanicsOnWhite {
        fn spec(&self) -> &ModelSpec {
            &self.0
        }
        fn infer(&self, input: InputTensor) -> Result<Array2<f32>, JobError> {
            let InputTensor::F32(a) = input else { panic!("f32 expected") };
            if a.outer_iter().any(|img| img.mean().unwrap_or(0.0) > 0.5) {
                panic!("the model cannot take a white image");
            }
            Ok(Array2::from_shape_fn((a.shape()[0], 2), |(_, c)| if c == 0 { 5.0 } else { 0.0 }))
        }
    }

    /// A batcher of up to 4 jobs waiting `max_wait` over the stand-in model, on a pool of one.
    fn stub_batcher(max_wait: Duration) -> (Batcher<Classify>, prometheus::Histogram) {
        let spec = ModelSpec {
            name: "stub".into(),
            input_type: ElementType::F32,
            channels: 1,
            height: 4,
            width: 4,
            mean: vec![0.0],
            std: vec![1.0],
            filter: Filter::Triangle,
            labels: vec!["a".into(), "b".into()],
            outputs_logits: true,
            max_aspect_ratio: 4.0,
        };
        let policy = BatchPolicy { max_batch: 4, max_wait, time_limit: Duration::from_secs(30), retry_timeouts: true };
        let histogram = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("b", "b")).expect("h");
        let kind = Arc::new(Classify { model: Arc::new(PanicsOnWhite(spec)) });
        let batcher = Batcher::start(WorkerPool::new(1), kind, Arc::new(Limits::default()), policy, histogram.clone());
        (batcher, histogram)
    }

    fn png(v: u8) -> Vec<u8> {
        let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([v])));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("png");
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_batch_is_run_again_job_by_job_so_only_the_guilty_fails() {
        let (batcher, histogram) = stub_batcher(Duration::from_millis(200));
        let submit = |v: u8| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                batcher
                    .submit(
                        ClassifyJob { image: png(v), top_k: Some(1) },
                        0,
                        None,
                        CancellationToken::new(),
                        Default::default(),
                        Default::default(),
                    )
                    .await
            })
        };
        let jobs = [submit(0), submit(255), submit(0)];
        let mut outcomes = Vec::new();
        for j in jobs {
            match j.await.expect("task") {
                Ran::Done(r, _) => outcomes.push(r),
                Ran::NotStarted | Ran::Died(_) => panic!("every job starts and ends"),
            }
        }
        assert_eq!(histogram.get_sample_count(), 1, "the three formed one batch");
        let failed: Vec<&str> = outcomes.iter().filter_map(|r| r.as_ref().err()).map(JobError::error_type).collect();
        assert_eq!(failed, ["panic"], "only the white image fails: {outcomes:?}");
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    }

    #[tokio::test]
    async fn a_job_whose_gate_closed_before_its_batch_ran_never_starts() {
        let (batcher, _) = stub_batcher(Duration::from_millis(50));
        let gate = CancellationToken::new();
        gate.cancel();
        let ran = batcher
            .submit(ClassifyJob { image: png(0), top_k: None }, 0, None, gate, Default::default(), Default::default())
            .await;
        assert!(matches!(ran, Ran::NotStarted));
    }
}
