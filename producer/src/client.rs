//! The producer client: a confirm-mode channel, and optionally a private reply queue.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use warren_common::headers as h;
use warren_common::{Control, Encoding, Job, JobEnvelope, JobError, JobResult, Kind};
use warren_infra::backoff::Backoff;
use warren_infra::{PublishError, Publisher, Settings, fields, topology};

use crate::metrics::ProducerMetrics;
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
    #[error("lost the broker and could not reconnect in time: {0}")]
    Reconnect(String),
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
    /// AMQP `priority` (0-255; honoured up to the route's `max_priority`, where it has one).
    pub priority: Option<u8>,
    /// The job's deadline and its earliest start, in the envelope (see [`Self::timeout`],
    /// [`Self::delay`]).
    pub control: Control,
    /// Where the worker writes the output's bytes (a prefix: `s3://bucket/out/`,
    /// `file:///mnt/share/out/`); the result then carries references ([`Self::output_to`]).
    pub output_to: Option<String>,
}

impl PublishOptions {
    /// Not worth doing `timeout` from now: never started nor retried after that.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.control.deadline_ms = Some(ms_from_now(timeout));
        self
    }

    /// Not worth doing after `deadline`.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.control.deadline_ms = Some(unix_ms(deadline));
        self
    }

    /// Not to start before `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.control.not_before_ms = Some(ms_from_now(delay));
        self
    }

    /// Not to start before `at`.
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.control.not_before_ms = Some(unix_ms(at));
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The output's bytes fields go to objects under `prefix` (`{prefix}{job id}/{n}.{ext}`)
    /// rather than into the result, which carries references to them
    /// ([`warren_common::Ref::from_bytes`] reads one back).
    pub fn output_to(mut self, prefix: impl Into<String>) -> Self {
        self.output_to = Some(prefix.into());
        self
    }
}

/// Unix milliseconds (0 before 1970).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Unix milliseconds `after` from now, saturating (a `Duration::MAX` timeout is no deadline's
/// panic).
fn ms_from_now(after: Duration) -> u64 {
    unix_ms(SystemTime::now()).saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
}

/// A published job; `wait` for its result when one was asked for.
#[derive(Debug)]
pub struct Ticket {
    pub job_id: String,
    pub correlation_id: String,
    pub routing_key: String,
    result: Option<Pending>,
    metrics: ProducerMetrics,
}

impl Ticket {
    pub async fn wait(self, timeout: Duration) -> Result<JobResult, ProducerError> {
        let mut pending = self.result.ok_or(ProducerError::RepliesDisabled)?;
        match tokio::time::timeout(timeout, &mut pending.rx).await {
            Ok(Ok(result)) => {
                self.metrics.result(result.status == warren_common::ResultStatus::Ok);
                Ok(result)
            }
            Ok(Err(_)) => Err(ProducerError::RepliesClosed(self.job_id)),
            Err(_) => Err(ProducerError::Timeout { job_id: self.job_id, timeout }),
        }
    }
}

/// The current connection and its confirm-mode channel; replaced wholesale on reconnection.
#[derive(Debug)]
struct Link {
    connection: Arc<lapin::Connection>,
    publisher: Publisher,
    generation: u64,
}

#[derive(Debug)]
pub struct Producer {
    settings: Arc<Settings>,
    link: tokio::sync::RwLock<Link>,
    replies: Option<Replies>,
    metrics: ProducerMetrics,
}

