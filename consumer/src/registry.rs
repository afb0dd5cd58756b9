//! The kinds a worker runs, their types erased behind [`Runner`]: the one thing the delivery
//! path knows of a kind. The path opens a job by the kind its envelope names (parse + validate,
//! into the kind's own input type, boxed as it is: its bytes are moved, never copied) and runs it
//! in the kind's shape (`shapes`); nothing in the path names a kind.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warren_common::{JobBody, JobError, Limits, Output};
use warren_infra::settings::Route;

use crate::decide::Lane;
use crate::pool::{Ran, WorkerPool};

/// A job's input, parsed into its kind's type.
pub type Input = Box<dyn Any + Send>;

/// How the delivery path asks a kind to run one job.
#[derive(Debug)]
pub struct RunCx<'a> {
    /// The job id (`message_id`).
    pub job_id: &'a str,
    pub attempt: u32,
    /// The returned lane runs its jobs alone, on its own slot: never batched.
    pub lane: Lane,
    /// The served queue's pool (blocking and batched kinds).
    pub pool: &'a WorkerPool,
    /// Closed when the job may no longer start (session lost, or draining).
    pub gate: &'a CancellationToken,
    pub limits: &'a Arc<Limits>,
    /// The route's; cut to the time left before `deadline` when the job starts.
    pub time_limit: Duration,
    /// The job's own deadline (its envelope's `deadline_ms`), if it has one.
    pub deadline: Option<std::time::Instant>,
    pub retry_timeouts: bool,
    /// Where the job's progress reports go.
    pub progress: warren_common::Progress,
    /// Raised when a cancel for the job arrives while it runs.
    pub cancel: warren_common::CancelFlag,
}

/// One registered kind, as the delivery path sees it.
pub trait Runner: Send + Sync {
    fn name(&self) -> &'static str;
    /// Parses the job into the kind's input (`invalid_params` when it does not fit).
    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError>;
    /// Checks a decoded input against `limits` (its ranges, the kind's own rules).
    fn validate(&self, input: &Input, limits: &Limits) -> Result<(), JobError>;
    /// Runs one opened job; [`Ran::NotStarted`] when the gate closed before it could start.
    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>>;
}

/// A served kind: its runner, its effective route and, when its backend can be down, its
/// readiness.
#[derive(Clone)]
pub struct Registered {
    pub runner: Arc<dyn Runner>,
    pub route: Route,
    /// None: always ready. While false, the kind's queues are not consumed.
    pub ready: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("kind", &self.runner.name()).field("route", &self.route).finish()
    }
}

impl Registered {
    pub fn is_ready(&self) -> bool {
        self.ready.as_ref().is_none_or(|r| *r.borrow())
    }
}

/// The kinds this worker serves, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    served: Vec<Registered>,
    /// Kinds registered in this binary but not served by this process (`consumer.kinds`).
    known: Vec<&'static str>,
}

/// Why a kind cannot run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No kind of that name is registered in this worker's binary.
    Unknown,
    /// Registered, but this process does not serve it (`consumer.kinds`).
    NotServed,
}

impl Registry {
    pub fn new(served: Vec<Registered>, known: Vec<&'static str>) -> Self {
        Self { served, known }
    }

    pub fn served(&self) -> &[Registered] {
        &self.served
    }

    pub fn get(&self, kind: &str) -> Result<&Registered, Missing> {
        match self.served.iter().find(|r| r.runner.name() == kind) {
            Some(r) => Ok(r),
            None if self.known.contains(&kind) => Err(Missing::NotServed),
            None => Err(Missing::Unknown),
        }
    }

    /// A kind for metric labels: a registered kind's name, or "unknown" (never a string from a
    /// message).
    pub fn label(&self, kind: &str) -> &'static str {
        self.served
            .iter()
            .map(|r| r.runner.name())
            .chain(self.known.iter().copied())
            .find(|k| *k == kind)
            .unwrap_or("unknown")
    }

    /// Readiness of every kind whose backend can be down.
    pub fn readiness(&self) -> Vec<watch::Receiver<bool>> {
        self.served.iter().filter_map(|r| r.ready.clone()).collect()
    }

    /// The served kinds that are not ready now.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.served.iter().filter(|r| !r.is_ready()).map(|r| r.runner.name()).collect()
    }
}
