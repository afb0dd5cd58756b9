//! Publishing with publisher confirms, pipelined. A publish is done only when the broker
//! confirmed it; with `mandatory`, a message no queue would take comes back as
//! [`PublishError::Unroutable`] instead of vanishing.
//!
//! Publishes share a few long-lived confirm channels ([`lane`]), many in flight on each, and
//! every outcome is charged to its own message whatever order the broker acks in: confirm
//! numbers are taken in the order frames go out, and a returned message is recognised by the
//! tag it carries (`warren-publish-tag`), not by which confirm lapin completes next
//! ([`ledger`] says why that is exact). `docs/reliability.md` has the broker's guarantees this
//! relies on.
//!
//! The whole publish (a free slot, sending, the confirm) is bounded by the confirm timeout: a
//! connection the broker blocks (memory or disk alarm) does not hang a caller.

mod lane;
pub mod ledger;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Semaphore;

use lane::{Lane, NotSent};
use ledger::Verdict;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unroutable: no queue is bound to exchange {exchange:?} for routing key {routing_key:?} ({reply})")]
    Unroutable { exchange: String, routing_key: String, reply: String },
    #[error("the broker refused (nacked) the message for exchange {exchange:?}: it was not stored")]
    Nacked { exchange: String },
    #[error("whether the broker stored the message cannot be told ({0}); treated as not stored")]
    Uncertain(String),
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker error while publishing: {0}")]
    Amqp(#[from] lapin::Error),
}

impl PublishError {
    /// The broker closed the channel with 404 NOT_FOUND: an exchange published to does not
    /// exist (deleted under us). Every publish in flight on that channel fails with the same
    /// error: the one that met the missing exchange and those after it were not stored (the
    /// broker drops what follows a channel error), but one sent before it may have been, so
    /// publishing them again once the topology is declared again may store a second copy (at
    /// least once).
    pub fn missing_exchange(&self) -> bool {
        matches!(self, Self::Amqp(e) if not_found(e))
    }

    /// How a publish ended, as a fixed metric label: `acked` (for `Ok`), `unroutable`, `nacked`,
    /// `timeout` or `error`.
    pub fn outcome(result: &Result<(), PublishError>) -> &'static str {
        match result {
            Ok(()) => "acked",
            Err(Self::Unroutable { .. }) => "unroutable",
            Err(Self::Nacked { .. } | Self::Uncertain(_)) => "nacked",
            Err(Self::ConfirmTimeout(_)) => "timeout",
            Err(Self::Amqp(_)) => "error",
        }
    }
}

/// Pipelined confirm channels on one connection.
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: Arc<Connection>,
    control: Channel,
    lanes: Vec<Slot>,
    next: AtomicUsize,
    /// At most this many publishes in flight; more wait for one to end.
    slots: Arc<Semaphore>,
    confirm_timeout: Duration,
    /// Publishes sent and not yet answered by the broker, over every lane.
    unanswered: Arc<AtomicUsize>,
}

/// One lane's place: the lane in use, replaced when its channel fails.
#[derive(Debug, Default)]
struct Slot {
    current: Mutex<Option<Arc<Lane>>>,
    /// Held while a new channel opens, so that one opens, not one per waiting publish.
    opening: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// Default bound on publishes in flight: well above the load generator's concurrency (64);
    /// it bounds memory (each holds its body until confirmed), not speed.
    pub const DEFAULT_IN_FLIGHT: usize = 256;

    /// Confirm channels per publisher (`warren-bench --scenarios publish` measures 1, 2 and 4).
    pub const DEFAULT_LANES: usize = 2;

    /// A publisher on `connection` with up to `in_flight` publishes in flight, on
    /// [`Self::DEFAULT_LANES`] confirm channels.
    pub async fn open(
        connection: Arc<Connection>,
        confirm_timeout: Duration,
        in_flight: usize,
    ) -> Result<Self, lapin::Error> {
        Self::open_with_lanes(connection, confirm_timeout, in_flight, Self::DEFAULT_LANES).await
    }

