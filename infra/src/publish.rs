//! Publishing with publisher confirms. A publish is done only when the broker confirmed it;
//! with `mandatory`, a message no queue would take comes back as [`PublishError::Unroutable`]
//! instead of vanishing.
//!
//! Why one publish per channel at a time: lapin hands a returned message to whichever confirm it
//! completes next on that channel, and a multiple-ack completes several at once in no set order.
//! On a channel with many publishes in flight, a return can thus be charged to another publish:
//! a dropped message read as stored, a stored one as dropped. Here every publish borrows a confirm
//! channel of its own from a small pool and gives it back only after its confirm came. The broker
//! sends a message's return before its ack, on its channel, so on a channel with a single publish
//! in flight the return belongs to that publish and to nothing else. A channel whose publish
//! failed or timed out is closed and never reused: a late confirm or return from it would pair with
//! the next publish. The returned message's exchange, routing key and message id are checked anyway.
//!
//! The whole publish (taking a channel, sending, waiting for the confirm) is bounded by the
//! confirm timeout: a connection the broker blocks (memory or disk alarm) does not hang a caller.
//!
//! One publish per channel costs throughput (`warren-bench --scenarios publish`: 0.58 of one
//! shared channel at 64 in flight). [`Publisher::publish_either_way`] is for the publishes whose
//! caller acts the same whether the message was routed or returned (a result to a `reply_to`
//! queue: a requester that went away gets nothing either way): they share one pipelined channel,
//! where a nack or a missing confirm still belongs to its own publish, and only the label
//! "returned" could be charged to the wrong one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unroutable: no queue is bound to exchange {exchange:?} for routing key {routing_key:?} ({reply})")]
    Unroutable { exchange: String, routing_key: String, reply: String },
    #[error("the broker refused (nacked) the message for exchange {exchange:?}: it was not stored")]
    Nacked { exchange: String },
    #[error("the broker returned a message that is not the one published ({0}); treated as not stored")]
    Mispaired(String),
    #[error("no confirm from the broker within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker error while publishing: {0}")]
    Amqp(#[from] lapin::Error),
}

impl PublishError {
    /// How a publish ended, as a fixed metric label: `acked` (for `Ok`), `unroutable`, `nacked`,
    /// `timeout` or `error`.
    pub fn outcome(result: &Result<(), PublishError>) -> &'static str {
        match result {
            Ok(()) => "acked",
            Err(Self::Unroutable { .. }) => "unroutable",
            Err(Self::Nacked { .. } | Self::Mispaired(_)) => "nacked",
            Err(Self::ConfirmTimeout(_)) => "timeout",
            Err(Self::Amqp(_)) => "error",
        }
    }
}

/// Confirm channels on one connection, each carrying one publish at a time.
#[derive(Clone, Debug)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: Arc<Connection>,
    control: Channel,
    /// The one pipelined channel of [`Publisher::publish_either_way`], opened on first use.
    shared: tokio::sync::Mutex<Option<Channel>>,
    idle: Mutex<Vec<Channel>>,
    /// At most this many publishes (so channels) at once; more wait for a free one.
    slots: Semaphore,
    confirm_timeout: Duration,
}

impl Publisher {
    /// Default number of publishes in flight at once (channels opened lazily up to it): the
    /// load generator's default concurrency, since a publish holds its channel for a whole
    /// confirm round trip. (16 and 64 measured the same in the relay scenario, within noise.)
    pub const DEFAULT_CHANNELS: usize = 64;

