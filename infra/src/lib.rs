//! What every Warren binary shares at its edges: layered settings, telemetry, the AMQP
//! connection, topology declaration and publishing with confirms.
//!
//! `warren-common` defines the contract; this crate is the adapter that puts it on the wire.

pub mod alloc;
pub mod backoff;
pub mod broker;
pub mod cancels;
pub mod fields;
pub mod metrics;
pub mod nodes;
pub mod publish;
pub mod redact;
pub mod serve;
pub mod settings;
pub mod telemetry;
pub mod topology;

pub use broker::{Connected, connect, connect_node};
pub use publish::{PublishError, Publisher};
pub use redact::redact_url;
pub use settings::Settings;
