//! Micro-batching for `ml.classify`: jobs that arrive close together share one model run.
//!
//! Handlers submit their job and wait for its own answer; a collector task gathers up to
//! `model.max_batch` jobs, or what arrived within `model.max_batch_wait_ms` of the first, and runs
//! them as one job on the pool (one slot, the kind's time limit). Each job still has its own
//! outcome and each delivery is settled (result, retry or dead letter, then ack) by its own
//! handler. Prefetch for the queue is raised so that a batch can fill.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use warren_common::classify::{Classifier, ClassifyJob, classify_batch};
use warren_common::{JobError, JobOutput, Limits, Timing};

use crate::pool::WorkerPool;

type Answer = (Result<JobOutput, JobError>, Timing);

struct Item {
    job: ClassifyJob,
    reply: oneshot::Sender<Answer>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Item>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
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

impl Batcher {
    pub fn start(
        pool: WorkerPool,
        model: Arc<dyn Classifier>,
        limits: Arc<Limits>,
        policy: BatchPolicy,
        batch_sizes: prometheus::Histogram,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Item>(policy.max_batch.max(1) * 4);
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
                let (pool, model, limits, policy) = (pool.clone(), model.clone(), limits.clone(), policy.clone());
                tokio::spawn(async move { run(batch, pool, model, limits, policy).await });
            }
        });
        Self { tx }
    }

    /// Submits one job and waits for its own outcome.
    pub async fn submit(&self, job: ClassifyJob) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Item { job, reply }).await.is_err() {
            return (Err(JobError::ModelUnavailable("the batcher stopped".into())), Timing::default());
        }
        answer
            .await
            .unwrap_or_else(|_| (Err(JobError::ModelUnavailable("the batch was lost".into())), Timing::default()))
    }
}

async fn run(batch: Vec<Item>, pool: WorkerPool, model: Arc<dyn Classifier>, limits: Arc<Limits>, policy: BatchPolicy) {
    let (jobs, replies): (Vec<ClassifyJob>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|i| (i.job, i.reply)).unzip();
    let n = jobs.len();
    let (outcome, timing) = pool
        .run(policy.time_limit, policy.retry_timeouts, move || {
            let refs: Vec<&ClassifyJob> = jobs.iter().collect();
            Ok(classify_batch(&refs, model.as_ref(), &limits))
        })
        .await;
    match outcome {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send((outcome.map(JobOutput::Classify), timing));
            }
        }
        // A panic or a time limit hits the whole batch: every job gets that error.
        Err(e) => {
            tracing::warn!(error = %e, jobs = n, "batch failed");
            for reply in replies {
                let _ = reply.send((Err(e.clone()), timing));
            }
        }
    }
}
