//! One delivery, start to finish: parse at the boundary, run on the pool within the kind's time
//! limit, publish the outcome with a confirm, then settle the delivery. The input is acked only
//! after its result, its retry or its dead letter is confirmed; when none could be published it
//! is nacked with requeue, so the broker keeps it. Nothing here returns an error to the loop:
//! every path settles the delivery.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{FieldTable, ShortString};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, field};
use warren_common::classify::Classifier;
use warren_common::headers as h;
use warren_common::job::{self, Services};
use warren_common::retry::RetryPolicy;
use warren_common::{Encoding, Job, JobEnvelope, JobError, JobKind, JobResult, Timing};
use warren_infra::{PublishError, Publisher, Settings, fields};

use crate::batcher::Batcher;
use crate::failure::{self, Disposition};
use crate::metrics::{Metrics, Outcome};
use crate::pool::{WorkerPool, now_us};
use crate::redelivery;

/// What every delivery handler shares.
pub struct Worker {
    pub settings: Arc<Settings>,
    pub publisher: Publisher,
    pub pool: WorkerPool,
    pub classifier: Option<Arc<dyn Classifier>>,
    pub worker_id: String,
    /// Job kinds this worker runs.
    pub kinds: Vec<JobKind>,
    pub metrics: Arc<Metrics>,
    /// Micro-batching for classify jobs, when enabled.
    pub batcher: Option<Batcher>,
    /// Cancelled by a handler whose publish failed because the channel or connection is gone:
    /// the session must be replaced, not used to nack every job that follows.
    pub lost: CancellationToken,
}

