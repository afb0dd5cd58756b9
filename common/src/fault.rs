//! `fault`: fault injection, for drills and tests of the fleet's failure handling. A `fault` job
//! can fail transiently on its first attempts, panic, keep its worker busy for a while, never
//! end, abort its whole process, or produce an output that cannot be encoded. It has no route in
//! the default configuration; add one where drills are wanted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::kind::{BlockingKind, Context, Kind};
use crate::limits::Limits;

/// Longest a `fault` job may keep a worker busy.
pub const MAX_BUSY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    /// Never return: the job's thread sleeps until its process ends (a job stuck for good).
    #[serde(default)]
    pub hang: bool,
    /// Abort the whole worker process (a crash in native code, say), after `busy_ms`.
    #[serde(default)]
    pub abort: bool,
    /// Succeed with an output whose encoding fails (a result that cannot be written).
    #[serde(default)]
    pub unencodable_output: bool,
    /// While busy, stop early when the job is cancelled (its context says so), failing with
    /// `cancelled`: a job that takes cancellation into account. Without it a cancelled
    /// running job runs to its end and answers as usual.
    #[serde(default)]
    pub stop_when_cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FaultOutput {
    /// The attempt (from 0) that succeeded.
    pub attempt: u32,
    /// Set by `unencodable_output`: encoding this output fails.
    #[serde(default)]
    pub unencodable: bool,
}

/// `{"attempt": n}` in JSON; both fields in bincode, whose fields cannot be left out (a reader
/// takes them by position); an error when `unencodable` is set.
impl Serialize for FaultOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        if self.unencodable {
            return Err(serde::ser::Error::custom("the fault job asked for an output that cannot be encoded"));
        }
        let human = s.is_human_readable();
        let mut out = s.serialize_struct("FaultOutput", if human { 1 } else { 2 })?;
        out.serialize_field("attempt", &self.attempt)?;
        if !human {
            out.serialize_field("unencodable", &false)?;
        }
        out.end()
    }
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
    fault_reporting(job, attempt, |_| {}, || false)
}

/// [`fault`], reporting how much of `busy_ms` has passed as it goes, and asking `cancelled`
/// (with `stop_when_cancelled`).
pub fn fault_reporting(
    job: &FaultJob,
    attempt: u32,
    progress: impl Fn(f64),
    cancelled: impl Fn() -> bool,
) -> Result<FaultOutput, JobError> {
    let start = Instant::now();
    let busy = Duration::from_millis(job.busy_ms);
    let until = start + busy;
    while Instant::now() < until {
        progress(start.elapsed().as_secs_f64() / busy.as_secs_f64());
        if job.stop_when_cancelled && cancelled() {
            return Err(JobError::Cancelled(format!("stopped after {:?} of its run", start.elapsed())));
        }
        // Sleep in short steps: a busy worker that a time limit gave up on still ends soon.
        std::thread::sleep(Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())));
    }
    if job.abort {
        std::process::abort();
    }
    if job.hang {
        // On purpose: nothing ends this job but the end of its process.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
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
    Ok(FaultOutput { attempt, unencodable: job.unencodable_output })
}

/// The `fault` kind: drills and tests only, no route by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fault;

impl Kind for Fault {
    const NAME: &'static str = "fault";
    type Input = FaultJob;
    type Output = FaultOutput;

    fn validate(&self, input: &FaultJob, _limits: &Limits) -> Result<(), JobError> {
        input.validate()
    }
}

impl BlockingKind for Fault {
    fn run(&self, input: FaultJob, cx: &Context) -> Result<FaultOutput, JobError> {
        fault_reporting(&input, cx.attempt, |f| cx.progress(f, "busy"), || cx.is_cancelled())
    }
}

impl From<FaultJob> for crate::job::Job {
    fn from(job: FaultJob) -> Self {
        crate::job::Job::new::<Fault>(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoding;

    #[test]
    fn an_unencodable_output_fails_to_encode_in_both_encodings() {
        let out = fault(&FaultJob { unencodable_output: true, ..FaultJob::default() }, 0).expect("runs");
        assert!(serde_json::to_vec(&out).is_err());
        assert!(Encoding::Bincode.encode(&out).is_err());
        let fine = fault(&FaultJob::default(), 0).expect("runs");
        assert!(serde_json::to_vec(&fine).is_ok());
    }
}
