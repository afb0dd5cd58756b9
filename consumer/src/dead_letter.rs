//! Dead letters: the original message, unchanged, with Warren's headers saying why it was given
//! up and where it came from, so an operator can read the reason and replay it to its origin.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use warren_common::headers as h;
use warren_common::{ErrorClass, JobError};
use warren_infra::fields;

/// The longest error message kept in a header; the rest is cut (headers are not for essays).
const MAX_MESSAGE_LEN: usize = 2048;

/// Why a job was given up: a permanent error, or a transient one on its last attempt (there is
/// no retry yet, so the first attempt is the last).
pub fn reason(error: &JobError) -> &'static str {
    match error.class() {
        ErrorClass::Permanent => "permanent_error",
        ErrorClass::Transient => "attempts_exhausted",
    }
}

/// The properties of the dead letter: the original ones plus Warren's failure headers.
pub fn properties(
    delivery: &Delivery,
    queue: &str,
    error: &JobError,
    attempt: u32,
    worker_id: &str,
    failed_at_ms: u64,
) -> BasicProperties {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let mut message = error.to_string();
    if message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    set_failure_headers(&mut headers, error, &message);
    fields::set_str(
        &mut headers,
        h::ORIGINAL_EXCHANGE,
        delivery.exchange.as_str(),
    );
    fields::set_str(
        &mut headers,
        h::ORIGINAL_ROUTING_KEY,
        delivery.routing_key.as_str(),
    );
    fields::set_str(&mut headers, h::ORIGINAL_QUEUE, queue);
    fields::set_u64(&mut headers, h::ATTEMPT, u64::from(attempt));
    fields::set_u64(&mut headers, h::FAILED_AT, failed_at_ms);
    fields::set_str(&mut headers, h::CONSUMER, worker_id);
    // Keep the message durable whatever the publisher chose: a dead letter is a record.
    delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
}

fn set_failure_headers(headers: &mut FieldTable, error: &JobError, message: &str) {
    fields::set_str(headers, h::DEAD_REASON, reason(error));
    fields::set_str(headers, h::ERROR_CLASS, error.class().as_str());
    fields::set_str(headers, h::ERROR_TYPE, error.error_type());
    fields::set_str(headers, h::ERROR_MESSAGE, message);
}
