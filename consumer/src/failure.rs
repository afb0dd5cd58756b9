//! What becomes of a failed job: another attempt after a delay, or a dead letter.
//!
//! A transient failure with attempts left is republished, unchanged but for Warren's headers, to
//! the delay queue of its backoff tier with a jittered per-message TTL; the broker returns it to
//! the work queue when the TTL ends. Anything else is published to the dead-letter exchange with
//! the reason. Either way the input is acked only after that publish is confirmed.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use warren_common::headers as h;
use warren_common::retry::RetryPolicy;
use warren_common::{ErrorClass, JobError};
use warren_infra::{PublishError, fields};

use crate::handler::{Served, Worker};
use crate::pool::now_us;

/// The longest error message kept in a header; the rest is cut (headers are not for essays).
const MAX_MESSAGE_LEN: usize = 2048;

/// What was done with a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Retried,
    DeadLettered,
}

/// Why a job was given up.
pub fn reason(error: &JobError) -> &'static str {
    match (error, error.class()) {
        (JobError::RedeliveryLimit { .. }, _) => "redelivery_limit",
        (_, ErrorClass::Permanent) => "permanent_error",
        (_, ErrorClass::Transient) => "attempts_exhausted",
    }
}

/// Retries or dead-letters the delivery's job; the caller acks on `Ok` and nacks with requeue on
/// `Err` (nothing was confirmed, so the broker must keep the job).
pub async fn dispose(
    worker: &Worker,
    served: &Served,
    delivery: &Delivery,
    error: &JobError,
    attempt: u32,
) -> Result<Disposition, PublishError> {
    let policy: &RetryPolicy = &served.retry;
    let now_ms = now_us() / 1000;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    record_failure(&mut headers, delivery, served, error, now_ms, &worker.worker_id);

    if error.class() == ErrorClass::Transient && policy.should_retry(attempt) {
        let next = attempt + 1;
        let nominal = policy.nominal_delay(next);
        let ttl = policy.jittered(nominal, rand::random::<f64>());
        fields::set_u64(&mut headers, h::ATTEMPT, u64::from(next));
        let props = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_expiration(ttl.as_millis().max(1).to_string().into());
        let queue = worker.settings.retry_queue(&served.queue, nominal);
        let published = worker.publisher.publish("", &queue, &delivery.data, props, true).await;
        worker.metrics.published("retry", PublishError::outcome(&published));
        published?;
        tracing::info!(next_attempt = next, delay_ms = ttl.as_millis() as u64, error = %error, "transient failure; retrying later");
        return Ok(Disposition::Retried);
    }

    fields::set_u64(&mut headers, h::ATTEMPTS, u64::from(attempt) + 1);
    fields::set_str(&mut headers, h::DEAD_REASON, reason(error));
    let props: BasicProperties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let dlx = &worker.settings.topology.dead_letter_exchange;
    let published = worker.publisher.publish(dlx, &served.queue, &delivery.data, props, true).await;
    worker.metrics.published("dead_letter", PublishError::outcome(&published));
    published?;
    tracing::warn!(
        reason = reason(error),
        error_type = error.error_type(),
        error = %error,
        attempts = attempt + 1,
        "job dead-lettered"
    );
    Ok(Disposition::DeadLettered)
}

/// Headers every failure updates: the last error, when, by whom, and (once) where the job came
/// from; the first failure's time is kept across retries.
fn record_failure(
    headers: &mut FieldTable,
    delivery: &Delivery,
    served: &Served,
    error: &JobError,
    now_ms: u64,
    worker_id: &str,
) {
    let mut message = error.to_string();
    if message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    fields::set_str(headers, h::ERROR_CLASS, error.class().as_str());
    fields::set_str(headers, h::ERROR_TYPE, error.error_type());
    fields::set_str(headers, h::ERROR_MESSAGE, message);
    fields::set_u64(headers, h::FAILED_AT, now_ms);
    fields::set_str(headers, h::CONSUMER, worker_id);
    fields::set_str(headers, h::ORIGINAL_QUEUE, &served.queue);
    if fields::get(Some(headers), h::FIRST_FAILED_AT).is_none() {
        fields::set_u64(headers, h::FIRST_FAILED_AT, now_ms);
    }
    keep_origin(headers, delivery);
}

/// Records where the job was published, once. Copies Warren republishes (retries, requeued
/// redeliveries) travel through the default exchange; a replay needs the first origin.
pub(crate) fn keep_origin(headers: &mut FieldTable, delivery: &Delivery) {
    if fields::get(Some(headers), h::ORIGINAL_EXCHANGE).is_none() {
        fields::set_str(headers, h::ORIGINAL_EXCHANGE, delivery.exchange.as_str());
        fields::set_str(headers, h::ORIGINAL_ROUTING_KEY, delivery.routing_key.as_str());
    }
}
