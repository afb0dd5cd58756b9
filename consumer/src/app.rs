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
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warren_common::JobKind;
use warren_infra::Settings;
use warren_infra::backoff::Backoff;
use warren_infra::settings::Route;

use crate::batcher::{BatchPolicy, Batcher};
use crate::consume::{BROKER_REPLY, Deliveries, Ended, Event, consume, events};
use crate::decide::{self, Lane};
use crate::handler::handle;
use crate::metrics::Metrics;
use crate::model;
use crate::pool::WorkerPool;
use crate::session::{self, Session, Shared};
use crate::worker::Served;

/// What the outside (health endpoints, tests) can see of a running worker: a view of the
/// connection and consumer metrics, which are the one record of that state, and of the pools.
#[derive(Debug, Clone)]
pub struct Health {
    metrics: Arc<Metrics>,
    queues: Vec<String>,
    pools: Vec<WorkerPool>,
    pool_size: usize,
    /// None: the model (if any) is always ready.
    model_ready: Option<watch::Receiver<bool>>,
    /// The broker node of the current session.
    node: Arc<std::sync::Mutex<String>>,
}

impl Health {
    /// Connected, consuming every queue, its model ready, and not worn out by abandoned job
    /// threads.
    pub fn is_ready(&self) -> bool {
        let abandoned = self.pools.iter().map(WorkerPool::abandoned).sum();
        decide::ready(
            self.metrics.is_connected(),
            &self.metrics.consuming_each(&self.queues),
            self.model_ready(),
            abandoned,
            self.pool_size,
        )
    }

    /// Ready or not, with the node it is on or what is missing: the body of `/readyz`.
    pub fn status(&self) -> (bool, String) {
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if self.is_ready() {
            return (true, format!("consuming {} queues on node {node}", self.queues.len()));
        }
        let consuming = self.metrics.consuming_each(&self.queues);
        let mut missing: Vec<String> = Vec::new();
        if !self.metrics.is_connected() {
            missing.push(format!("not connected (last node {node})"));
        }
        let idle: Vec<&str> =
            self.queues.iter().zip(&consuming).filter(|(_, c)| !**c).map(|(q, _)| q.as_str()).collect();
        if !idle.is_empty() {
            missing.push(format!("not consuming {}", idle.join(", ")));
        }
        if !self.model_ready() {
            missing.push("the model is not ready".into());
        }
        let abandoned: usize = self.pools.iter().map(WorkerPool::abandoned).sum();
        if decide::worn_out(abandoned, self.pool_size) {
            missing.push(format!("{abandoned} job threads abandoned (pool of {})", self.pool_size));
        }
        (false, missing.join("; "))
    }

    /// The broker node of the current session (`host:port`).
    pub fn node(&self) -> String {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the model can take requests now (true for a worker without one, or in-process).
    pub fn model_ready(&self) -> bool {
        self.model_ready.as_ref().is_none_or(|r| *r.borrow())
    }

    /// Connections re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.metrics.reconnects()
    }
}

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

impl Application {
    /// Validates, loads the model if this worker classifies, connects, declares the topology and
    /// starts consuming. Fails fast on anything misconfigured, before taking a single message.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let routes = settings.consumer_routes();
        anyhow::ensure!(!routes.is_empty(), "no routes to consume: check [[routes]] and consumer.kinds");
        let kinds = routes.iter().map(|r| JobKind::parse(&r.kind)).collect::<Result<Vec<_>, _>>()?;
        let metrics = Arc::new(Metrics::new());
        let pool = WorkerPool::new(settings.consumer.pool_size).with_gauge(metrics.in_flight_gauge());
        let prefetch = default_prefetch(&settings, pool.size());
        let batch = settings.model.max_batch.max(1);
        let prefetch_of = |r: &Route| prefetch_for(&settings, r, pool.size());
        check_time_limits(&settings, &routes, pool.size(), &prefetch_of, batch)?;

