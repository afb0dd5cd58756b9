//! `checksum`: the trivial kind, for measuring the fleet's own overhead. CRC-32 of the data,
//! optionally `rounds` times over (each round continues the same hasher), which gives benchmarks
//! and tests a job whose CPU cost they choose.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::kind::{BlockingKind, Context, Kind, RouteDefaults};
use crate::limits::Limits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksumJob {
    #[serde(with = "crate::bytes")]
    pub data: Vec<u8>,
    /// How many times to hash the data (default 1).
    #[serde(default = "one")]
    pub rounds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumOutput {
    /// Length of the data, in bytes.
    pub bytes: u64,
    pub rounds: u32,
    /// CRC-32 (IEEE) over `rounds` repetitions of the data.
    pub crc32: u32,
}

impl ChecksumJob {
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        if self.rounds == 0 || self.rounds > limits.max_checksum_rounds {
            return Err(JobError::InvalidParams(format!(
                "rounds must be between 1 and {}, got {}",
                limits.max_checksum_rounds, self.rounds
            )));
        }
        Ok(())
    }
}

pub fn checksum(job: &ChecksumJob) -> ChecksumOutput {
    let mut h = crc32fast::Hasher::new();
    for _ in 0..job.rounds {
        h.update(&job.data);
    }
    ChecksumOutput { bytes: job.data.len() as u64, rounds: job.rounds, crc32: h.finalize() }
}

/// The `checksum` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checksum;

impl Kind for Checksum {
    const NAME: &'static str = "checksum";
    type Input = ChecksumJob;
    type Output = ChecksumOutput;

    fn validate(&self, input: &ChecksumJob, limits: &Limits) -> Result<(), JobError> {
        input.validate(limits)
    }

    fn route() -> RouteDefaults {
        RouteDefaults { time_limit: Duration::from_secs(30), ..RouteDefaults::default() }
    }
}

impl BlockingKind for Checksum {
    fn run(&self, input: ChecksumJob, _cx: &Context) -> Result<ChecksumOutput, JobError> {
        Ok(checksum(&input))
    }
}

impl From<ChecksumJob> for crate::job::Job {
    fn from(job: ChecksumJob) -> Self {
        crate::job::Job::new::<Checksum>(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_known_vector() {
        // The standard CRC-32 check value.
        let out = checksum(&ChecksumJob { data: b"123456789".to_vec(), rounds: 1 });
        assert_eq!(out.crc32, 0xCBF4_3926);
        assert_eq!(out.bytes, 9);
    }

    #[test]
    fn rounds_continue_the_hash() {
        let twice = checksum(&ChecksumJob { data: b"ab".to_vec(), rounds: 2 });
        let once = checksum(&ChecksumJob { data: b"abab".to_vec(), rounds: 1 });
        assert_eq!(twice.crc32, once.crc32);
    }

    #[test]
    fn zero_rounds_is_invalid() {
        let job = ChecksumJob { data: vec![], rounds: 0 };
        assert_eq!(job.validate(&Limits::default()).unwrap_err().error_type(), "invalid_params");
    }
}
