//! What every command runs with.

use std::time::Duration;

use warren_common::Encoding;

use crate::client::Producer;

/// What every command runs with: the connected producer and the settings it applies to each job.
#[derive(Debug)]
pub struct Ctx {
    pub producer: Producer,
    /// `--encoding`; the configured default when `None`.
    pub encoding: Option<Encoding>,
    /// How long a result may take (`producer.result_timeout_ms`).
    pub result_timeout: Duration,
}
