//! Building the worker and running it until a shutdown future resolves, reconnecting whenever
//! the broker connection is lost.
//!
//! Shutdown order: close the gate (jobs not yet started are handed back unstarted), cancel every
//! consumer (the broker stops sending), let running jobs finish within
//! `consumer.drain_timeout_ms` (each publishes its result and acks), hand back whatever is still
//! running then, and close the connection. Nothing is lost.
//!
//! A consumer the broker cancels (its queue was deleted, its node went down) is noticed: the
//! worker reports not ready, declares the topology again and consumes the queue again, with
//! backoff. A worker whose abandoned job threads (past their time limits, unstoppable) reach
//! its pool size drains and stops with an error, for its supervisor to start a fresh process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::BasicCancelOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_infra::Settings;
use warren_infra::backoff::Backoff;

use crate::builder::{self, Setup, WorkerBuilder};
use crate::consume::{BROKER_REPLY, Deliveries, Ended, Event, consume, events};
use crate::decide::Lane;
use crate::handler::handle;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::registry::Registry;
use crate::routes::{self, Declared};
use crate::session::{self, Session, Shared};
use crate::worker::Served;

pub struct Application {
    shared: Shared,
    session: Session,
    health: Arc<Health>,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("worker_id", &self.shared.worker_id).field("health", &self.health).finish()
    }
}

impl WorkerBuilder {
    /// Builds the worker: checks and resolves the routes, makes the served kinds, connects,
    /// declares the topology and starts consuming (see [`Application`]).
    pub async fn build(self, settings: Settings) -> anyhow::Result<Application> {
        Application::build(settings, self).await
    }
}

impl Application {
    /// Resolves and checks the routes of the kinds `kinds` registers, makes the served kinds
    /// (loading their models), connects, declares the topology and starts consuming. Fails fast
    /// on anything misconfigured, before taking a single message.
    pub async fn build(settings: Settings, kinds: WorkerBuilder) -> anyhow::Result<Self> {
        let kinds = kinds.with_python(&settings).await?;
        let settings = Arc::new(settings);
        let declared: Vec<Declared<'_>> =
            kinds.pending.iter().map(|p| Declared { name: p.name, defaults: &p.defaults, opt_in: p.opt_in }).collect();
        let served_routes = routes::served(&settings, &declared)?;
        let foreign = routes::foreign(&settings, &declared);
        if !foreign.is_empty() {
            tracing::info!(kinds = ?foreign, "[[routes]] of kinds this worker does not register: left to other workers");
        }
        let metrics = Arc::new(Metrics::new());
        let pool = WorkerPool::new(settings.consumer.pool_size).with_gauge(metrics.in_flight_gauge());
        let prefetch = routes::default_prefetch(&settings, pool.size());
        // Sized and checked before any kind is made: a misconfiguration stops start-up before a
        // model loads.
        let sized: Vec<_> = served_routes
            .iter()
            .map(|route| {
                let shape = kinds.pending.iter().find(|p| p.name == route.kind).map(|p| p.shape);
                let runs = shape.unwrap_or(builder::Shape::Blocking).runs(route);
                (route.clone(), routes::prefetch_for(&settings, route, pool.size(), runs), runs)
            })
            .collect();
        routes::check_time_limits(&settings, &sized, pool.size())?;
        for (route, ..) in &sized {
            settings.check_priority(route)?;
        }

        let known = kinds.names();
        let mut registered = Vec::with_capacity(served_routes.len());
        for pending in kinds.pending {
            let Some(route) = served_routes.iter().find(|r| r.kind == pending.name) else { continue };
            let setup = Setup {
                settings: settings.clone(),
                route: route.clone(),
                pool: pool.clone(),
                metrics: metrics.clone(),
            };
            registered.push(builder::make(pending, setup).await?);
        }
        let registry = Arc::new(Registry::new(registered, known));
        // Each route: its work queue on the pool, and its returned lane, taken one job at a time
        // and run at once on a slot of its own (so that a job held there is a job running).
        let served: Vec<Arc<Served>> = registry
            .served()
            .iter()
            .zip(&sized)
            .flat_map(|(kind, (route, prefetch, _))| {
                let main = Served {
                    queue: route.queue.clone(),
                    ready: kind.ready.clone(),
                    lane: Lane::Main,
                    work_queue: route.queue.clone(),
                    returned_queue: settings.returned_queue(&route.queue),
                    prefetch: *prefetch,
                    time_limit: route.time_limit(),
                    retry: settings.retry_policy(route).clone(),
                    delay_tiers: settings.delay_tiers(route),
                    pool: pool.clone(),
                };
                let lane = Served {
                    queue: main.returned_queue.clone(),
                    lane: Lane::Returned,
                    prefetch: 1,
                    pool: WorkerPool::new(1).with_gauge(metrics.in_flight_gauge()),
                    ..main.clone()
                };
                [Arc::new(main), Arc::new(lane)]
            })
            .collect();
        let worker_id = worker_id(&settings.consumer.worker_id);
        metrics.configured(pool.size(), &served.iter().map(|s| (s.queue.clone(), s.prefetch)).collect::<Vec<_>>());
        let held = held_jobs(&settings, pool.size());
        let shared = Shared {
            settings: settings.clone(),
            pool,
            worker_id,
            registry: registry.clone(),
            routes: served_routes,
            served,
            prefetch,
            metrics: metrics.clone(),
            node: Arc::default(),
            cancels: Arc::new(crate::cancels::Cancels::new(&settings, metrics.clone())),
            stores: Arc::new(crate::store::Stores::new(&settings.store, held)?),
        };
        let health = Arc::new(Health {
            metrics: metrics.clone(),
            queues: shared.served.iter().map(|s| s.queue.clone()).collect(),
            pools: shared.served.iter().map(|s| s.pool.clone()).collect(),
            pool_size: shared.pool.size(),
            registry,
            node: shared.node.clone(),
        });
        // Served before the first connection: a worker waiting for its broker is alive
        // (/healthz) and says why it is not ready (/readyz).
        let metrics_addr = match settings.telemetry.metrics_addr.as_str() {
            "" => None,
            addr => {
                let probe = health.clone();
                Some(warren_infra::serve::spawn(addr, metrics.registry.clone(), move || probe.status()).await?)
            }
        };
        let session = Session::first(&shared).await?;
        tracing::info!(
            broker = %settings.broker.redacted_url(),
            node = %session.node,
            kinds = ?shared.routes.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
            queues = ?shared.routes.iter().map(|r| r.queue.as_str()).collect::<Vec<_>>(),
            pool = shared.pool.size(),
            prefetch,
            worker_id = %shared.worker_id,
            "consumer ready"
        );
        Ok(Self { shared, session, health, metrics_addr })
    }

