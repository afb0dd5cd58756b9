//! The worker as a library: register kinds, then build and run.
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     warren_consumer::WorkerBuilder::new()
//!         .blocking(Thumbnail)          // a BlockingKind
//!         .batched(Embed::new())        // a BatchKind
//!         .asynchronous(Lookup::new())  // an AsyncKind
//!         .main()
//! }
//! ```
//!
//! A kind's value holds its resources; a kind whose resources are costly to make (a model to
//! load) registers a factory instead (`*_with`), run only when this process serves the kind.
//! Routes, topology, metrics labels and readiness come from what is registered here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, watch};
use warren_common::{AsyncKind, BatchKind, BlockingKind, Kind, RouteDefaults};
use warren_infra::Settings;
use warren_infra::settings::Route;

use crate::batcher::{BatchPolicy, Batcher};
use crate::metrics::Metrics;
use crate::pool::WorkerPool;
use crate::registry::{Registered, Runner};
use crate::routes::Runs;
use crate::shapes::{Batched, Blocking, Io, Typed};

/// What a kind's factory is given: the worker's settings, the kind's effective route, the pool
/// and the metrics registry (for a kind's own metrics).
#[derive(Debug, Clone)]
pub struct Setup {
    pub settings: Arc<Settings>,
    pub route: Route,
    pub pool: WorkerPool,
    pub metrics: Arc<Metrics>,
}

/// A kind made by a factory, with what the worker needs to know of its backend.
#[derive(Debug)]
pub struct Loaded<K> {
    pub kind: K,
    /// When the kind's backend can be down: its readiness. While false, the kind's queues are
    /// not consumed (its jobs wait in the broker, spending no attempt) and `/readyz` says so.
    pub ready: Option<watch::Receiver<bool>>,
    /// Batched kinds over a model: the `model` and `backend` labels of `warren_batch_size`.
    pub model: Option<(String, String)>,
}

impl<K> Loaded<K> {
    pub fn new(kind: K) -> Self {
        Self { kind, ready: None, model: None }
    }
}

type Made = (Arc<dyn Runner>, Option<watch::Receiver<bool>>);
type Factory = Box<dyn FnOnce(Setup) -> BoxFuture<'static, anyhow::Result<Made>> + Send>;

/// One registration: a kind's name, its shape, its route's defaults, and how to make its runner.
pub(crate) struct Pending {
    pub name: &'static str,
    pub opt_in: bool,
    pub shape: Shape,
    pub defaults: RouteDefaults,
    pub make: Factory,
}

/// How a kind's jobs run, which sizing needs before the kind is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Blocking,
    Batched,
    Async,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocking => "blocking",
            Self::Batched => "batched",
            Self::Async => "async",
        }
    }

    /// How the jobs of `route` run, for sizing its prefetch and checking its time limit.
    pub fn runs(self, route: &Route) -> Runs {
        match self {
            Self::Blocking => Runs { per_run: 1, on_pool: true, concurrency: 1 },
            Self::Batched => Runs { per_run: route.max_batch.max(1), on_pool: true, concurrency: 1 },
            Self::Async => Runs { per_run: 1, on_pool: false, concurrency: route.concurrency.max(1) },
        }
    }
}

/// Registers kinds; then `WorkerBuilder::main` (a whole binary: `cli.rs`), or
/// `WorkerBuilder::build` and `Application::run_until_stopped` (tests, embedding: `app.rs`).
#[derive(Default)]
pub struct WorkerBuilder {
    pub(crate) pending: Vec<Pending>,
    /// Sets up and describes the binary's global allocator, for the start-up log.
    pub(crate) allocator: Option<fn() -> String>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder").field("kinds", &self.names()).finish()
    }
}

