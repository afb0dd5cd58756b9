//! The Warren worker: consumes the job queues its configuration names, runs each job on a
//! bounded blocking pool, publishes the result with a publisher confirm and only then acks the
//! input. Failures are dead-lettered with their reason; one bad message never stops the loop.

pub mod app;
pub mod batcher;
mod consume;
pub mod decide;
pub mod handler;
pub mod lender;
pub mod letters;
pub mod metrics;
mod model;
pub mod model_spec;
pub mod onnx;
pub mod pool;
mod session;
pub mod settle;
pub mod subscription;
pub mod triton;
pub mod triton_fit;
pub mod worker;

pub use app::{Application, Health};
pub use pool::WorkerPool;
