//! The job kinds Warren runs, their outputs, and the dispatch from a parsed job to its use case.
//!
//! Adding a kind means: a request and output type with its use case in a module of this crate,
//! a variant here, and a route in `config/`. Nothing in the consumer changes.

use serde::{Deserialize, Serialize};

use crate::checksum::{ChecksumJob, ChecksumOutput};
use crate::classify::{Classifier, ClassifyJob, ClassifyOutput};
use crate::error::JobError;
use crate::fault::{FaultJob, FaultOutput};
use crate::limits::Limits;
use crate::resize::{ResizeJob, ResizeOutput};

/// The kinds of job, named on the wire (and used as routing keys) by [`JobKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    ImageResize,
    MlClassify,
    Checksum,
    Fault,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [Self::ImageResize, Self::MlClassify, Self::Checksum, Self::Fault];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageResize => "image.resize",
            Self::MlClassify => "ml.classify",
            Self::Checksum => "checksum",
            Self::Fault => "fault",
        }
    }

    pub fn parse(s: &str) -> Result<Self, JobError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| JobError::UnknownKind(s.to_owned()))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated job.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Resize(ResizeJob),
    Classify(ClassifyJob),
    Checksum(ChecksumJob),
    Fault(FaultJob),
}

impl Job {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::Resize(_) => JobKind::ImageResize,
            Self::Classify(_) => JobKind::MlClassify,
            Self::Checksum(_) => JobKind::Checksum,
            Self::Fault(_) => JobKind::Fault,
        }
    }

    /// The same job with `data` as its input (image or bytes): build one job as a template,
    /// stamp it for each input.
    pub fn with_input(&self, data: Vec<u8>) -> Job {
        let mut job = self.clone();
        match &mut job {
            Self::Resize(j) => j.image = data,
            Self::Classify(j) => j.image = data,
            Self::Checksum(j) => j.data = data,
            Self::Fault(_) => {}
        }
        job
    }

    /// Checks the parameters against this worker's limits; a violation is a permanent error.
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        match self {
            Self::Resize(j) => j.validate(limits),
            Self::Classify(j) => j.validate(),
            Self::Checksum(j) => j.validate(limits),
            Self::Fault(j) => j.validate(),
        }
    }
}

/// A job's successful output. On the wire it is an object with one key, the job kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobOutput {
    #[serde(rename = "image.resize")]
    Resize(ResizeOutput),
    #[serde(rename = "ml.classify")]
    Classify(ClassifyOutput),
    #[serde(rename = "checksum")]
    Checksum(ChecksumOutput),
    #[serde(rename = "fault")]
    Fault(FaultOutput),
}

/// What the use cases need from their surroundings: limits, and the model port when this
/// worker serves `ml.classify`.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    pub limits: &'a Limits,
    pub classifier: Option<&'a dyn Classifier>,
    /// Which attempt this is, from 0.
    pub attempt: u32,
}

impl std::fmt::Debug for Services<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("limits", self.limits)
            .field("classifier", &self.classifier.map(|c| c.spec().name.clone()))
            .finish()
    }
}

/// Runs a job to completion on the calling thread. CPU-bound: callers on an async runtime must
/// run it on a blocking pool.
pub fn run(job: &Job, services: Services<'_>) -> Result<JobOutput, JobError> {
    match job {
        Job::Resize(j) => crate::resize::resize(j, services.limits).map(JobOutput::Resize),
        Job::Classify(j) => {
            let model = services
                .classifier
                .ok_or_else(|| JobError::ModelUnavailable("this worker has no model loaded".into()))?;
            crate::classify::classify(j, model, services.limits).map(JobOutput::Classify)
        }
        Job::Checksum(j) => Ok(JobOutput::Checksum(crate::checksum::checksum(j))),
        Job::Fault(j) => crate::fault::fault(j, services.attempt).map(JobOutput::Fault),
    }
}