impl WorkerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `configure` at start-up and logs what it returns: for a binary whose global
    /// allocator needs setting up (the stock one: `warren_infra::alloc::configure`).
    pub fn allocator(mut self, configure: fn() -> String) -> Self {
        self.allocator = Some(configure);
        self
    }

    /// Makes the kind registered last opt-in: served only where `[[routes]]` or
    /// `consumer.kinds` names it, not by an empty `consumer.kinds` (drills, experiments).
    pub fn opt_in(mut self) -> Self {
        if let Some(last) = self.pending.last_mut() {
            last.opt_in = true;
        }
        self
    }

    /// Adds the kinds of `[python] modules` (`warren_worker`), run in child processes: the
    /// first child is started here and says which kinds the modules declare, with their
    /// routes' defaults; Python kinds take JSON jobs and run like async kinds, at most one job
    /// per child at a time.
    pub(crate) async fn with_python(mut self, settings: &Settings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let py = &settings.python;
        if py.modules.is_empty() {
            return Ok(self);
        }
        let launch = crate::python::Launch {
            interpreter: py.interpreter.clone(),
            modules: py.modules.clone(),
            path: py.path.clone(),
            recycle: crate::python::Recycle {
                max_jobs: py.max_jobs_per_child,
                max_rss_bytes: py.max_rss_mib.saturating_mul(1 << 20),
            },
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let size = [py.children, settings.consumer.pool_size, cores].into_iter().find(|&n| n > 0).unwrap_or(1);
        let (children, declared) = crate::python::Children::start(launch, size)
            .await
            .with_context(|| format!("start a Python child for [python] modules {:?}", py.modules))?;
        let children = Arc::new(children);
        for kind in declared {
            anyhow::ensure!(
                warren_common::kind::valid_name(&kind.name) && !self.names().contains(&kind.name.as_str()),
                "the Python kind {:?} has an invalid name or one already registered",
                kind.name
            );
            // Once per kind, at start-up: the registry holds names for the process's life.
            let name: &'static str = Box::leak(kind.name.into_boxed_str());
            let retry = kind
                .max_attempts
                .map(|max_attempts| warren_common::retry::RetryPolicy { max_attempts, ..settings.retry.clone() });
            let defaults = RouteDefaults {
                time_limit: Duration::from_millis(kind.time_limit_ms),
                retry,
                concurrency: children.size,
                ..RouteDefaults::default()
            };
            let children = children.clone();
            let bytes_fields: Arc<[String]> = kind.bytes_fields.into();
            let make: Factory = Box::new(move |_setup| {
                async move {
                    let runner: Arc<dyn Runner> = Arc::new(crate::python::PythonKind { name, children, bytes_fields });
                    Ok((runner, None))
                }
                .boxed()
            });
            self.pending.push(Pending { name, opt_in: false, shape: Shape::Async, defaults, make });
        }
        Ok(self)
    }

    /// The kinds registered so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.pending.iter().map(|p| p.name).collect()
    }

    /// Registers synchronous work, run on the bounded blocking pool.
    pub fn blocking<K: BlockingKind>(self, kind: K) -> Self {
        self.blocking_with(move |_| async move { Ok(Loaded::new(kind)) })
    }

    /// [`Self::blocking`], the kind made by `make` when this process serves it.
    pub fn blocking_with<K, F, Fut>(self, make: F) -> Self
    where
        K: BlockingKind,
        F: FnOnce(Setup) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Loaded<K>>> + Send + 'static,
    {
        self.register::<K, _, _>(Shape::Blocking, make, |loaded, _| {
            Arc::new(Typed { kind: Arc::new(loaded.kind), shape: Blocking })
        })
    }

    /// Registers batched work, gathered by the micro-batcher (route `max_batch`, `max_batch_wait_ms`).
    pub fn batched<K: BatchKind>(self, kind: K) -> Self {
        self.batched_with(move |_| async move { Ok(Loaded::new(kind)) })
    }

    /// [`Self::batched`], the kind made by `make` when this process serves it.
    pub fn batched_with<K, F, Fut>(self, make: F) -> Self
    where
        K: BatchKind,
        F: FnOnce(Setup) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Loaded<K>>> + Send + 'static,
    {
        self.register::<K, _, _>(Shape::Batched, make, |loaded, setup| {
            let kind = Arc::new(loaded.kind);
            let route = &setup.route;
            let max_batch = route.max_batch.max(1);
            let batcher = (max_batch > 1).then(|| {
                let (model, backend) = loaded.model.unwrap_or_default();
                Batcher::start(
                    setup.pool.clone(),
                    kind.clone(),
                    Arc::new(setup.settings.limits.clone()),
                    BatchPolicy {
                        max_batch,
                        max_wait: Duration::from_millis(route.max_batch_wait_ms.unwrap_or(0)),
                        time_limit: route.time_limit(),
                        retry_timeouts: setup.settings.consumer.retry_timeouts,
                    },
                    setup.metrics.batch_size_histogram(K::NAME, &model, &backend),
                )
            });
            Arc::new(Typed { kind, shape: Batched { batcher } })
        })
    }

    /// Registers async work that awaits I/O, at most the route's `concurrency` jobs at once.
    pub fn asynchronous<K: AsyncKind>(self, kind: K) -> Self {
        self.asynchronous_with(move |_| async move { Ok(Loaded::new(kind)) })
    }

    /// [`Self::asynchronous`], the kind made by `make` when this process serves it.
    pub fn asynchronous_with<K, F, Fut>(self, make: F) -> Self
    where
        K: AsyncKind,
        F: FnOnce(Setup) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Loaded<K>>> + Send + 'static,
    {
        self.register::<K, _, _>(Shape::Async, make, |loaded, setup| {
            let permits = Arc::new(Semaphore::new(setup.route.concurrency.max(1)));
            Arc::new(Typed { kind: Arc::new(loaded.kind), shape: Io { permits } })
        })
    }

    fn register<K, F, Fut>(mut self, kind: Shape, make: F, shape: fn(Loaded<K>, &Setup) -> Arc<dyn Runner>) -> Self
    where
        K: Kind,
        F: FnOnce(Setup) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Loaded<K>>> + Send + 'static,
    {
        let make: Factory = Box::new(move |setup: Setup| {
            async move {
                let mut loaded = make(setup.clone()).await?;
                let ready = loaded.ready.take();
                Ok((shape(loaded, &setup), ready))
            }
            .boxed()
        });
        self.pending.push(Pending { name: K::NAME, opt_in: false, shape: kind, defaults: K::route(), make });
        self
    }
}

/// Makes a served kind from its registration.
pub(crate) async fn make(pending: Pending, setup: Setup) -> anyhow::Result<Registered> {
    let route = setup.route.clone();
    let name = pending.name;
    let (runner, ready) = (pending.make)(setup).await.map_err(|e| e.context(format!("starting kind {name}")))?;
    Ok(Registered { runner, route, ready })
}
