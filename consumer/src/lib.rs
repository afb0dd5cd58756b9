//! The Warren worker: consumes the job queues its configuration names, runs each job on a
//! bounded blocking pool, publishes the result with a publisher confirm and only then acks the
//! input. Failures are dead-lettered with their reason; one bad message never stops the loop.

pub mod app;
pub mod batcher;
pub mod failure;
pub mod handler;
pub mod metrics;
pub mod onnx;
pub mod pool;
pub mod redelivery;
mod session;

pub use app::{Application, Health};
pub use pool::WorkerPool;