impl Worker {
    /// Notes a broker failure seen while publishing, so the session is replaced.
    pub(crate) fn observe(&self, error: &PublishError) {
        if matches!(error, PublishError::Amqp(_)) {
            self.lost.cancel();
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("worker_id", &self.worker_id).field("kinds", &self.kinds).finish()
    }
}

/// A queue this worker consumes, with its kind's limits.
#[derive(Debug, Clone)]
pub struct Served {
    pub queue: String,
    /// Unacked deliveries allowed on this queue's consumer.
    pub prefetch: u16,
    pub time_limit: Duration,
    pub retry: RetryPolicy,
}

/// Handles one delivery. `stop` is cancelled when the drain timeout passes: a job still running
/// then is handed back to the broker (nack with requeue) rather than left hanging.
pub async fn handle(worker: Arc<Worker>, served: Arc<Served>, delivery: Delivery, stop: CancellationToken) {
    let props = &delivery.properties;
    let job_id = props.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
    let attempt = fields::get_u64(props.headers().as_ref(), h::ATTEMPT).unwrap_or(0);
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    // The W3C trace id the producer started; it is copied onto the result, so logs of producer,
    // worker and result consumer share it.
    let traceparent = fields::get_str(props.headers().as_ref(), h::TRACEPARENT);
    let trace_id = traceparent.as_deref().and_then(|t| t.split('-').nth(1)).unwrap_or("").to_owned();
    let span = tracing::info_span!(
        "job",
        job_id = %job_id,
        trace_id = %trace_id,
        kind = field::Empty,
        attempt,
        queue = %served.queue,
        redelivered = delivery.redelivered,
    );
    let work = async {
        tracing::debug!("job started");
        if delivery.redelivered && redelivery::intercept(&worker, &served, &delivery).await {
            return;
        }
        tokio::select! {
            () = process(&worker, &served, &delivery, job_id, attempt) => {}
            () = stop.cancelled() => {
                tracing::warn!("drain timeout: handing the job back to the broker");
                nack_requeue(&delivery).await;
            }
        }
    };
    work.instrument(span).await;
}

async fn process(worker: &Arc<Worker>, served: &Served, delivery: &Delivery, job_id: String, attempt: u32) {
    let content_type = delivery.properties.content_type().as_ref().map(|s| s.as_str());
    let encoding = Encoding::from_content_type(content_type);
    let (outcome, timing, kind) = match parse(&delivery.data, content_type, encoding, worker) {
        Ok(job) => {
            let kind = job.kind().as_str().to_owned();
            tracing::Span::current().record("kind", kind.as_str());
            let (settings, classifier) = (worker.settings.clone(), worker.classifier.clone());
            worker.metrics.job_received(&served.queue, &kind);
            let (outcome, timing) = match (job, &worker.batcher) {
                (Job::Classify(job), Some(batcher)) => batcher.submit(job).await,
                (job, _) => {
                    worker
                        .pool
                        .run(served.time_limit, settings.consumer.retry_timeouts, move || {
                            let services =
                                Services { limits: &settings.limits, classifier: classifier.as_deref(), attempt };
                            job::run(&job, services)
                        })
                        .await
                }
            };
            let published_us = published_at_us(delivery);
            let queued_for = published_us.map(|p| Duration::from_micros(timing.started_at_us.saturating_sub(p)));
            let ran_for = Duration::from_micros(timing.finished_at_us.saturating_sub(timing.started_at_us));
            worker.metrics.job_ran(&served.queue, &kind, queued_for, ran_for, worker.pool.abandoned());
            (outcome, timing, kind)
        }
        Err(e) => {
            let now = now_us();
            let kind = encoding
                .and_then(|enc| JobEnvelope::peek_kind(&delivery.data, enc))
                .unwrap_or_else(|| "unknown".to_owned());
            worker.metrics.job_received(&served.queue, kind_label(&kind));
            (Err(e), Timing { started_at_us: now, finished_at_us: now }, kind)
        }
    };
    // Results travel in the job's encoding; JSON when the job's could not be understood.
    let encoding = encoding.unwrap_or(Encoding::Json);
    match outcome {
        Ok(output) => {
            let result = JobResult::ok(job_id, kind.clone(), output, attempt, worker.worker_id.clone(), timing);
            let settled = |outcome| {
                let since = published_at_us(delivery).map(|p| Duration::from_micros(now_us().saturating_sub(p)));
                worker.metrics.job_settled(&served.queue, &kind, outcome, since);
            };
            match publish_result(worker, delivery, &result, encoding).await {
                Ok(()) => {
                    tracing::info!(run_ms = (timing.finished_at_us - timing.started_at_us) / 1000, "job done");
                    ack(delivery).await;
                    settled(Outcome::Ok);
                }
                Err(e @ PublishError::Unroutable { .. }) => {
                    // The job is done; nobody is listening for its result (a requester that
                    // went away, or no results queue). Redoing the job would not change that.
                    tracing::warn!(error = %e, "result unroutable; dropping the result of a finished job");
                    ack(delivery).await;
                    settled(Outcome::Ok);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "result not confirmed; handing the job back to the broker");
                    nack_requeue(delivery).await;
                    settled(Outcome::Requeued);
                }
            }
        }
        Err(error) => {
            fail(worker, served, delivery, job_id, kind, &error, attempt, timing, encoding).await;
        }
    }
}

fn parse(
    body: &[u8],
    content_type: Option<&str>,
    encoding: Option<Encoding>,
    worker: &Worker,
) -> Result<Job, JobError> {
    let limits = &worker.settings.limits;
    if body.len() > limits.max_body_bytes {
        return Err(JobError::BodyTooLarge { size: body.len(), limit: limits.max_body_bytes });
    }
    let Some(encoding) = encoding else {
        return Err(JobError::UnsupportedContentType(content_type.unwrap_or_default().to_owned()));
    };
    let job = JobEnvelope::decode(body, encoding)?;
    if !worker.kinds.contains(&job.kind()) {
        return Err(JobError::KindNotServed(job.kind().as_str().to_owned()));
    }
    job.validate(limits)?;
    Ok(job)
}

