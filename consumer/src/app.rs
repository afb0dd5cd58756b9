//! Building the worker and running it until a shutdown future resolves.
//!
//! Shutdown order: cancel every consumer (the broker stops sending), let in-flight jobs finish
//! within `consumer.drain_timeout_ms` (each publishes its result and acks), then close the
//! connection; whatever was still unacked (buffered deliveries, jobs past the drain timeout)
//! is requeued by the broker when the channel closes, so nothing is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::select_all;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_common::JobKind;
use warren_common::classify::Classifier;
use warren_infra::settings::Route;
use warren_infra::{Publisher, Settings, topology};

use crate::handler::{Served, Worker, handle};
use crate::onnx::OrtClassifier;
use crate::pool::WorkerPool;

pub struct Application {
    connection: Connection,
    worker: Arc<Worker>,
    consumers: Vec<(Arc<Served>, Channel, lapin::Consumer)>,
    prefetch: u16,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("worker", &self.worker).field("prefetch", &self.prefetch).finish()
    }
}

impl Application {
    /// Connects, declares the topology, loads the model if this worker classifies, and starts
    /// consuming. Fails fast on anything misconfigured, before taking a single message.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let routes = settings.consumer_routes();
        anyhow::ensure!(!routes.is_empty(), "no routes to consume: check [[routes]] and consumer.kinds");
        let kinds = routes.iter().map(|r| JobKind::parse(&r.kind)).collect::<Result<Vec<_>, _>>()?;

        let pool = WorkerPool::new(settings.consumer.pool_size);
        let prefetch = match settings.consumer.prefetch {
            0 => u16::try_from(pool.size()).unwrap_or(u16::MAX),
            n => n,
        };
        check_time_limits(&settings, &routes, pool.size(), prefetch)?;

        // A worker that cannot load its model must not take classify jobs only to fail them,
        // so a model problem stops start-up with the reason instead.
        let classifier: Option<Arc<dyn Classifier>> = if kinds.contains(&JobKind::MlClassify) {
            let model = settings.model.clone();
            let loaded = tokio::task::spawn_blocking(move || OrtClassifier::load(&model))
                .await
                .context("model loader thread")??;
            Some(Arc::new(loaded))
        } else {
            None
        };

        let connection = warren_infra::connect(&settings.broker, "consumer").await?;
        let setup = connection.create_channel().await.context("open channel for topology")?;
        topology::declare(&setup, &settings).await?;
        let _ = setup.close(200, "topology declared".into()).await;

        let confirm_timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let publisher = Publisher::open(&connection, confirm_timeout).await.context("open publishing channel")?;
        let worker_id = worker_id(&settings.consumer.worker_id);

        let mut consumers = Vec::with_capacity(routes.len());
        for route in &routes {
            let channel = connection.create_channel().await.context("open consuming channel")?;
            // Per consumer (global = false): each queue gets `prefetch` unacked deliveries.
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .with_context(|| format!("set prefetch {prefetch} on queue {}", route.queue))?;
            let consumer = channel
                .basic_consume(
                    ShortString::from(route.queue.as_str()),
                    ShortString::from(format!("{worker_id}/{}", route.queue)),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consume queue {}", route.queue))?;
            let served = Served {
                queue: route.queue.clone(),
                time_limit: Duration::from_millis(route.time_limit_ms),
                retry: settings.retry_policy(route).clone(),
            };
            consumers.push((Arc::new(served), channel, consumer));
        }
        tracing::info!(
            broker = %settings.broker.redacted_url(),
            queues = ?routes.iter().map(|r| r.queue.as_str()).collect::<Vec<_>>(),
            pool = pool.size(),
            prefetch,
            worker_id = %worker_id,
            "consumer ready"
        );
        let worker = Arc::new(Worker { settings, publisher, pool, classifier, worker_id, kinds });
        Ok(Self { connection, worker, consumers, prefetch })
    }

    pub fn pool_size(&self) -> usize {
        self.worker.pool.size()
    }

    pub fn prefetch(&self) -> u16 {
        self.prefetch
    }

    pub fn worker_id(&self) -> &str {
        &self.worker.worker_id
    }

    /// Consumes until `shutdown` resolves, then drains and closes. Returns an error when the
    /// broker connection is lost (the process exits non-zero and its supervisor restarts it).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { connection, worker, consumers, .. } = self;
        let tracker = TaskTracker::new();
        let mut channels = Vec::new();
        let mut streams = Vec::new();
        for (served, channel, consumer) in consumers {
            let tag = consumer.tag();
            channels.push((channel, tag));
            streams.push(consumer.map(move |d| (served.clone(), d)));
        }
        let stop = CancellationToken::new();
        let mut deliveries = select_all(streams);
        tokio::pin!(shutdown);
        let outcome = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                next = deliveries.next() => match next {
                    Some((served, Ok(delivery))) => {
                        tracker.spawn(handle(worker.clone(), served, delivery, stop.clone()));
                    }
                    Some((served, Err(e))) => {
                        break Err(anyhow::Error::new(e).context(format!("consuming queue {}", served.queue)));
                    }
                    None => break Err(anyhow::anyhow!("every consumer ended; the broker closed the connection")),
                },
            }
        };

        tracing::info!(in_flight = tracker.len(), "stopping: cancelling consumers and draining");
        for (channel, tag) in &channels {
            if let Err(e) = channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await {
                tracing::debug!(error = %e, "cancel consumer");
            }
        }
        tracker.close();
        let drain = Duration::from_millis(worker.settings.consumer.drain_timeout_ms);
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(unfinished = tracker.len(), ?drain, "drain timeout; unfinished jobs go back to the queue");
        }
        if let Err(e) = connection.close(200, "worker stopping".into()).await {
            tracing::debug!(error = %e, "close connection");
        }
        tracing::info!("stopped");
        outcome
    }
}

/// Refuses a configuration in which a delivery could stay unacked past the broker's
/// `consumer_timeout` (the broker would then close the channel and redeliver everything on it):
/// a job may wait for every other prefetched delivery of this worker to take a slot, then run
/// for its time limit, then wait for two confirms (result or retry, and error result).
fn check_time_limits(settings: &Settings, routes: &[Route], pool: usize, prefetch: u16) -> anyhow::Result<()> {
    let held = usize::from(prefetch) * routes.len();
    let rounds = held.div_ceil(pool.max(1)) as u64;
    let longest = routes.iter().map(|r| r.time_limit_ms).max().unwrap_or(0);
    let worst_ms = longest.saturating_mul(rounds) + 2 * settings.broker.confirm_timeout_ms;
    let budget_ms = settings.broker.consumer_timeout_ms / 10 * 9;
    anyhow::ensure!(
        worst_ms <= budget_ms,
        "a job could stay unacked for {worst_ms} ms (time limit {longest} ms x {rounds} rounds of {held} prefetched          jobs on {pool} slots, plus 2 confirm timeouts), over 90% of broker.consumer_timeout_ms = {}: lower          time_limit_ms or consumer.prefetch, raise consumer.pool_size, or raise the broker's consumer_timeout          and broker.consumer_timeout_ms with it",
        settings.broker.consumer_timeout_ms
    );
    Ok(())
}

fn worker_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "warren".to_owned());
    format!("{host}-{}", std::process::id())
}
