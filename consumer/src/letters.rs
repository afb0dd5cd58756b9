//! The messages Warren publishes for a delivery, built from plain data: the result, the retry
//! copy, the dead letter, and copies put back in a queue. No broker here; the settle step
//! publishes what these build.
//!
//! Copies keep the job's body and properties but for three: `user_id` is dropped (the broker
//! refuses a `user_id` other than the publishing connection's, and closes the channel), a dead
//! letter drops `expiration` (a dead letter must not vanish), and a retry copy's `expiration` is
//! its delay.

use std::borrow::Cow;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};
use warren_common::headers as h;
use warren_common::{Encoding, JobError, JobResult};
use warren_infra::fields;

use crate::decide::Purpose;

/// One message to publish, and what it is for.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    pub purpose: Purpose,
    pub exchange: String,
    pub routing_key: String,
    pub body: Cow<'a, [u8]>,
    pub properties: BasicProperties,
}

/// What a delivery brought, as the letters need it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: &'a BasicProperties,
}

/// A failure, as recorded in the headers of retry copies and dead letters.
#[derive(Debug, Clone, Copy)]
pub struct FailureRecord<'a> {
    pub error: &'a JobError,
    /// The work queue the job was consumed for.
    pub queue: &'a str,
    pub worker_id: &'a str,
    pub now_ms: u64,
}

/// Where results of jobs without `reply_to` go.
#[derive(Debug, Clone, Copy)]
pub struct ResultsRoute<'a> {
    pub exchange: &'a str,
    /// A results queue is declared: a result the exchange cannot route means it is missing.
    pub has_queue: bool,
}

/// The result message, to `reply_to` or to the results exchange with routing key = kind. An
/// output that cannot be encoded is the job's failure ([`JobError::Encode`]), never a silent drop.
pub fn result<'a>(
    input: &BasicProperties,
    result: &JobResult,
    encoding: Encoding,
    results: ResultsRoute<'_>,
    now_us: u64,
) -> Result<Letter<'a>, JobError> {
    let body = result.encode(encoding)?;
    let correlation = input
        .correlation_id()
        .clone()
        .or_else(|| input.message_id().clone())
        .unwrap_or_else(|| ShortString::from(result.job_id.as_str()));
    let mut headers = FieldTable::default();
    if let Some(tp) = fields::get_str(input.headers().as_ref(), h::TRACEPARENT) {
        fields::set_str(&mut headers, h::TRACEPARENT, tp);
    }
    let properties = BasicProperties::default()
        .with_content_type(encoding.content_type().into())
        .with_delivery_mode(2)
        .with_message_id(result.job_id.as_str().into())
        .with_correlation_id(correlation)
        .with_timestamp(now_us / 1_000_000)
        .with_type("warren.result".into())
        .with_headers(headers);
    let (exchange, routing_key, must_route) = match input.reply_to() {
        Some(reply_to) => (String::new(), reply_to.to_string(), false),
        None => (results.exchange.to_owned(), result.kind.clone(), results.has_queue),
    };
    let purpose = if result.error.is_some() { Purpose::ErrorResult } else { Purpose::Result { must_route } };
    Ok(Letter { purpose, exchange, routing_key, body: Cow::Owned(body), properties })
}

/// The job again, in the delay queue `queue`, as attempt `next_attempt`, expiring after `ttl`.
pub fn retry<'a>(
    input: Input<'a>,
    failure: FailureRecord<'_>,
    next_attempt: u32,
    queue: &str,
    ttl: Duration,
) -> Letter<'a> {
    let mut headers = failure_headers(input, failure);
    fields::set_u64(&mut headers, h::ATTEMPT, u64::from(next_attempt));
    let properties =
        copy_properties(input.properties, headers, false).with_expiration(ttl.as_millis().max(1).to_string().into());
    Letter {
        purpose: Purpose::Retry,
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body: Cow::Borrowed(input.body),
        properties,
    }
}

/// The job again, in the delay queue `queue`, for the same `attempt` (its backend was
/// unavailable: no attempt is spent), with `warren-handbacks` = `handbacks`, expiring after
/// `ttl`. Acked once stored, so that nothing holds it while it waits.
pub fn set_aside<'a>(
    input: Input<'a>,
    failure: FailureRecord<'_>,
    attempt: u32,
    handbacks: u32,
    queue: &str,
    ttl: Duration,
) -> Letter<'a> {
    let mut letter = retry(input, failure, attempt, queue, ttl);
    let mut headers = letter.properties.headers().clone().unwrap_or_default();
    fields::set_u64(&mut headers, h::HANDBACKS, u64::from(handbacks));
    letter.properties = letter.properties.with_headers(headers);
    letter.purpose = Purpose::SetAside;
    letter
}

