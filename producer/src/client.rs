//! The producer client: a confirm-mode channel, and optionally a private reply queue.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use warren_common::headers as h;
use warren_common::{Encoding, Job, JobEnvelope, JobError, JobResult};
use warren_infra::{PublishError, Publisher, Settings, fields, topology};

use crate::replies::{Pending, Replies};

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("encoding the job: {0}")]
    Encode(#[from] JobError),
    #[error("no result for job {job_id} within {timeout:?}")]
    Timeout { job_id: String, timeout: Duration },
    #[error("this producer was not set up to receive results (call enable_replies first)")]
    RepliesDisabled,
    #[error("the reply consumer stopped before the result of job {0} arrived")]
    RepliesClosed(String),
}

/// Per-publish choices.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Encoding of the envelope; the configured default when `None`.
    pub encoding: Option<Encoding>,
    /// Ask for the result on this producer's reply queue.
    pub want_result: bool,
    /// Job id (AMQP `message_id`); a fresh UUID when `None`.
    pub job_id: Option<String>,
}

/// A published job; `wait` for its result when one was asked for.
#[derive(Debug)]
pub struct Ticket {
    pub job_id: String,
    pub correlation_id: String,
    pub routing_key: String,
    result: Option<Pending>,
}

impl Ticket {
    pub async fn wait(self, timeout: Duration) -> Result<JobResult, ProducerError> {
        let mut pending = self.result.ok_or(ProducerError::RepliesDisabled)?;
        match tokio::time::timeout(timeout, &mut pending.rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ProducerError::RepliesClosed(self.job_id)),
            Err(_) => Err(ProducerError::Timeout { job_id: self.job_id, timeout }),
        }
    }
}

#[derive(Debug)]
pub struct Producer {
    connection: lapin::Connection,
    publisher: Publisher,
    settings: Arc<Settings>,
    replies: Option<Replies>,
}

impl Producer {
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let connection = warren_infra::connect(&settings.broker, "producer").await?;
        let timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let publisher = Publisher::open(&connection, timeout).await.context("open publishing channel")?;
        Ok(Self { connection, publisher, settings: Arc::new(settings), replies: None })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Declares exchanges, queues and bindings (idempotent); consumers do the same at start-up.
    pub async fn declare_topology(&self) -> anyhow::Result<()> {
        topology::declare(self.publisher.channel(), &self.settings).await
    }

    /// Declares a private reply queue and starts collecting results by correlation id.
    pub async fn enable_replies(&mut self) -> anyhow::Result<()> {
        if self.replies.is_none() {
            self.replies = Some(Replies::start(&self.connection).await?);
        }
        Ok(())
    }

    /// Publishes a job to the jobs exchange with routing key = its kind.
    pub async fn publish(&self, job: &Job, opts: &PublishOptions) -> Result<Ticket, ProducerError> {
        let encoding = opts.encoding.unwrap_or(self.settings.producer.encoding);
        let body = JobEnvelope::encode(job, encoding)?;
        self.publish_raw(job.kind().as_str(), &body, Some(encoding.content_type()), opts).await
    }

    /// Publishes any body, as any publisher in any language could; for interoperability tests
    /// and for replaying captured messages.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        content_type: Option<&str>,
        opts: &PublishOptions,
    ) -> Result<Ticket, ProducerError> {
        let job_id = opts.job_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let mut headers = FieldTable::default();
        fields::set_u64(&mut headers, h::ATTEMPT, 0);
        fields::set_str(&mut headers, h::TRACEPARENT, new_traceparent());
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(job_id.as_str().into())
            .with_correlation_id(correlation_id.as_str().into())
            .with_timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
            .with_app_id("warren-producer".into())
            .with_type(routing_key.into())
            .with_headers(headers);
        if let Some(ct) = content_type {
            props = props.with_content_type(ct.into());
        }
        let mut result = None;
        if opts.want_result {
            let replies = self.replies.as_ref().ok_or(ProducerError::RepliesDisabled)?;
            props = props.with_reply_to(replies.queue().into());
            // Registered before publishing: the result may arrive before the confirm does.
            result = Some(replies.register(&correlation_id));
        }
        let exchange = &self.settings.topology.jobs_exchange;
        if let Err(e) = self.publisher.publish(exchange, routing_key, body, props, true).await {
            if let Some(replies) = &self.replies {
                replies.forget(&correlation_id);
            }
            return Err(e.into());
        }
        Ok(Ticket { job_id, correlation_id, routing_key: routing_key.to_owned(), result })
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "producer done".into()).await;
    }
}

/// A fresh W3C trace context: version 00, random trace and span ids, sampled.
fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}
