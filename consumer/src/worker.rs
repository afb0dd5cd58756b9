//! What the handlers of one session share (the worker), what each consumed queue brings
//! (served), and one delivery as it travels the path (held). The delivery path's modules import these types; nothing here imports them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::Connection;
use lapin::message::Delivery;
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
    redeclaring: AtomicBool,
}

impl Worker {
    pub fn new(
        settings: Arc<Settings>,
        connection: Arc<Connection>,
        publisher: Publisher,
        worker_id: String,
        registry: Arc<Registry>,
        routes: Arc<[Route]>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let lost = CancellationToken::new();
        let gate = lost.child_token();
        let limits = Arc::new(settings.limits.clone());
        Self {
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
            redeclaring: AtomicBool::new(false),
        }
    }

    /// The topology is missing something (a publish to a delay queue or the dead-letter
    /// exchange came back unroutable): declare it again, once at a time, in the background.
    pub fn redeclare_topology(self: &Arc<Self>) {
        if self.redeclaring.swap(true, Ordering::AcqRel) {
            return;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            let declared = async {
                let channel = worker.connection.create_channel().await?;
                warren_infra::topology::declare_with(&channel, &worker.settings, &worker.routes).await?;
                let _ = channel.close(200, "topology declared".into()).await;
                anyhow::Ok(())
            };
            match declared.await {
                Ok(()) => tracing::warn!("a queue of Warren's topology was missing; declared it again"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "could not declare the topology again"),
            }
            worker.redeclaring.store(false, Ordering::Release);
        });
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
}