        // A worker that cannot load its model must not take classify jobs only to fail them,
        // so a model problem stops start-up with the reason instead.
        let model = match kinds.contains(&JobKind::MlClassify) {
            true => Some(model::load(&settings, pool.size(), &metrics).await?),
            false => None,
        };
        let classifier = model.as_ref().map(|m| m.classifier.clone());
        let model_ready = model.and_then(|m| m.ready);
        let batcher = match (&classifier, routes.iter().find(|r| r.kind == JobKind::MlClassify.as_str())) {
            (Some(model), Some(route)) if batch > 1 => Some(Batcher::start(
                pool.clone(),
                model.clone(),
                Arc::new(settings.limits.clone()),
                BatchPolicy {
                    max_batch: batch,
                    max_wait: Duration::from_millis(settings.model.max_batch_wait_ms),
                    time_limit: Duration::from_millis(route.time_limit_ms),
                    retry_timeouts: settings.consumer.retry_timeouts,
                },
                metrics.batch_size_histogram(&settings.model.name, settings.model.backend.as_str()),
            )),
            _ => None,
        };
        // Each route: its work queue on the pool, and its returned lane, taken one job at a time
        // and run at once on a slot of its own (so that a job held there is a job running).
        let served: Vec<Arc<Served>> = routes
            .iter()
            .flat_map(|r| {
                let main = Served {
                    queue: r.queue.clone(),
                    needs_model: r.kind == JobKind::MlClassify.as_str(),
                    lane: Lane::Main,
                    work_queue: r.queue.clone(),
                    returned_queue: settings.returned_queue(&r.queue),
                    prefetch: prefetch_of(r),
                    time_limit: Duration::from_millis(r.time_limit_ms),
                    retry: settings.retry_policy(r).clone(),
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
        let shared = Shared {
            settings: settings.clone(),
            pool,
            classifier,
            worker_id,
            kinds,
            served,
            prefetch,
            metrics: metrics.clone(),
            batcher,
            model_ready: model_ready.clone(),
            node: Arc::default(),
        };
        let session = Session::open(&shared).await?;
        let health = Arc::new(Health {
            metrics: metrics.clone(),
            queues: shared.served.iter().map(|s| s.queue.clone()).collect(),
            pools: shared.served.iter().map(|s| s.pool.clone()).collect(),
            pool_size: shared.pool.size(),
            model_ready,
            node: shared.node.clone(),
        });
        let metrics_addr = match settings.telemetry.metrics_addr.as_str() {
            "" => None,
            addr => {
                let probe = health.clone();
                Some(warren_infra::serve::spawn(addr, metrics.registry.clone(), move || probe.status()).await?)
            }
        };
        tracing::info!(
            broker = %settings.broker.redacted_url(),
            node = %session.node,
            queues = ?routes.iter().map(|r| r.queue.as_str()).collect::<Vec<_>>(),
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
                deliveries.push(events(i, consumer.clone()));
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
        // Each handler hands its job back now; give those copies and acks a moment.
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    if let Ok(Err(e)) =
        tokio::time::timeout(BROKER_REPLY, session.connection.close(200, "worker stopping".into())).await
    {
        tracing::debug!(error = %e, "close connection");
    }
}

/// Unacked deliveries per consumer, per pool slot, when neither the route nor `consumer.prefetch`
/// sets a prefetch. A job is done when it has run, but its delivery stays unacked until its result
/// is published and confirmed; with one delivery per slot, the slot idles through that round trip
/// and through the next delivery's arrival. Measured with `warren-bench --scenarios prefetch`
/// (docs/benchmarks.md), 2 slots, 1/2/4/8 per slot: trivial jobs 2823/3791/4201/5790 jobs/s,
/// image jobs 216/250/264/302 (past 4 the image gain varies between runs). Four per slot keep
/// the pool fed while bounding what one replica holds back from the others (and its memory:
/// prefetch x `max_body_bytes`).
pub const PREFETCH_PER_SLOT: usize = 4;

/// The prefetch a worker with `pool` slots uses for queues without one of their own.
pub fn default_prefetch(settings: &Settings, pool: usize) -> u16 {
    match settings.consumer.prefetch {
        0 => u16::try_from(pool * PREFETCH_PER_SLOT).unwrap_or(u16::MAX),
        n => n,
    }
}

/// The prefetch of one route's queue: the route's own, else [`default_prefetch`]. A classify
/// queue served with micro-batching gets at least `max_batch x pool`, or batches could not fill.
pub fn prefetch_for(settings: &Settings, route: &Route, pool: usize) -> u16 {
    let base = match route.prefetch {
        0 => default_prefetch(settings, pool),
        n => n,
    };
    let batch = settings.model.max_batch.max(1);
    if route.kind == JobKind::MlClassify.as_str() && batch > 1 {
        base.max(u16::try_from(batch * pool).unwrap_or(u16::MAX))
    } else {
        base
    }
}

/// Refuses a configuration in which a delivery could stay unacked past the broker's
/// `consumer_timeout` (the broker would then close the channel and redeliver everything on it):
/// a job may wait for every other prefetched delivery of this worker to take a slot, then run
/// for its time limit, then wait for its result's confirm and its retry's (or its dead letter's
/// and error result's), then, if the broker refused that, for three hand-back pauses and copies.
fn check_time_limits(
    settings: &Settings,
    routes: &[Route],
    pool: usize,
    prefetch_of: &dyn Fn(&Route) -> u16,
    batch: usize,
) -> anyhow::Result<()> {
    // Runs needed to clear everything held: a classify batch takes one slot for up to `batch` jobs.
    let held: usize = routes
        .iter()
        .map(|r| {
            let per_run = if r.kind == JobKind::MlClassify.as_str() { batch } else { 1 };
            usize::from(prefetch_of(r)).div_ceil(per_run)
        })
        .sum();
    let rounds = held.div_ceil(pool.max(1)) as u64;
    let longest = routes.iter().map(|r| r.time_limit_ms).max().unwrap_or(0);
    let broker = &settings.broker;
    let worst_ms = longest.saturating_mul(rounds) + 6 * broker.confirm_timeout_ms + 3 * broker.reconnect_max_ms;
    let budget_ms = settings.broker.consumer_timeout_ms / 10 * 9;
    anyhow::ensure!(
        worst_ms <= budget_ms,
        "a job could stay unacked for {worst_ms} ms (time limit {longest} ms x {rounds} rounds of the {held} runs \
         the prefetched jobs need on {pool} slots, plus 6 confirm timeouts and 3 reconnect_max_ms pauses), over 90% of \
         broker.consumer_timeout_ms = {}: lower time_limit_ms or consumer.prefetch, raise consumer.pool_size, \
         or raise the broker's consumer_timeout and broker.consumer_timeout_ms with it",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        Settings::load(&dir).expect("the shipped configuration loads")
    }

    #[test]
    fn prefetch_is_four_per_slot_unless_set() {
        let mut s = settings();
        s.consumer.prefetch = 0;
        let image = Route::new("image.resize", "q");
        assert_eq!(prefetch_for(&s, &image, 2), 8);
        s.consumer.prefetch = 3;
        assert_eq!(prefetch_for(&s, &image, 2), 3);
        let own = Route { prefetch: 32, ..Route::new("checksum", "q") };
        assert_eq!(prefetch_for(&s, &own, 2), 32, "a route's own prefetch wins");
    }

    #[test]
    fn a_batching_classify_queue_gets_room_for_full_batches() {
        let mut s = settings();
        s.consumer.prefetch = 2;
        s.model.max_batch = 8;
        let classify = Route::new("ml.classify", "q");
        assert_eq!(prefetch_for(&s, &classify, 3), 24);
        s.model.max_batch = 1;
        assert_eq!(prefetch_for(&s, &classify, 3), 2, "no batching, no raise");
    }
}
