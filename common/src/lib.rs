//! Warren's domain: job and result entities, the message contract, the use cases that run each job
//! kind as plain synchronous functions, and the ports adapters implement.
//!
//! Invariant: this crate is pure. It never depends on an async runtime, the broker client, ONNX
//! Runtime or HTTP (CI checks `cargo tree -p warren-common -e normal`), so every use case can be
//! unit-tested directly and run by the consumer inside `spawn_blocking`.

pub mod bytes;
pub mod cancel;
pub mod checksum;
pub mod classify;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod fault;
pub mod headers;
pub mod image_io;
pub mod job;
pub mod kind;
pub mod limits;
pub mod names;
#[cfg(feature = "pipelines")]
pub mod quality;
pub mod resize;
pub mod result;
pub mod retry;

pub use bytes::Ref;
pub use codec::Encoding;
pub use envelope::{
    BINCODE_CONTROL_VERSION, BINCODE_OUTPUT_VERSION, Control, ENVELOPE_VERSION, JobBody, JobEnvelope, Opened,
};
pub use error::{ErrorClass, JobError};
pub use job::Job;
pub use kind::{AsyncKind, BatchKind, BlockingKind, CancelFlag, Context, Kind, Progress, RouteDefaults};
pub use limits::Limits;
pub use result::{JobResult, Output, ResultStatus, Timing};