    pub fn pool_size(&self) -> usize {
        self.shared.pool.size()
    }

    pub fn prefetch(&self) -> u16 {
        self.shared.prefetch
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Where /metrics, /healthz and /readyz are served, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Consumes until `shutdown` resolves, then drains and closes. A lost connection is
    /// re-established with capped, jittered backoff, the topology re-declared and consuming
    /// resumed, for as long as it takes. Returns an error, after draining, when the worker is
    /// worn out by job threads it could not stop.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { shared, session, .. } = self;
        let broker = &shared.settings.broker;
        let mut backoff = Backoff::new(
            Duration::from_millis(broker.reconnect_min_ms),
            Duration::from_millis(broker.reconnect_max_ms),
        );
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        tokio::pin!(shutdown);
        let mut current = Some(session);
        loop {
            let session = match current.take() {
                Some(s) => s,
                None => match reconnect(&shared, &mut backoff, &mut shutdown).await {
                    Some(s) => {
                        shared.metrics.reconnected();
                        tracing::info!(node = %s.node, "reconnected; consuming again");
                        s
                    }
                    None => break,
                },
            };
            shared.metrics.connected(true);
            let mut deliveries = Deliveries::new();
            for (i, (_, _, consumer)) in session.consumers.iter().enumerate() {
                if let Some(consumer) = consumer {
                    deliveries.push(events(i, consumer.clone()));
                }
            }
            let ended = consume(&shared, &session, &mut deliveries, &tracker, &stop, &mut shutdown).await;
            shared.metrics.connected(false);
            match ended {
                Ended::Shutdown => {
                    drain(&shared, &session, deliveries, &tracker, &stop).await;
                    break;
                }
                Ended::WornOut(abandoned) => {
                    drain(&shared, &session, deliveries, &tracker, &stop).await;
                    anyhow::bail!(
                        "{abandoned} job threads ran past their time limits and cannot be stopped (pool of {}): \
                         stopping so that a fresh process takes over",
                        shared.pool.size()
                    );
                }
                Ended::Lost(reason) => {
                    tracing::warn!(reason = %reason, "lost the broker; reconnecting");
                    // Its jobs that have not started must not start: the broker requeued them.
                    session.worker.lost.cancel();
                    for (served, ..) in &session.consumers {
                        shared.metrics.consuming(&served.queue, false);
                    }
                    let _ = tokio::time::timeout(BROKER_REPLY, session.connection.close(320, "connection lost".into()))
                        .await;
                }
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens a new session, waiting between attempts; None if shutdown came first.
async fn reconnect(
    shared: &Shared,
    backoff: &mut Backoff,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Session> {
    loop {
        let delay = backoff.next_delay();
        tokio::select! {
            () = shutdown.as_mut() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        match Session::open(shared).await {
            Ok(s) => {
                backoff.reset();
                return Some(s);
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), next_wait_max = ?backoff.ceiling(), "reconnect failed"),
        }
    }
}

async fn drain(
    shared: &Shared,
    session: &Session,
    mut deliveries: Deliveries,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) {
    tracing::info!(
        in_flight = tracker.len(),
        "stopping: cancelling consumers, handing back jobs not started, draining"
    );
    for (served, channel, _) in &session.consumers {
        shared.metrics.consuming(&served.queue, false);
        // The tag of the first subscription and of any later one.
        let tag = session::consumer_tag(&shared.worker_id, &served.queue);
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        if let Ok(Err(e)) = tokio::time::timeout(BROKER_REPLY, cancel).await {
            tracing::debug!(error = %e, "cancel consumer");
        }
    }
    // Jobs not started yet are handed back at once (after the cancel, so that their copies
    // cannot come straight back here), and so are deliveries still buffered in the consumers:
    // handed back as fresh copies, they do not come back marked redelivered. Running jobs may
    // finish.
    session.worker.gate.cancel();
    let leftovers = async {
        while let Some(event) = deliveries.next().await {
            if let Event::Delivery(i, delivery) = event
                && let Ok(delivery) = *delivery
            {
                let served = session.consumers[i].0.clone();
                tracker.spawn(handle(session.worker.clone(), served, delivery, stop.clone()));
            }
        }
    };
    let _ = tokio::time::timeout(BROKER_REPLY, leftovers).await;
    tracker.close();
    let drain = Duration::from_millis(shared.settings.consumer.drain_timeout_ms);
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(unfinished = tracker.len(), ?drain, "drain timeout; handing unfinished jobs back to the broker");
        stop.cancel();
        // Each running job is handed back now; a settle already begun finishes first (its
        // letter, then the ack), bounded by the confirm timeout.
        let confirm_timeout = Duration::from_millis(shared.settings.broker.confirm_timeout_ms);
        let bound = crate::settle::drain_settle_bound(confirm_timeout);
        if tokio::time::timeout(bound, tracker.wait()).await.is_err() {
            tracing::warn!(
                unsettled = tracker.len(),
                ?bound,
                "settles still unanswered by the broker; closing (the broker requeues their jobs)"
            );
        }
    }
    // The last jobs' events, queued or lingering, go out before the connection closes.
    let confirm_timeout = Duration::from_millis(shared.settings.broker.confirm_timeout_ms);
    session.worker.events.flush(confirm_timeout).await;
    if let Ok(Err(e)) =
        tokio::time::timeout(BROKER_REPLY, session.connection.close(200, "worker stopping".into())).await
    {
        tracing::debug!(error = %e, "close connection");
    }
    // The session is over: its background tasks (the topology check) end.
    session.worker.lost.cancel();
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

/// Jobs that may hold fetched references at once: `store.max_held_jobs`, or four times the
/// pool, the default prefetch (twice the pool left the cores idle in the benchmark, the jobs
/// waiting on the store's round trips: docs/benchmarks.md, "Payloads by reference").
fn held_jobs(settings: &Settings, pool_size: usize) -> usize {
    match settings.store.max_held_jobs {
        0 => pool_size.saturating_mul(4).max(1),
        n => n,
    }
}
