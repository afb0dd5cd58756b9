//! Poison messages. A delivery flagged `redelivered` came back without an answer: its worker
//! died, lost the broker, or handed it back on shutdown. Classic queues do not count such
//! returns, so Warren does: the job is republished to the back of its queue with
//! `warren-redeliveries` + 1 (and the flagged copy acked once that is confirmed), and past
//! `consumer.max_redeliveries` it is dead-lettered with reason `redelivery_limit` instead. A job
//! that kills every worker that takes it is thus stopped after a bounded number of deaths.

use lapin::message::Delivery;
use warren_common::headers as h;
use warren_common::{Encoding, JobEnvelope, JobError, Timing};
use warren_infra::{PublishError, fields};

use crate::failure::keep_origin;
use crate::handler::{Served, Worker, ack, fail, nack_requeue};
use crate::pool::now_us;

/// Deals with a redelivered job; returns whether it did (false: process it as usual).
pub async fn intercept(worker: &Worker, served: &Served, delivery: &Delivery) -> bool {
    let props = &delivery.properties;
    let returns = fields::get_u64(props.headers().as_ref(), h::REDELIVERIES).unwrap_or(0) + 1;
    let returns = u32::try_from(returns).unwrap_or(u32::MAX);
    worker.metrics.redelivered(&served.queue);
    let attempt = fields::get_u64(props.headers().as_ref(), h::ATTEMPT).unwrap_or(0);
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    if returns > worker.settings.consumer.max_redeliveries {
        let error = JobError::RedeliveryLimit { deliveries: returns };
        let job_id = props.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
        let encoding = Encoding::from_content_type(props.content_type().as_ref().map(|s| s.as_str()));
        let kind = encoding.and_then(|e| JobEnvelope::peek_kind(&delivery.data, e)).unwrap_or_else(|| "unknown".into());
        let now = now_us();
        let timing = Timing { started_at_us: now, finished_at_us: now };
        fail(worker, served, delivery, job_id, kind, &error, attempt, timing, encoding.unwrap_or(Encoding::Json)).await;
        return true;
    }
    let mut headers = props.headers().clone().unwrap_or_default();
    fields::set_u64(&mut headers, h::REDELIVERIES, u64::from(returns));
    keep_origin(&mut headers, delivery);
    let copy = props.clone().with_headers(headers).with_delivery_mode(2);
    let published = worker.publisher.publish("", &served.queue, &delivery.data, copy, true).await;
    worker.metrics.published("requeue_copy", PublishError::outcome(&published));
    match published {
        Ok(()) => {
            tracing::warn!(redeliveries = returns, "job came back unanswered; requeued at the back with its count");
            ack(delivery).await;
        }
        Err(e) => {
            worker.observe(&e);
            tracing::warn!(error = %e, "could not requeue the redelivered job with its count");
            nack_requeue(delivery).await;
        }
    }
    true
}
