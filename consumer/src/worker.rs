//! What the handlers of one session share (the worker), what each consumed queue brings
//! (served), and one delivery as it travels the path (held). The delivery path's modules import these types; nothing here imports them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_common::Limits;
use warren_common::retry::RetryPolicy;
use warren_infra::settings::Route;
use warren_infra::{Publisher, Settings};

use crate::decide::{Facts, Lane};
use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::registry::Registry;

/// One session's worth of shared state: the connection, its publisher, and what outlives it.
pub struct Worker {
    pub settings: Arc<Settings>,
    pub connection: Arc<Connection>,
    pub publisher: Publisher,
    pub worker_id: String,
    /// The kinds this worker runs.
    pub registry: Arc<Registry>,
    /// Their routes, resolved: declared with the fleet's topology.
    pub routes: Arc<[Route]>,
    /// The limits every job's context carries.
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when this session is lost: its deliveries can no longer be acked, and the
    /// broker has requeued them.
    pub lost: CancellationToken,
    /// Cancelled when no job of this session may start any more: the session is lost (a child
    /// of `lost`), or the worker is draining.
    pub gate: CancellationToken,
    /// Where its handlers queue the jobs' lifecycle events.
    pub events: crate::events::Events,
    /// The job ids cancelled, and the running jobs to tell.
    pub cancels: Arc<crate::cancels::Cancels>,
    /// Where job references are read and outputs written.
    pub stores: Arc<crate::store::Stores>,
    /// Held while the topology is declared again.
    declaring: tokio::sync::Mutex<()>,
    /// Declarations made again (or tried) so far, and whether the last one succeeded.
    declarations: AtomicU64,
    declared_ok: AtomicBool,
}

/// What each session's [`Worker`] takes from the worker's lifetime.
#[derive(Debug, Clone)]
pub struct Lasting {
    pub settings: Arc<Settings>,
    pub worker_id: String,
    pub registry: Arc<Registry>,
    pub routes: Arc<[Route]>,
    pub metrics: Arc<Metrics>,
    pub cancels: Arc<crate::cancels::Cancels>,
    pub stores: Arc<crate::store::Stores>,
}

impl Worker {
    pub fn new(lasting: Lasting, connection: Arc<Connection>, publisher: Publisher) -> Self {
        let Lasting { settings, worker_id, registry, routes, metrics, cancels, stores } = lasting;
        let lost = CancellationToken::new();
        let gate = lost.child_token();
        let limits = Arc::new(settings.limits.clone());
        let events = crate::events::Events::start(connection.clone(), &settings, metrics.clone(), lost.clone());
        Self {
            events,
            cancels,
            stores,
            settings,
            connection,
            publisher,
            worker_id,
            registry,
            routes,
            limits,
            metrics,
            lost,
            gate,
            declaring: tokio::sync::Mutex::new(()),
            declarations: AtomicU64::new(0),
            declared_ok: AtomicBool::new(true),
        }
    }

    /// The topology is missing a queue (a publish to a delay queue or the dead-letter exchange
    /// came back unroutable): declare it again, in the background.
    pub fn redeclare_topology(self: &Arc<Self>) {
        let worker = self.clone();
        tokio::spawn(async move { worker.restore_topology("unroutable").await });
    }

