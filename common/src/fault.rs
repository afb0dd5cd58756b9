//! `fault`: fault injection, for drills and tests of the fleet's failure handling. A `fault` job
//! can fail transiently on its first attempts, panic, or keep its worker busy for a while. It
//! has no route in the default configuration; add one where drills are wanted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// Longest a `fault` job may keep a worker busy.
pub const MAX_BUSY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultJob {
    /// Fail with a transient error while the attempt number (from 0) is below this.
    #[serde(default)]
    pub transient_failures: u32,
    /// Panic inside the job.
    #[serde(default)]
    pub panic: bool,
    /// Keep the worker busy this long before answering, in milliseconds.
    #[serde(default)]
    pub busy_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultOutput {
    /// The attempt (from 0) that succeeded.
    pub attempt: u32,
}

impl FaultJob {
    pub fn validate(&self) -> Result<(), JobError> {
        if Duration::from_millis(self.busy_ms) > MAX_BUSY {
            return Err(JobError::InvalidParams(format!("busy_ms must be at most {}", MAX_BUSY.as_millis())));
        }
        Ok(())
    }
}

pub fn fault(job: &FaultJob, attempt: u32) -> Result<FaultOutput, JobError> {
    let until = Instant::now() + Duration::from_millis(job.busy_ms);
    while Instant::now() < until {
        // Sleep in short steps: a busy worker that a time limit gave up on still ends soon.
        std::thread::sleep(Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())));
    }
    if job.panic {
        panic!("fault job asked to panic");
    }
    if attempt < job.transient_failures {
        return Err(JobError::Injected(format!(
            "injected transient failure on attempt {attempt} of the first {}",
            job.transient_failures
        )));
    }
    Ok(FaultOutput { attempt })
}