impl Producer {
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let link = open_link(&settings, 0).await?;
        let metrics = ProducerMetrics::new();
        Ok(Self { link: tokio::sync::RwLock::new(link), settings: Arc::new(settings), replies: None, metrics })
    }

    pub fn metrics(&self) -> &ProducerMetrics {
        &self.metrics
    }

    /// How many times this producer has reconnected.
    pub async fn reconnects(&self) -> u64 {
        self.link.read().await.generation
    }

    /// Declares exchanges, queues and bindings (idempotent); consumers do the same at start-up.
    pub async fn declare_topology(&self) -> anyhow::Result<()> {
        let link = self.link.read().await;
        topology::declare(link.publisher.channel(), &self.settings).await
    }

    /// Declares this producer's reply queue and starts collecting results by correlation id.
    pub async fn enable_replies(&mut self) -> anyhow::Result<()> {
        if self.replies.is_none() {
            self.replies = Some(
                Replies::start(&self.settings.broker, warren_infra::topology::reply_queue_args(&self.settings)).await?,
            );
        }
        Ok(())
    }

    /// Cancels jobs by id: none of them starts after this returns (on any worker, one started
    /// later included, within `topology.cancel_retention_s`); each is answered with error type
    /// `cancelled`. A running job is told through its context. Unknown ids are no error.
    pub async fn cancel(&self, job_ids: &[&str]) -> anyhow::Result<()> {
        let publisher = self.link.read().await.publisher.clone();
        warren_infra::cancels::cancel(&publisher, &self.settings, job_ids).await.map(|_| ())
    }

    /// Publishes a job of kind `K`, typed: `producer.submit::<Resize>(job, &opts)`. Its result
    /// reads back with `result.output_as::<K>()`.
    pub async fn submit<K: Kind>(&self, input: K::Input, opts: &PublishOptions) -> Result<Ticket, ProducerError> {
        self.publish(&Job::new::<K>(input), opts).await
    }

    /// Publishes a job to the jobs exchange with routing key = its kind.
    pub async fn publish(&self, job: &Job, opts: &PublishOptions) -> Result<Ticket, ProducerError> {
        let encoding = opts.encoding.unwrap_or(self.settings.producer.encoding);
        let body = JobEnvelope::encode_full(job, encoding, opts.control, opts.output_to.as_deref())?;
        self.publish_raw(job.kind(), &body, Some(encoding.content_type()), opts).await
    }

    /// Publishes any body, as any publisher in any language could; for interoperability tests
    /// and for replaying captured messages.
    ///
    /// Returns only once the broker confirmed the job. If the connection is lost, the producer
    /// reconnects and publishes again (same job id) until `producer.publish_retry_ms` has
    /// passed; a job published twice that way is an at-least-once duplicate, marked by its id.
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
        if let Some(priority) = opts.priority {
            props = props.with_priority(priority);
        }
        let mut result = None;
        if opts.want_result {
            let replies = self.replies.as_ref().ok_or(ProducerError::RepliesDisabled)?;
            props = props.with_reply_to(replies.queue().into());
            // Registered before publishing: the result may arrive before the confirm does.
            result = Some(replies.register(&correlation_id));
        }
        let exchange = self.settings.topology.jobs_exchange.clone();
        let give_up = Instant::now() + Duration::from_millis(self.settings.producer.publish_retry_ms);
        let mut backoff = Backoff::new(
            Duration::from_millis(self.settings.broker.reconnect_min_ms),
            Duration::from_millis(self.settings.broker.reconnect_max_ms),
        );
        loop {
            let (publisher, generation) = {
                let link = self.link.read().await;
                (link.publisher.clone(), link.generation)
            };
            let started = Instant::now();
            let published = publisher.publish(&exchange, routing_key, body, props.clone(), true).await;
            self.metrics.published(routing_key, PublishError::outcome(&published), started.elapsed());
            match published {
                Ok(()) => {
                    let metrics = self.metrics.clone();
                    return Ok(Ticket { job_id, correlation_id, routing_key: routing_key.to_owned(), result, metrics });
                }
                Err(e) if Instant::now() < give_up => match after_failure(&e) {
                    Again::OnANewConnection => {
                        tracing::warn!(error = %e, job_id = %job_id, "publish not confirmed; reconnecting to publish again");
                        self.metrics.connection(false, false);
                        self.relink(generation, give_up).await?;
                    }
                    Again::AfterAPause => {
                        // The connection is fine but the broker did not store it (a quorum
                        // queue between leaders, say): the same job again after a pause, never
                        // past the retry budget.
                        let pause = backoff.next_delay().min(give_up.saturating_duration_since(Instant::now()));
                        tracing::warn!(error = %e, job_id = %job_id, ?pause, "the broker refused the publish; publishing again");
                        tokio::time::sleep(pause).await;
                    }
                    Again::No => return Err(self.give_up(&correlation_id, e)),
                },
                Err(e) => return Err(self.give_up(&correlation_id, e)),
            }
        }
    }

    /// Forgets the reply of a job that could not be published, and says why.
    fn give_up(&self, correlation_id: &str, e: PublishError) -> ProducerError {
        if let Some(replies) = &self.replies {
            replies.forget(correlation_id);
        }
        e.into()
    }

    /// Replaces the link of generation `seen` (unless another task already did) with a new
    /// connection, waiting with capped, jittered backoff; resumes the reply queue on it.
    async fn relink(&self, seen: u64, give_up: Instant) -> Result<(), ProducerError> {
        let mut link = self.link.write().await;
        if link.generation != seen {
            return Ok(());
        }
        let broker = &self.settings.broker;
        let mut backoff = Backoff::new(
            Duration::from_millis(broker.reconnect_min_ms),
            Duration::from_millis(broker.reconnect_max_ms),
        );
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            // The reply queue has its own connection and reconnects by itself.
            match open_link(&self.settings, seen + 1).await {
                Ok(fresh) => {
                    let old = std::mem::replace(&mut *link, fresh);
                    let _ = old.connection.close(200, "replaced".into()).await;
                    self.metrics.connection(true, true);
                    tracing::info!("producer reconnected");
                    return Ok(());
                }
                Err(e) if Instant::now() < give_up => tracing::warn!(error = format!("{e:#}"), "reconnect failed"),
                Err(e) => return Err(ProducerError::Reconnect(format!("{e:#}"))),
            }
        }
    }

    /// Closes the connection; the reply queue is deleted (results still due are dropped).
    pub async fn close(self) {
        let link = self.link.into_inner();
        if let Some(replies) = &self.replies {
            // First, so that deleting the queue does not look like a lost broker to it.
            replies.stop().await;
            let _ = link.publisher.channel().queue_delete(replies.queue().into(), Default::default()).await;
        }
        // Close the channel before the connection: closing a connection under an open channel
        // makes lapin log a spurious channel-state error.
        let _ = link.publisher.channel().close(200, "producer done".into()).await;
        let _ = link.connection.close(200, "producer done".into()).await;
    }
}

