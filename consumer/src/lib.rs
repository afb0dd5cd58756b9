//! The Warren worker, as a library: register job kinds on a [`WorkerBuilder`], then run it. It
//! consumes the queues of the kinds it serves, runs each job in its kind's shape (the bounded
//! blocking pool, the micro-batcher, or the runtime under the kind's concurrency limit),
//! publishes the result with a publisher confirm and only then acks the input. Failures are
//! retried or dead-lettered with their reason; one bad message never stops the loop.
//!
//! The stock `warren-consumer` binary is [`builtin::worker`]`().main()`.

pub mod app;
pub mod batcher;
pub mod builder;
pub mod builtin;
pub mod cancels;
mod cli;
mod consume;
pub mod decide;
pub mod events;
pub mod handler;
pub mod health;
pub mod lender;
pub mod letters;
pub mod metrics;
mod model;
pub mod model_spec;
pub mod onnx;
pub mod pool;
pub mod python;
pub mod registry;
pub mod routes;
mod session;
pub mod settle;
mod shapes;
pub mod store;
pub mod subscription;
pub mod triton;
pub mod triton_fit;
pub mod worker;

pub use app::Application;
pub use builder::{Loaded, Setup, WorkerBuilder};
pub use health::Health;
pub use pool::WorkerPool;
/// Warren's domain crate: the kind traits, the error type, limits, image decoding and bytes
/// fields' serde (`common::bytes`), for kinds of a user's own.
pub use warren_common as common;
pub use warren_common::{AsyncKind, BatchKind, BlockingKind, Context, JobError, Kind, Limits, RouteDefaults};
