//! The result message a worker publishes for every job it finishes or gives up on while a reply
//! is expected. It carries the job id, so consumers of results can drop at-least-once duplicates.

use serde::{Deserialize, Serialize};

use crate::codec::Encoding;
use crate::envelope::ENVELOPE_VERSION;
use crate::error::{ErrorInfo, JobError};
use crate::job::JobOutput;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Ok,
    Error,
}

/// When the job ran, in microseconds since the Unix epoch, on the worker's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timing {
    pub started_at_us: u64,
    pub finished_at_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub version: u32,
    pub job_id: String,
    /// The job kind as the envelope named it (may be unknown to this worker).
    pub kind: String,
    pub status: ResultStatus,
    pub output: Option<JobOutput>,
    pub error: Option<ErrorInfo>,
    /// The attempt that produced this result, counting from 0.
    pub attempt: u32,
    /// The consumer that produced it.
    pub worker: String,
    pub timing: Timing,
}

impl JobResult {
    pub fn ok(job_id: String, kind: String, output: JobOutput, attempt: u32, worker: String, timing: Timing) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            job_id,
            kind,
            status: ResultStatus::Ok,
            output: Some(output),
            error: None,
            attempt,
            worker,
            timing,
        }
    }

    pub fn failed(
        job_id: String,
        kind: String,
        error: &JobError,
        attempt: u32,
        worker: String,
        timing: Timing,
    ) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            job_id,
            kind,
            status: ResultStatus::Error,
            output: None,
            error: Some(error.into()),
            attempt,
            worker,
            timing,
        }
    }

    pub fn encode(&self, encoding: Encoding) -> Result<Vec<u8>, JobError> {
        encoding.encode(self).map_err(JobError::Encode)
    }

    pub fn decode(body: &[u8], encoding: Encoding) -> Result<Self, JobError> {
        encoding.decode(body).map_err(JobError::MalformedEnvelope)
    }
}
