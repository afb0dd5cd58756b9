//! The job envelope: a version, the job kind and the kind's parameters.
//!
//! JSON: `{"version": 1, "kind": "image.resize", "job": {...}}`.
//! Bincode: the tuple `(version: u32, kind: String, job)` in bincode 2's standard configuration.
//! The version is read first and on its own, so an envelope of an unknown major version is
//! refused with that reason whatever the rest of it looks like. Unknown JSON fields are ignored,
//! so minor, additive changes need no new version.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::codec::{Encoding, bincode_config, decode_bincode_prefix};
use crate::error::JobError;
use crate::job::{Job, JobKind};

/// The major version of the envelope this code reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct JobEnvelope;

impl JobEnvelope {
    pub fn encode(job: &Job, encoding: Encoding) -> Result<Vec<u8>, JobError> {
        match job {
            Job::Resize(j) => encode_parts(job.kind(), j, encoding),
            Job::Classify(j) => encode_parts(job.kind(), j, encoding),
            Job::Checksum(j) => encode_parts(job.kind(), j, encoding),
            Job::Fault(j) => encode_parts(job.kind(), j, encoding),
        }
    }

    /// Parses an envelope. Does not check the job against limits: see [`Job::validate`].
    pub fn decode(body: &[u8], encoding: Encoding) -> Result<Job, JobError> {
        match encoding {
            Encoding::Json => decode_json(body),
            Encoding::Bincode => decode_bincode(body),
        }
    }

    /// The kind named by an envelope, if it can be read at all; for labelling failures.
    pub fn peek_kind(body: &[u8], encoding: Encoding) -> Option<String> {
        match encoding {
            Encoding::Json => {
                #[derive(serde::Deserialize)]
                struct KindOnly {
                    kind: String,
                }
                serde_json::from_slice::<KindOnly>(body).ok().map(|k| k.kind)
            }
            Encoding::Bincode => {
                let (_, used) = decode_bincode_prefix::<u32>(body).ok()?;
                decode_bincode_prefix::<String>(&body[used..]).ok().map(|(k, _)| k)
            }
        }
    }
}

fn encode_parts<T: Serialize>(kind: JobKind, job: &T, encoding: Encoding) -> Result<Vec<u8>, JobError> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        version: u32,
        kind: &'a str,
        job: &'a T,
    }
    let out = match encoding {
        Encoding::Json => serde_json::to_vec(&Envelope { version: ENVELOPE_VERSION, kind: kind.as_str(), job })
            .map_err(|e| e.to_string()),
        Encoding::Bincode => bincode::serde::encode_to_vec((ENVELOPE_VERSION, kind.as_str(), job), bincode_config())
            .map_err(|e| e.to_string()),
    };
    out.map_err(JobError::Encode)
}

fn decode_json(body: &[u8]) -> Result<Job, JobError> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct V1<'a> {
        kind: String,
        #[serde(borrow)]
        job: &'a RawValue,
    }
    let malformed = |e: serde_json::Error| JobError::MalformedEnvelope(e.to_string());
    let head: VersionOnly = serde_json::from_slice(body).map_err(malformed)?;
    check_version(head.version.as_u64().ok_or_else(|| {
        JobError::MalformedEnvelope(format!("version must be a positive integer, got {}", head.version))
    })?)?;
    let v1: V1<'_> = serde_json::from_slice(body).map_err(malformed)?;
    let kind = JobKind::parse(&v1.kind)?;
    let raw = v1.job.get().as_bytes();
    Ok(match kind {
        JobKind::ImageResize => Job::Resize(json_job(raw)?),
        JobKind::MlClassify => Job::Classify(json_job(raw)?),
        JobKind::Checksum => Job::Checksum(json_job(raw)?),
        JobKind::Fault => Job::Fault(json_job(raw)?),
    })
}

fn json_job<T: DeserializeOwned>(raw: &[u8]) -> Result<T, JobError> {
    serde_json::from_slice(raw).map_err(|e| JobError::InvalidParams(format!("job: {e}")))
}

fn decode_bincode(body: &[u8]) -> Result<Job, JobError> {
    let malformed = |e: String| JobError::MalformedEnvelope(format!("bincode: {e}"));
    let (version, used) = decode_bincode_prefix::<u32>(body).map_err(malformed)?;
    check_version(u64::from(version))?;
    let rest = &body[used..];
    let (kind, used) = decode_bincode_prefix::<String>(rest).map_err(malformed)?;
    let kind = JobKind::parse(&kind)?;
    let rest = &rest[used..];
    Ok(match kind {
        JobKind::ImageResize => Job::Resize(bincode_job(rest)?),
        JobKind::MlClassify => Job::Classify(bincode_job(rest)?),
        JobKind::Checksum => Job::Checksum(bincode_job(rest)?),
        JobKind::Fault => Job::Fault(bincode_job(rest)?),
    })
}

fn bincode_job<T: DeserializeOwned>(rest: &[u8]) -> Result<T, JobError> {
    Encoding::Bincode.decode(rest).map_err(|e| JobError::InvalidParams(format!("job: {e}")))
}

fn check_version(found: u64) -> Result<(), JobError> {
    if found == u64::from(ENVELOPE_VERSION) {
        Ok(())
    } else {
        Err(JobError::UnsupportedVersion { found, supported: ENVELOPE_VERSION })
    }
}
