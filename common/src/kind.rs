//! A job kind: one trait implementation, the unit a team adds to Warren.
//!
//! [`Kind`] names the kind and its types, validates an input and gives its route's defaults;
//! one of three shapes says how its work runs:
//! - [`BlockingKind`]: synchronous CPU work, run on the worker's bounded blocking pool;
//! - [`BatchKind`]: work that gains from running several inputs at once (a model), gathered by
//!   the worker's micro-batcher and run on the pool;
//! - [`AsyncKind`]: work that awaits I/O (another service, a database), run on the async runtime
//!   under the kind's own concurrency limit, never on the blocking pool.
//!
//! A kind's resources (a model session, an HTTP client) are fields of the value registered with
//! the worker; everything about one job (its attempt, deadline, limits, span) comes in its
//! [`Context`]. This module is pure: the worker (warren-consumer) carries the shapes out.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::JobError;
use crate::limits::Limits;
use crate::retry::RetryPolicy;

/// What every kind declares. `NAME` is its routing key, its envelope `kind`, the key of its
/// output in a result, and its metric label: lowercase, dot-separated words (`image.resize`).
pub trait Kind: Send + Sync + 'static {
    const NAME: &'static str;
    /// The job's parameters as the envelope's `job` carries them (JSON or bincode).
    type Input: Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static;
    /// What a result's `output` carries, under the key `NAME`.
    type Output: Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static;

    /// Checks an input against the worker's limits before any work; an error here is
    /// permanent by convention (`invalid_params`, `limit_exceeded`, or a type of the kind's own).
    fn validate(&self, input: &Self::Input, limits: &Limits) -> Result<(), JobError> {
        let _ = (input, limits);
        Ok(())
    }

    /// The defaults of this kind's route; `[[routes]]` in the configuration overrides them.
    fn route() -> RouteDefaults {
        RouteDefaults::default()
    }
}

/// Synchronous work, run on a thread of the bounded blocking pool.
pub trait BlockingKind: Kind {
    fn run(&self, input: Self::Input, cx: &Context) -> Result<Self::Output, JobError>;
}

/// Work run several inputs at once. Each input keeps its own outcome: the answer has one entry
/// per input, in order (a missing entry fails its job). The inputs are lent, not given: a batch
/// that panics is run again one input at a time, so that only the input that panics fails.
pub trait BatchKind: Kind {
    fn run_batch(&self, batch: &[(Self::Input, Context)]) -> Vec<Result<Self::Output, JobError>>;
}

/// Work that awaits I/O, on the async runtime, at most `RouteDefaults::concurrency` at once.
/// The future must not block its thread; it is dropped (cancelled) at the job's time limit.
pub trait AsyncKind: Kind {
    fn run(&self, input: Self::Input, cx: Context) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}

/// One job's circumstances.
#[derive(Debug, Clone)]
pub struct Context {
    /// Which attempt this is, from 0.
    pub attempt: u32,
    /// When the job's time limit passes, cut to its own deadline (the envelope's `deadline_ms`)
    /// when that comes first; the worker gives the job up then.
    pub deadline: Instant,
    pub limits: Arc<Limits>,
    /// The job's span (job id, kind, attempt, trace id); the worker enters it around the work.
    pub span: tracing::Span,
    /// Where [`Context::progress`] reports go (a `progress` lifecycle event).
    pub reporter: Progress,
    /// Raised when the job is cancelled while it runs ([`Context::is_cancelled`]).
    pub cancel: CancelFlag,
}

/// A running job's cancellation: raised by the worker when a cancel for it arrives. The job
/// decides what to do (stop early with an error, or finish): cancellation of a running job is
/// cooperative, and a result it still sends is delivered as usual.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `other` is this very flag (not one that happens to be raised alike).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A job's progress reports: to the worker's lifecycle events, or nowhere.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Report>>);

/// What receives a job's progress: a fraction and a short text.
type Report = dyn Fn(f64, &str) + Send + Sync;

impl Progress {
    pub fn to(report: impl Fn(f64, &str) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(report)))
    }

    /// Reports `fraction` (0 to 1, clamped; NaN is 0) and a short text, if anyone listens.
    pub fn report(&self, fraction: f64, text: &str) {
        if let Some(report) = &self.0 {
            let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
            report(fraction, text);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(reported)" } else { "Progress(none)" })
    }
}

impl Context {
    pub fn new(attempt: u32, deadline: Instant, limits: Arc<Limits>) -> Self {
        Self {
            attempt,
            deadline,
            limits,
            span: tracing::Span::current(),
            reporter: Progress::default(),
            cancel: CancelFlag::default(),
        }
    }

    pub fn with_progress(mut self, reporter: Progress) -> Self {
        self.reporter = reporter;
        self
    }

    pub fn with_cancel(mut self, cancel: CancelFlag) -> Self {
        self.cancel = cancel;
        self
    }

    /// Whether the job was cancelled (`warrenctl cancel`, a client's `cancel`) while running:
    /// a long job checks it now and then and may stop early, e.g. with
    /// `JobError::Cancelled`; its result, if it sends one, is delivered as usual.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_raised()
    }

    /// Reports how far the job is (`fraction`, 0 to 1, clamped) with a short text: a `progress`
    /// lifecycle event for consoles. Cheap and never blocks; the worker publishes at most a few
    /// a second per job and drops the rest.
    pub fn progress(&self, fraction: f64, text: &str) {
        self.reporter.report(fraction, text);
    }

    /// Time left before the deadline (zero once past it).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// A kind's route, before the configuration's overrides. `queue` empty means `warren.<NAME>`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDefaults {
    pub queue: String,
    /// Longest one job may run (for a batch: one batch).
    pub time_limit: Duration,
    /// None: the worker's `[retry]` policy.
    pub retry: Option<RetryPolicy>,
    /// Unacked deliveries per consumer of the queue; 0: the worker's default.
    pub prefetch: u16,
    /// Batched kinds: most inputs per run, and how long the first waits for others.
    pub max_batch: usize,
    pub max_batch_wait: Duration,
    /// Async kinds: jobs awaiting at once in one worker.
    pub concurrency: usize,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        Self {
            queue: String::new(),
            time_limit: Duration::from_secs(60),
            retry: None,
            prefetch: 0,
            max_batch: 1,
            max_batch_wait: Duration::from_millis(5),
            concurrency: 16,
        }
    }
}

/// Whether `name` can be a kind's name: 1 to 100 characters of `a-z`, `0-9`, `_`, `-`, with
/// dots between words (it is a topic routing key and a metric label).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.split('.').all(|w| {
            !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_routing_keys_and_labels() {
        for ok in ["checksum", "image.resize", "ml.classify", "video.probe_v2", "a-b.c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Image.resize", "a..b", ".a", "a.", "a b", "a#", "a*", &"x".repeat(101)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