/// Retries or dead-letters a failed job; when it is given up and a reply is expected, also
/// sends the error result. Settles the delivery.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fail(
    worker: &Worker,
    served: &Served,
    delivery: &Delivery,
    job_id: String,
    kind: String,
    error: &JobError,
    attempt: u32,
    timing: Timing,
    encoding: Encoding,
) {
    let label = kind_label(&kind);
    worker.metrics.job_failed(&served.queue, label, error.error_type());
    match failure::dispose(worker, served, delivery, error, attempt).await {
        Err(e) => {
            worker.observe(&e);
            tracing::error!(error = %e, "retry or dead letter not confirmed; handing the job back to the broker");
            nack_requeue(delivery).await;
            worker.metrics.job_settled(&served.queue, label, Outcome::Requeued, None);
        }
        Ok(Disposition::Retried) => {
            ack(delivery).await;
            worker.metrics.job_settled(&served.queue, label, Outcome::Retried, None);
        }
        Ok(Disposition::DeadLettered) => {
            worker.metrics.job_settled(&served.queue, label, Outcome::DeadLettered, None);
            if delivery.properties.reply_to().is_some() {
                let result = JobResult::failed(job_id, kind, error, attempt, worker.worker_id.clone(), timing);
                if let Err(e) = publish_result(worker, delivery, &result, encoding).await {
                    // The dead letter holds the record; the error result is a courtesy.
                    tracing::warn!(error = %e, "error result not delivered to reply_to");
                }
            }
            ack(delivery).await;
        }
    }
}

async fn publish_result(
    worker: &Worker,
    delivery: &Delivery,
    result: &JobResult,
    encoding: Encoding,
) -> Result<(), PublishError> {
    let body = result.encode(encoding).map_err(|e| PublishError::Unroutable {
        exchange: String::new(),
        routing_key: String::new(),
        reply: format!("result could not be encoded: {e}"),
    })?;
    let input = &delivery.properties;
    let correlation = input
        .correlation_id()
        .clone()
        .or_else(|| input.message_id().clone())
        .unwrap_or_else(|| ShortString::from(result.job_id.as_str()));
    let mut headers = FieldTable::default();
    if let Some(tp) = fields::get_str(input.headers().as_ref(), h::TRACEPARENT) {
        fields::set_str(&mut headers, h::TRACEPARENT, tp);
    }
    let props = BasicProperties::default()
        .with_content_type(encoding.content_type().into())
        .with_delivery_mode(2)
        .with_message_id(result.job_id.as_str().into())
        .with_correlation_id(correlation)
        .with_timestamp(now_us() / 1_000_000)
        .with_type("warren.result".into())
        .with_headers(headers);
    let (exchange, routing_key) = match input.reply_to() {
        Some(reply_to) => ("", reply_to.as_str()),
        None => (worker.settings.topology.results_exchange.as_str(), result.kind.as_str()),
    };
    let published = worker.publisher.publish(exchange, routing_key, &body, props, true).await;
    worker.metrics.published("result", PublishError::outcome(&published));
    if let Err(e) = &published {
        worker.observe(e);
    }
    published
}

/// The job's `timestamp` property (seconds) in microseconds, when it has one.
fn published_at_us(delivery: &Delivery) -> Option<u64> {
    delivery.properties.timestamp().map(|s| s.saturating_mul(1_000_000))
}

/// A kind for metric labels: a known kind, or "unknown" (never a string from a message).
pub(crate) fn kind_label(kind: &str) -> &'static str {
    JobKind::parse(kind).map(JobKind::as_str).unwrap_or("unknown")
}

pub(crate) async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The channel is gone; the broker will redeliver, and results carry the job id.
        tracing::warn!(error = %e, "ack failed; the job will be redelivered");
    }
}

pub(crate) async fn nack_requeue(delivery: &Delivery) {
    if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
        tracing::warn!(error = %e, "nack failed; the broker requeues the job when the channel closes");
    }
}
