//! Publishing with publisher confirms. A publish is done only when the broker confirmed it;
//! with `mandatory`, a message no queue would take comes back as [`PublishError::Unroutable`]
//! instead of vanishing.
//!
//! Confirms are awaited per message but concurrently: many tasks may publish on one channel and
//! each awaits its own confirm, so throughput does not serialise on one round trip per message.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unroutable: no queue is bound to exchange {exchange:?} for routing key {routing_key:?} ({reply})")]
    Unroutable { exchange: String, routing_key: String, reply: String },
    #[error("the broker refused (nacked) the message for exchange {exchange:?}")]
    Nacked { exchange: String },
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
            Err(Self::Nacked { .. }) => "nacked",
            Err(Self::ConfirmTimeout(_)) => "timeout",
            Err(Self::Amqp(_)) => "error",
        }
    }
}

/// A channel in confirm mode.
#[derive(Clone, Debug)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Publisher {
    pub async fn open(connection: &Connection, confirm_timeout: Duration) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, confirm_timeout })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions { mandatory, ..Default::default() },
                body,
                properties,
            )
            .await?;
        let confirmation = tokio::time::timeout(self.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.confirm_timeout))??;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            }),
            Confirmation::Nack(None) => Err(PublishError::Nacked { exchange: exchange.to_owned() }),
        }
    }
}
