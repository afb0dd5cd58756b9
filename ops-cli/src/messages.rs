//! What the commands share of queues and messages: a queue's depth, taking a message unacked,
//! and describing one for people (any kind's job readably, its dead-letter record).

use lapin::Channel;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use warren_common::headers as h;
use warren_common::{Encoding, JobEnvelope};
use warren_infra::fields;

use crate::errors::{CtlError, Result};

/// The number of ready messages in `queue`, or QueueNotFound.
pub async fn depth(conn: &lapin::Connection, queue: &str) -> Result<u32> {
    Ok(counts(conn, queue).await?.0)
}

/// Ready messages and consumers of `queue`, exact (a passive declare), or QueueNotFound. Uses a
/// throwaway channel: a passive declare of a missing queue closes the channel it runs on.
pub async fn counts(conn: &lapin::Connection, queue: &str) -> Result<(u32, u32)> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(|e| {
            if e.to_string().contains("NOT_FOUND") { CtlError::QueueNotFound(queue.to_owned()) } else { e.into() }
        })?;
    let _ = ch.close(200, "done".into()).await;
    Ok((q.message_count(), q.consumer_count()))
}

/// Takes the next message without acking it; None when the queue has no ready message.
pub async fn take(ch: &Channel, queue: &str) -> Result<Option<BasicGetMessage>> {
    Ok(ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await?)
}

/// What an operator wants to know about a message, decoded; image payloads summarised.
pub fn describe(d: &lapin::message::Delivery) -> Value {
    let p = &d.properties;
    let headers = p.headers().as_ref();
    let str_of = |name: &str| fields::get_str(headers, name);
    let encoding = Encoding::from_content_type(p.content_type().as_ref().map(|s| s.as_str()));
    let kind = encoding.and_then(|e| JobEnvelope::peek_kind(&d.data, e));
    let (job, image) = encoding.map(|e| crate::jobview::view(&d.data, e)).unwrap_or_default();
    let mut v = json!({
        "job_id": p.message_id().as_ref().map(|s| s.to_string()),
        "kind": kind,
        "routing_key": d.routing_key.as_str(),
        "content_type": p.content_type().as_ref().map(|s| s.to_string()),
        "bytes": d.data.len(),
        "attempt": fields::get_u64(headers, h::ATTEMPT),
        "redelivered": d.redelivered,
    });
    if let Some(job) = job {
        v["job"] = job;
    }
    if let Some(img) = image {
        v["image"] = img;
    }
    if let Some(reason) = str_of(h::DEAD_REASON) {
        v["dead"] = json!({
            "reason": reason,
            "error_type": str_of(h::ERROR_TYPE),
            "error": str_of(h::ERROR_MESSAGE),
            "attempts": fields::get_u64(headers, h::ATTEMPTS),
            "origin": format!("{}/{}", str_of(h::ORIGINAL_EXCHANGE).unwrap_or_default(),
                              str_of(h::ORIGINAL_ROUTING_KEY).unwrap_or_default()),
            "failed_at_ms": fields::get_u64(headers, h::FAILED_AT),
            "consumer": str_of(h::CONSUMER),
        });
    }
    v
}