    /// A publisher on `connection` with up to `channels` publishes in flight.
    pub async fn open(
        connection: Arc<Connection>,
        confirm_timeout: Duration,
        channels: usize,
    ) -> Result<Self, lapin::Error> {
        let control = connection.create_channel().await?;
        let first = confirm_channel(&connection).await?;
        let inner = Inner {
            connection,
            control,
            shared: tokio::sync::Mutex::new(None),
            idle: Mutex::new(vec![first]),
            slots: Semaphore::new(channels.max(1)),
            confirm_timeout,
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

    /// Publishes and waits for the broker's confirm, within the confirm timeout.
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
        let _slot = match tokio::time::timeout_at(deadline, inner.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(PublishError::ConfirmTimeout(timeout)),
        };
        let idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let channel = match idle {
            Some(c) if c.status().connected() => c,
            _ => match tokio::time::timeout_at(deadline, confirm_channel(&inner.connection)).await {
                Ok(c) => c?,
                Err(_) => return Err(PublishError::ConfirmTimeout(timeout)),
            },
        };
        let message_id = properties.message_id().as_ref().map(|s| s.as_str().to_owned());
        let send = async {
            let options = BasicPublishOptions { mandatory, ..Default::default() };
            let confirm = channel
                .basic_publish(ShortString::from(exchange), ShortString::from(routing_key), options, body, properties)
                .await?;
            confirm.await
        };
        let confirmation = match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                retire(channel);
                return Err(e.into());
            }
            Err(_) => {
                retire(channel);
                return Err(PublishError::ConfirmTimeout(timeout));
            }
        };
        let verdict = judge(confirmation, exchange, routing_key, message_id.as_deref());
        match &verdict {
            Ok(()) | Err(PublishError::Unroutable { .. }) => {
                inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(channel);
            }
            Err(_) => retire(channel),
        }
        verdict
    }
}

impl Publisher {
    /// Publishes on the shared pipelined channel and waits for the confirm, within the confirm
    /// timeout, for a caller to whom a routed and a returned message are the same: `Ok` means
    /// the broker stored it or returned it (no queue took it); a nack, a timeout or a broken
    /// channel is an error, as with [`Publisher::publish`]. A return is reported as
    /// [`PublishError::Unroutable`] only when it is this message's.
    pub async fn publish_either_way(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let inner = &self.inner;
        let timeout = inner.confirm_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let message_id = properties.message_id().as_ref().map(|s| s.as_str().to_owned());
        let send = async {
            let channel = {
                let mut shared = inner.shared.lock().await;
                match shared.as_ref() {
                    Some(c) if c.status().connected() => c.clone(),
                    _ => {
                        let c = confirm_channel(&inner.connection).await?;
                        *shared = Some(c.clone());
                        c
                    }
                }
            };
            let options = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = channel
                .basic_publish(ShortString::from(exchange), ShortString::from(routing_key), options, body, properties)
                .await?;
            confirm.await
        };
        match tokio::time::timeout_at(deadline, send).await {
            Err(_) => Err(PublishError::ConfirmTimeout(timeout)),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(confirmation)) => match judge(confirmation, exchange, routing_key, message_id.as_deref()) {
                // Another publish's return: on this channel that changes nothing for either.
                Err(PublishError::Mispaired(_)) => Ok(()),
                verdict => verdict,
            },
        }
    }
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Closes a channel that must not carry another publish, without waiting on a broker that may
/// be blocking us.
fn retire(channel: Channel) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), channel.close(200, "retired".into())).await;
    });
}

/// What a confirm says about the one message published on its channel.
fn judge(
    confirmation: Confirmation,
    exchange: &str,
    routing_key: &str,
    message_id: Option<&str>,
) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => {
            let same = returned.delivery.exchange.as_str() == exchange
                && returned.delivery.routing_key.as_str() == routing_key
                && returned.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == message_id;
            if same {
                Err(PublishError::Unroutable {
                    exchange: exchange.to_owned(),
                    routing_key: routing_key.to_owned(),
                    reply: format!("{} {}", returned.reply_code, returned.reply_text),
                })
            } else {
                Err(PublishError::Mispaired(format!(
                    "published to {exchange:?}/{routing_key:?}, returned from {:?}/{:?}",
                    returned.delivery.exchange.as_str(),
                    returned.delivery.routing_key.as_str()
                )))
            }
        }
        // A nack means the broker did not store the message, returned or not.
        Confirmation::Nack(_) => Err(PublishError::Nacked { exchange: exchange.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ack_without_a_return_is_stored() {
        assert!(judge(Confirmation::Ack(None), "x", "k", Some("id")).is_ok());
        assert!(matches!(judge(Confirmation::Nack(None), "x", "k", None), Err(PublishError::Nacked { .. })));
    }
}