    /// Declares the whole topology again (exchanges, queues, bindings) after `found_by`
    /// (publish, check, unroutable) found part of it missing; not ready meanwhile. One
    /// declaration at a time: a caller that waited while another one succeeded takes that one.
    /// Whether the topology is whole again.
    pub async fn restore_topology(&self, found_by: &'static str) -> bool {
        // Missing first: a declaration that ends after this is seen, by its count, below.
        self.metrics.topology_missing();
        let seen = self.declarations.load(Ordering::Acquire);
        let _one = self.declaring.lock().await;
        if self.declarations.load(Ordering::Acquire) != seen {
            // Another caller declared (or tried to) while this one waited: take its outcome
            // rather than try again one after another.
            return self.declared_ok.load(Ordering::Acquire);
        }
        let declared = warren_infra::topology::declare_on(&self.connection, &self.settings, &self.routes);
        let outcome = tokio::time::timeout(Duration::from_secs(10), declared).await;
        self.declared_ok.store(matches!(outcome, Ok(Ok(()))), Ordering::Release);
        self.declarations.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(Ok(())) => {
                self.metrics.topology_restored(found_by);
                tracing::warn!(found_by, "part of Warren's topology was missing (deleted?); declared it again");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(found_by, error = format!("{e:#}"), "could not declare the topology again");
                false
            }
            Err(_) => {
                tracing::warn!(found_by, "no answer declaring the topology again");
                false
            }
        }
    }

    /// Every `consumer.topology_check_ms`, until the session is lost, checks that the jobs,
    /// results and dead-letter exchanges exist (passive declarations) and declares the topology
    /// again when one does not: the broker itself publishes through them (retries back to the
    /// work queues go through the default exchange, but dead letters of the work queues and
    /// every producer's job go through these), and drops silently what meets a missing one.
    pub fn watch_topology(self: &Arc<Self>) {
        let every = Duration::from_millis(self.settings.consumer.topology_check_ms);
        if every.is_zero() {
            return;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = worker.lost.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match tokio::time::timeout(Duration::from_secs(10), worker.missing_exchanges()).await {
                    Ok(Ok(missing)) if missing.is_empty() => {
                        if worker.metrics.is_topology_missing() {
                            // A declaration failed earlier: try again.
                            worker.restore_topology("check").await;
                        }
                    }
                    Ok(Ok(missing)) => {
                        tracing::warn!(?missing, "exchanges of Warren's topology are missing; declaring it again");
                        worker.restore_topology("check").await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "could not check the topology"),
                    Err(_) => tracing::debug!("no answer checking the topology"),
                }
            }
        });
    }

    /// The exchanges of the topology that do not exist, by passive declarations (one that fails
    /// closes its channel, so the next opens another).
    async fn missing_exchanges(&self) -> Result<Vec<String>, lapin::Error> {
        let t = &self.settings.topology;
        let mut missing = Vec::new();
        let mut channel = None;
        for name in [&t.jobs_exchange, &t.results_exchange, &t.dead_letter_exchange] {
            let ch = match channel.take() {
                Some(ch) => ch,
                None => self.connection.create_channel().await?,
            };
            let options = ExchangeDeclareOptions { passive: true, ..Default::default() };
            match ch.exchange_declare(name.as_str().into(), ExchangeKind::Direct, options, FieldTable::default()).await
            {
                Ok(()) => channel = Some(ch),
                Err(e) if warren_infra::publish::not_found(&e) => missing.push(name.clone()),
                Err(e) => return Err(e),
            }
        }
        if let Some(ch) = channel {
            let _ = ch.close(200, "topology checked".into()).await;
        }
        Ok(missing)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("worker_id", &self.worker_id).field("registry", &self.registry).finish()
    }
}

/// A queue this worker consumes, with its route's limits.
#[derive(Debug, Clone)]
pub struct Served {
    /// The queue consumed: the route's work queue, or its returned lane.
    pub queue: String,
    /// The readiness of its kind's backend, when that can be down: while it is false the queue
    /// is not consumed.
    pub ready: Option<watch::Receiver<bool>>,
    pub lane: Lane,
    /// The route's work queue: dead letters are keyed by it, retries come back to it.
    pub work_queue: String,
    /// The route's returned lane, where jobs that came back unanswered go.
    pub returned_queue: String,
    /// Unacked deliveries allowed on this queue's consumer.
    pub prefetch: u16,
    pub time_limit: Duration,
    pub retry: RetryPolicy,
    /// The route's delay queues by their delay, shortest first (retry and delay tiers).
    pub delay_tiers: Vec<Duration>,
    /// Where its jobs run: the worker's pool, or the lane's own single slot.
    pub pool: WorkerPool,
}

/// One delivery on its way through the path: what every step needs of it, passed as one value.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub worker: &'a Arc<Worker>,
    pub served: &'a Served,
    pub delivery: &'a Delivery,
    pub facts: &'a Facts,
    /// Its kind as a metric label: a registered kind's name, or "unknown".
    pub kind: &'static str,
    /// The W3C trace id the producer started ("" when none).
    pub trace_id: &'a str,
}

impl Held<'_> {
    /// The lifecycle event `event` of this delivery's job, now.
    pub fn event(&self, event: &'static str) -> crate::events::Event {
        let job_id = self.facts.job_id.as_deref().unwrap_or("");
        let mut e = crate::events::Event::new(event, job_id, self.kind, &self.served.queue, &self.worker.worker_id);
        e.attempt = self.facts.attempt;
        e.trace_id = self.trace_id.to_owned();
        e
    }
}