async fn open_link(settings: &Settings, generation: u64) -> anyhow::Result<Link> {
    let connection = Arc::new(warren_infra::connect(&settings.broker, "producer").await?);
    let timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
    let publisher = Publisher::open(connection.clone(), timeout, Publisher::DEFAULT_IN_FLIGHT)
        .await
        .context("open publishing channels")?;
    Ok(Link { connection, publisher, generation })
}

/// Whether a publish that failed is tried again (within `producer.publish_retry_ms`), and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// The connection failed or the confirm never came: on a fresh connection.
    OnANewConnection,
    /// The broker answered that it did not store it (a nack), or whether it did cannot be told:
    /// on the same connection, after a growing pause.
    AfterAPause,
    /// Unroutable: no queue is bound for the kind, which waiting does not change.
    No,
}

fn after_failure(e: &PublishError) -> Again {
    match e {
        PublishError::Amqp(_) | PublishError::ConfirmTimeout(_) => Again::OnANewConnection,
        PublishError::Nacked { .. } | PublishError::Uncertain(_) => Again::AfterAPause,
        PublishError::Unroutable { .. } => Again::No,
    }
}

/// A fresh W3C trace context: version 00, random trace and span ids, sampled.
fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_publish_is_tried_again_and_an_unroutable_one_is_not() {
        assert_eq!(after_failure(&PublishError::Nacked { exchange: "x".into() }), Again::AfterAPause);
        assert_eq!(after_failure(&PublishError::Uncertain("y".into())), Again::AfterAPause);
        assert_eq!(after_failure(&PublishError::ConfirmTimeout(Duration::from_secs(1))), Again::OnANewConnection);
        let unroutable =
            PublishError::Unroutable { exchange: "x".into(), routing_key: "k".into(), reply: "NO_ROUTE".into() };
        assert_eq!(after_failure(&unroutable), Again::No);
    }

    #[test]
    fn job_control_options_are_unix_ms_and_never_overflow() {
        let now = unix_ms(SystemTime::now());
        let opts = PublishOptions::default().timeout(Duration::from_secs(10)).delay(Duration::from_secs(2));
        let (deadline, not_before) = (opts.control.deadline_ms.unwrap_or(0), opts.control.not_before_ms.unwrap_or(0));
        assert!((now + 10_000..now + 11_000).contains(&deadline), "{deadline} vs {now}");
        assert!((now + 2_000..now + 3_000).contains(&not_before), "{not_before} vs {now}");
        let far = PublishOptions::default().timeout(Duration::MAX).delay(Duration::MAX);
        assert_eq!((far.control.deadline_ms, far.control.not_before_ms), (Some(u64::MAX), Some(u64::MAX)));
        assert_eq!(PublishOptions::default().deadline(UNIX_EPOCH).control.deadline_ms, Some(0));
        assert_eq!(PublishOptions::default().priority(9).priority, Some(9));
    }
}