/// The job unchanged (same attempt, same headers) in the delay queue `queue`, expiring after
/// `ttl`: its `not_before` is ahead. Acked once stored, so that nothing holds it while it waits.
pub fn delay<'a>(input: Input<'a>, queue: &str, ttl: Duration) -> Letter<'a> {
    let mut headers = input.properties.headers().clone().unwrap_or_default();
    keep_origin(&mut headers, input);
    let properties =
        copy_properties(input.properties, headers, false).with_expiration(ttl.as_millis().max(1).to_string().into());
    Letter {
        purpose: Purpose::Delay,
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body: Cow::Borrowed(input.body),
        properties,
    }
}

/// The job with the reason it was given up, to the dead-letter exchange (key = work queue).
pub fn dead_letter<'a>(
    input: Input<'a>,
    failure: FailureRecord<'_>,
    attempt: u32,
    reason: &str,
    dead_letter_exchange: &str,
) -> Letter<'a> {
    let mut headers = failure_headers(input, failure);
    fields::set_u64(&mut headers, h::ATTEMPTS, u64::from(attempt) + 1);
    fields::set_str(&mut headers, h::DEAD_REASON, reason);
    let properties = copy_properties(input.properties, headers, false);
    Letter {
        purpose: Purpose::DeadLetter,
        exchange: dead_letter_exchange.to_owned(),
        routing_key: failure.queue.to_owned(),
        body: Cow::Borrowed(input.body),
        properties,
    }
}

/// A count a requeued copy records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recount {
    /// Unchanged (a hand-back on drain).
    Nothing,
    /// It came back unanswered: `warren-redeliveries` = n.
    Returns(u32),
    /// Handed back after a refused publish: `warren-handbacks` = n.
    HandBacks(u32),
}

/// The job put back at the end of `queue` (a work queue or a returned lane), with `count`
/// recorded.
pub fn requeue<'a>(input: Input<'a>, queue: &str, count: Recount) -> Letter<'a> {
    let mut headers = input.properties.headers().clone().unwrap_or_default();
    match count {
        Recount::Nothing => {}
        Recount::Returns(n) => fields::set_u64(&mut headers, h::REDELIVERIES, u64::from(n)),
        Recount::HandBacks(n) => fields::set_u64(&mut headers, h::HANDBACKS, u64::from(n)),
    }
    keep_origin(&mut headers, input);
    Letter {
        purpose: Purpose::Requeue,
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body: Cow::Borrowed(input.body),
        properties: copy_properties(input.properties, headers, true),
    }
}

/// Headers every failure updates: the last error, when, by whom, and (once) where the job came
/// from; the first failure's time is kept across retries.
fn failure_headers(input: Input<'_>, f: FailureRecord<'_>) -> FieldTable {
    let mut headers = input.properties.headers().clone().unwrap_or_default();
    let message = f.error.bounded_message();
    fields::set_str(&mut headers, h::ERROR_CLASS, f.error.class().as_str());
    fields::set_str(&mut headers, h::ERROR_TYPE, f.error.error_type());
    fields::set_str(&mut headers, h::ERROR_MESSAGE, message);
    fields::set_u64(&mut headers, h::FAILED_AT, f.now_ms);
    fields::set_str(&mut headers, h::CONSUMER, f.worker_id);
    fields::set_str(&mut headers, h::ORIGINAL_QUEUE, f.queue);
    if fields::get(Some(&headers), h::FIRST_FAILED_AT).is_none() {
        fields::set_u64(&mut headers, h::FIRST_FAILED_AT, f.now_ms);
    }
    keep_origin(&mut headers, input);
    headers
}

/// Records where the job was published, once. Copies Warren republishes (retries, requeued
/// copies) travel through the default exchange; a replay needs the first origin.
fn keep_origin(headers: &mut FieldTable, input: Input<'_>) {
    if fields::get(Some(headers), h::ORIGINAL_EXCHANGE).is_none() {
        fields::set_str(headers, h::ORIGINAL_EXCHANGE, input.exchange);
        fields::set_str(headers, h::ORIGINAL_ROUTING_KEY, input.routing_key);
    }
}

