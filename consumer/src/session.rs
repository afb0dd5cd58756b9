//! One connection's worth of work: connect, declare the topology, open the publisher and one
//! consuming channel per queue (each route's work queue and its returned lane). When the
//! connection or the publisher's channel is lost the session ends: its jobs that have not
//! started never start, and its delivery tags are never used on another channel (each delivery
//! acks through its own channel, and its handler gives up once the session is lost).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use warren_infra::settings::Route;
use warren_infra::{Publisher, Settings, topology};

use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::registry::Registry;
use crate::worker::{Lasting, Served, Worker};

/// What outlives sessions: settings, the pools, the kinds and their routes, the queues served.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub pool: WorkerPool,
    pub worker_id: String,
    pub registry: Arc<Registry>,
    /// The served kinds' routes, resolved.
    pub routes: Vec<Route>,
    /// Every queue consumed: each route's work queue, then its returned lane.
    pub served: Vec<Arc<Served>>,
    pub prefetch: u16,
    pub metrics: Arc<Metrics>,
    /// The broker node of the current (or last) session, for `/readyz`.
    pub node: Arc<std::sync::Mutex<String>>,
    /// The cancels read so far, kept across sessions.
    pub cancels: Arc<crate::cancels::Cancels>,
    /// Where job references are read and outputs written.
    pub stores: Arc<crate::store::Stores>,
}

impl Shared {
    /// Threads still running jobs given up at their time limit, over every pool.
    pub fn abandoned(&self) -> usize {
        let lanes: usize =
            self.served.iter().filter(|s| s.lane == crate::decide::Lane::Returned).map(|s| s.pool.abandoned()).sum();
        self.pool.abandoned() + lanes
    }
}

pub struct Session {
    pub connection: Arc<Connection>,
    /// The broker node it is connected to (`host:port`).
    pub node: String,
    pub worker: Arc<Worker>,
    /// Each served queue, its channel, and its consumer: none while its kind's backend is not
    /// ready (a paused queue is never subscribed, not even for a moment).
    pub consumers: Vec<(Arc<Served>, Channel, Option<lapin::Consumer>)>,
}

impl Session {
    pub async fn open(shared: &Shared) -> anyhow::Result<Self> {
        let connected = warren_infra::connect_node(&shared.settings.broker, "consumer").await?;
        Self::start(shared, connected).await
    }

    /// The first session of a worker: while no node answers, dial again with the reconnect
    /// backoff for up to `broker.startup_timeout_ms` (each failure logged, with no credential);
    /// whatever fails once connected (the topology, a refused consumer) stops start-up at once.
    pub async fn first(shared: &Shared) -> anyhow::Result<Self> {
        let broker = &shared.settings.broker;
        let mut backoff = warren_infra::backoff::Backoff::new(
            Duration::from_millis(broker.reconnect_min_ms),
            Duration::from_millis(broker.reconnect_max_ms),
        );
        // A TLS file that cannot be read is a mistake to fix, not a broker to wait for.
        warren_infra::broker::tls_config(broker)?;
        let give_up = tokio::time::Instant::now() + Duration::from_millis(broker.startup_timeout_ms);
        let connected = loop {
            match warren_infra::connect_node(broker, "consumer").await {
                Ok(connected) => break connected,
                Err(e) => {
                    let delay = backoff.next_delay();
                    if tokio::time::Instant::now() + delay >= give_up {
                        return Err(e.context(format!(
                            "no broker node answered within broker.startup_timeout_ms = {}",
                            broker.startup_timeout_ms
                        )));
                    }
                    tracing::warn!(error = format!("{e:#}"), next_try_in = ?delay, "no broker node answers yet; waiting for one");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        Self::start(shared, connected).await
    }

    async fn start(shared: &Shared, connected: warren_infra::Connected) -> anyhow::Result<Self> {
        let (connection, node) = (Arc::new(connected.connection), connected.node);
        *shared.node.lock().unwrap_or_else(|p| p.into_inner()) = node.clone();
        let started = Self::start_on(shared, connection.clone(), node).await;
        if started.is_err() {
            // Whatever holds it (the cancel stream's reader, a channel) ends with it; the next
            // session dials again.
            let _ = connection.close(320, "the session could not start".into()).await;
        }
        started
    }

    async fn start_on(shared: &Shared, connection: Arc<Connection>, node: String) -> anyhow::Result<Self> {
        let settings = &shared.settings;
        topology::declare_on(&connection, settings, &shared.routes).await?;
        shared.metrics.topology_whole();

        let confirm_timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
        // Every held delivery has at most one publish in flight at a time (a result, then an
        // error result, or a copy): room for all of them, so that none waits for a slot.
        let in_flight = shared.served.iter().map(|s| usize::from(s.prefetch)).sum::<usize>() + 2;
        let publisher = Publisher::open(connection.clone(), confirm_timeout, in_flight)
            .await
            .context("open publishing channels")?;
        let mut consumers = Vec::with_capacity(shared.served.len());
        for served in &shared.served {
            let channel = connection.create_channel().await.context("open consuming channel")?;
            let consumer = if served.ready.as_ref().is_none_or(|r| *r.borrow()) {
                let consumer = subscribe(&channel, served, &shared.worker_id).await?;
                shared.metrics.consuming(&served.queue, true);
                Some(consumer)
            } else {
                tracing::info!(queue = %served.queue, "not consuming the queue while its model is not ready");
                None
            };
            consumers.push((served.clone(), channel, consumer));
        }
        let lasting = Lasting {
            settings: settings.clone(),
            worker_id: shared.worker_id.clone(),
            registry: shared.registry.clone(),
            routes: shared.routes.clone().into(),
            metrics: shared.metrics.clone(),
            cancels: shared.cancels.clone(),
            stores: shared.stores.clone(),
        };
        // Every cancel published until now is known before any job of this session starts.
        // Last: its marker is this session's first publish, and a broker in a memory alarm
        // stops reading a connection that publishes, which would hold the subscriptions above.
        shared.cancels.catch_up(connection.clone(), publisher.clone(), settings, &shared.worker_id, confirm_timeout);
        let worker = Arc::new(Worker::new(lasting, connection.clone(), publisher));
        worker.watch_topology();
        Ok(Self { connection, node, worker, consumers })
    }
}

/// The tag of `queue`'s consumer: the same for every subscription, as only one exists at a
/// time.
pub fn consumer_tag(worker_id: &str, queue: &str) -> String {
    format!("{worker_id}/{queue}")
}

/// Sets the queue's prefetch on `channel` and starts consuming it.
pub async fn subscribe(channel: &Channel, served: &Served, worker_id: &str) -> anyhow::Result<lapin::Consumer> {
    let queue = served.queue.as_str();
    let prefetch = served.prefetch;
    // Per consumer (global = false): each queue gets `prefetch` unacked deliveries.
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .with_context(|| format!("set prefetch {prefetch} on queue {queue}"))?;
    channel
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(consumer_tag(worker_id, queue)),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consume queue {queue}"))
}