    /// As [`Self::open`], on `lanes` confirm channels.
    pub async fn open_with_lanes(
        connection: Arc<Connection>,
        confirm_timeout: Duration,
        in_flight: usize,
        lanes: usize,
    ) -> Result<Self, lapin::Error> {
        let control = connection.create_channel().await?;
        let lanes: Vec<Slot> = (0..lanes.max(1)).map(|_| Slot::default()).collect();
        let unanswered = Arc::new(AtomicUsize::new(0));
        // The first lane opens now, so that a broker refusing channels fails here.
        *lock(&lanes[0].current) = Some(Lane::open(&connection, unanswered.clone()).await?);
        let inner = Inner {
            connection,
            control,
            lanes,
            next: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            confirm_timeout,
            unanswered,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A channel for declarations and deletions (not for publishing).
    pub fn channel(&self) -> &Channel {
        &self.inner.control
    }

    /// Whether the connection behind this publisher is still up.
    pub fn is_connected(&self) -> bool {
        self.inner.connection.status().connected()
    }

    /// Publishes sent and not yet answered by the broker (confirmed, refused, or failed with
    /// their channel), over every lane, probes included. A caller that stopped waiting (its
    /// confirm timeout) keeps its place in the in-flight bound until the answer comes, so this
    /// never exceeds that bound plus one probe per lane: nothing piles up while the broker
    /// holds confirms back (a memory alarm), however long.
    pub fn unanswered(&self) -> usize {
        self.inner.unanswered.load(Ordering::Relaxed)
    }

    /// Probes the lanes in use have sent to settle a publish (see `ledger.rs`).
    pub fn probes(&self) -> u64 {
        self.inner.lanes.iter().filter_map(|s| lock(&s.current).clone()).map(|l| l.probes()).sum()
    }

    /// Publishes and waits for the broker's confirm, within the confirm timeout. `Ok` means a
    /// queue holds the message.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let inner = &self.inner;
        let timeout = inner.confirm_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // The semaphore lives as long as the publisher and is never closed.
        let Ok(Ok(mut permit)) = tokio::time::timeout_at(deadline, inner.slots.clone().acquire_owned()).await else {
            return Err(PublishError::ConfirmTimeout(timeout));
        };
        let slot = &inner.lanes[inner.next.fetch_add(1, Ordering::Relaxed) % inner.lanes.len()];
        let mut properties = properties;
        let verdict = loop {
            let lane = match tokio::time::timeout_at(deadline, self.lane(slot)).await {
                Ok(lane) => lane?,
                Err(_) => return Err(PublishError::ConfirmTimeout(timeout)),
            };
            match lane.send(exchange, routing_key, body, properties, mandatory, permit) {
                Ok(verdict) => break verdict,
                // It broke since it was picked: the next call opens another.
                Err(NotSent::Unusable(back, props)) => (permit, properties) = (back, *props),
                Err(NotSent::Failed(e)) => return Err(e.into()),
            }
        };
        match tokio::time::timeout_at(deadline, verdict).await {
            Err(_) => Err(PublishError::ConfirmTimeout(timeout)),
            Ok(Err(_)) => Err(PublishError::Uncertain("the publisher closed before the confirm came".into())),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Ok(Ok(verdict))) => match verdict {
                Verdict::Stored => Ok(()),
                Verdict::Returned(reply) => Err(PublishError::Unroutable {
                    exchange: exchange.to_owned(),
                    routing_key: routing_key.to_owned(),
                    reply,
                }),
                Verdict::Refused => Err(PublishError::Nacked { exchange: exchange.to_owned() }),
                Verdict::Failed => Err(PublishError::Uncertain("the channel failed".into())),
                Verdict::Unknown(why) => Err(PublishError::Uncertain(why.into())),
            },
        }
    }

    /// The slot's lane, opening a new one when it has none or its channel failed.
    async fn lane(&self, slot: &Slot) -> Result<Arc<Lane>, lapin::Error> {
        if let Some(lane) = lock(&slot.current).as_ref().filter(|l| l.usable()) {
            return Ok(lane.clone());
        }
        let _opening = slot.opening.lock().await;
        if let Some(lane) = lock(&slot.current).as_ref().filter(|l| l.usable()) {
            return Ok(lane.clone());
        }
        let lane = Lane::open(&self.inner.connection, self.inner.unanswered.clone()).await?;
        *lock(&slot.current) = Some(lane.clone());
        Ok(lane)
    }
}

/// Whether the broker closed the channel with 404 NOT_FOUND (an exchange or queue named by the
/// call does not exist).
pub fn not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// `properties` without the tag a publisher put in them (`warren-publish-tag`): for tools that
/// copy messages (`warrenctl dump`), to which the tag of the publish that stored a message is
/// not part of it. A header table left empty goes too.
pub fn without_tag(properties: &BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers() else { return properties.clone() };
    if !headers.inner().contains_key(warren_common::headers::PUBLISH_TAG) {
        return properties.clone();
    }
    let mut kept = lapin::types::FieldTable::default();
    for (k, v) in headers.inner().iter().filter(|(k, _)| k.as_str() != warren_common::headers::PUBLISH_TAG) {
        kept.insert(k.clone(), v.clone());
    }
    if !kept.inner().is_empty() {
        return properties.clone().with_headers(kept);
    }
    // No way to unset one property: built again from the others.
    let p = properties;
    let mut out = BasicProperties::default();
    macro_rules! keep {
        ($($get:ident => $with:ident),*) => {$( if let Some(v) = p.$get().clone() { out = out.$with(v); } )*};
    }
    keep!(content_type => with_content_type, content_encoding => with_content_encoding,
          delivery_mode => with_delivery_mode, priority => with_priority, correlation_id => with_correlation_id,
          reply_to => with_reply_to, expiration => with_expiration, message_id => with_message_id,
          timestamp => with_timestamp, kind => with_type, user_id => with_user_id, app_id => with_app_id,
          cluster_id => with_cluster_id);
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn without_tag_leaves_every_other_property_and_header_as_it_was() {
        let tagged = |mut h: FieldTable| {
            h.insert(warren_common::headers::PUBLISH_TAG.into(), AMQPValue::LongLongInt(7));
            h
        };
        let mut own = FieldTable::default();
        own.insert("x".into(), AMQPValue::LongInt(1));
        let base = BasicProperties::default()
            .with_message_id("m".into())
            .with_priority(3)
            .with_type("t".into())
            .with_timestamp(9)
            .with_expiration("60".into());
        assert_eq!(without_tag(&base.clone().with_headers(tagged(own.clone()))), base.clone().with_headers(own));
        assert_eq!(without_tag(&base.clone().with_headers(tagged(FieldTable::default()))), base, "no headers left");
        assert_eq!(without_tag(&base), base);
    }
}