/// The input's properties with new headers, persistent, without `user_id`, and without
/// `expiration` unless `keep_expiration`.
fn copy_properties(input: &BasicProperties, headers: FieldTable, keep_expiration: bool) -> BasicProperties {
    let mut p = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    macro_rules! keep {
        ($($get:ident => $set:ident),*) => {$(
            if let Some(v) = input.$get() {
                p = p.$set(v.clone());
            }
        )*};
    }
    keep!(content_type => with_content_type, content_encoding => with_content_encoding,
        priority => with_priority, correlation_id => with_correlation_id, reply_to => with_reply_to,
        message_id => with_message_id, timestamp => with_timestamp, kind => with_type,
        app_id => with_app_id, cluster_id => with_cluster_id);
    if let (true, Some(e)) = (keep_expiration, input.expiration()) {
        p = p.with_expiration(e.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_props() -> BasicProperties {
        let mut headers = FieldTable::default();
        fields::set_u64(&mut headers, h::ATTEMPT, 1);
        fields::set_str(&mut headers, "custom", "kept");
        BasicProperties::default()
            .with_message_id("job-1".into())
            .with_content_type("application/json".into())
            .with_expiration("5000".into())
            .with_user_id("someone-else".into())
            .with_reply_to("replies".into())
            .with_headers(headers)
    }

    fn input(props: &BasicProperties) -> Input<'_> {
        Input { exchange: "warren.jobs", routing_key: "fault", body: b"{}", properties: props }
    }

    fn record(error: &JobError) -> FailureRecord<'_> {
        FailureRecord { error, queue: "warren.fault", worker_id: "w1", now_ms: 1_000 }
    }

    #[test]
    fn a_dead_letter_keeps_the_job_and_its_reason_but_not_its_expiration() {
        let props = input_props();
        let error = JobError::CorruptImage("bad".into());
        let dead = dead_letter(input(&props), record(&error), u32::MAX, "permanent_error", "warren.dlx");
        let p = &dead.properties;
        assert_eq!((dead.exchange.as_str(), dead.routing_key.as_str()), ("warren.dlx", "warren.fault"));
        assert_eq!(p.expiration(), &None, "a dead letter must not vanish");
        assert_eq!(p.user_id(), &None);
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("job-1"));
        assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), Some("replies"));
        assert_eq!(p.delivery_mode(), &Some(2));
        let hs = p.headers().as_ref();
        assert_eq!(fields::get_u64(hs, h::ATTEMPTS), Some(u64::from(u32::MAX) + 1), "no overflow");
        assert_eq!(fields::get_str(hs, h::DEAD_REASON).as_deref(), Some("permanent_error"));
        assert_eq!(fields::get_str(hs, h::ERROR_TYPE).as_deref(), Some("corrupt_image"));
        assert_eq!(fields::get_str(hs, h::ORIGINAL_EXCHANGE).as_deref(), Some("warren.jobs"));
        assert_eq!(fields::get_str(hs, "custom").as_deref(), Some("kept"));
    }

    #[test]
    fn a_dead_letters_error_message_is_at_most_2_kib_in_bytes() {
        let props = input_props();
        let error = JobError::UnknownKind("k".repeat(5_000));
        let dead = dead_letter(input(&props), record(&error), 0, "permanent_error", "warren.dlx");
        let message = fields::get_str(dead.properties.headers().as_ref(), h::ERROR_MESSAGE).expect("a message");
        assert!(message.len() <= 2048 && message.ends_with('…'), "{} bytes", message.len());
    }

    #[test]
    fn a_retry_copy_expires_after_its_delay_with_the_next_attempt() {
        let props = input_props();
        let error = JobError::Injected("x".into());
        let copy = retry(input(&props), record(&error), 2, "warren.fault.retry.400ms", Duration::from_millis(437));
        assert_eq!((copy.exchange.as_str(), copy.routing_key.as_str()), ("", "warren.fault.retry.400ms"));
        assert_eq!(copy.properties.expiration().as_ref().map(|s| s.as_str()), Some("437"));
        assert_eq!(fields::get_u64(copy.properties.headers().as_ref(), h::ATTEMPT), Some(2));
        assert_eq!(fields::get_u64(copy.properties.headers().as_ref(), h::FIRST_FAILED_AT), Some(1_000));
    }

    #[test]
    fn a_requeued_copy_counts_returns_only_when_asked() {
        let props = input_props();
        let lane = requeue(input(&props), "warren.fault.returned", Recount::Returns(2));
        assert_eq!(fields::get_u64(lane.properties.headers().as_ref(), h::REDELIVERIES), Some(2));
        let back = requeue(input(&props), "warren.fault", Recount::Nothing);
        assert_eq!(fields::get_u64(back.properties.headers().as_ref(), h::REDELIVERIES), None);
        assert_eq!(back.properties.user_id(), &None);
        let refused = requeue(input(&props), "warren.fault", Recount::HandBacks(3));
        assert_eq!(fields::get_u64(refused.properties.headers().as_ref(), h::HANDBACKS), Some(3));
    }

    #[test]
    fn a_result_that_cannot_be_encoded_is_an_error_not_a_drop() {
        use warren_common::fault::FaultOutput;
        let output =
            warren_common::Output::new::<warren_common::fault::Fault>(FaultOutput { attempt: 0, unencodable: true });
        let r = JobResult::ok("job-1".into(), "fault".into(), output, 0, "w".into(), Default::default());
        let results = ResultsRoute { exchange: "warren.results", has_queue: true };
        let e = result(&input_props(), &r, Encoding::Json, results, 0).unwrap_err();
        assert_eq!(e.error_type(), "encode_failed");
        let ok = JobResult::failed("job-1".into(), "fault".into(), &e, 0, "w".into(), Default::default());
        let letter = result(&input_props(), &ok, Encoding::Json, results, 0).expect("error result encodes");
        assert_eq!((letter.purpose, letter.routing_key.as_str()), (Purpose::ErrorResult, "replies"));
    }
}
