//! The job envelope: a version, the job kind and the kind's parameters.
//!
//! JSON: `{"version": 1, "kind": "image.resize", "job": {...}}`, with the optional job control
//! fields `deadline_ms` and `not_before_ms` beside `kind` ([`Control`]).
//! Bincode: the tuple `(version: u32, kind: String, job)` in bincode 2's standard configuration,
//! `job` being the kind's input type written by serde (docs/contract.md gives each built-in
//! kind's layout); version 2 carries the control between them:
//! `(2, kind, (deadline_ms: Option<u64>, not_before_ms: Option<u64>), job)`, and version 3 the
//! output's destination too: `(3, kind, (deadline_ms, not_before_ms, output_to: Option<String>),
//! job)`. A writer uses the lowest version that carries what is set, so workers that read only
//! version 1 keep reading every job without control fields.
//! `output_to` (JSON: beside `kind`) names a prefix (`s3://bucket/out/`, `file:///mnt/out/`)
//! under which the worker stores the output's bytes fields, the result carrying references.
//! The version is read first and on its own, so an envelope of an unknown major version is
//! refused with that reason whatever the rest of it looks like. Unknown JSON fields are ignored,
//! so minor, additive changes need no new version. Reading stops at the kind: the job's own
//! bytes are parsed by whoever knows the kind's type ([`JobBody::decode`]).

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::codec::{Encoding, bincode_config, decode_bincode_prefix};
use crate::error::JobError;
use crate::job::{InputOf, Job};

/// The major version of the JSON envelope (and of results) this code reads and writes.
pub const ENVELOPE_VERSION: u32 = 1;
/// The bincode envelope's version with a [`Control`]; version 1 is read and written beside it.
pub const BINCODE_CONTROL_VERSION: u32 = 2;
/// The bincode envelope's version with a [`Control`] and an `output_to`.
pub const BINCODE_OUTPUT_VERSION: u32 = 3;

/// When a job may run: the producer's control over it, from the envelope. Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Control {
    /// Past this, the job is not worth doing: it is not started, nor retried past it
    /// (`deadline_exceeded`).
    pub deadline_ms: Option<u64>,
    /// Not before this: until then the job waits in its route's delay queues.
    pub not_before_ms: Option<u64>,
}

impl Control {
    pub fn is_empty(&self) -> bool {
        self.deadline_ms.is_none() && self.not_before_ms.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobEnvelope;

/// An envelope read up to its kind: the kind's name and the job's bytes, not yet parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened<'a> {
    pub kind: &'a str,
    pub job: JobBody<'a>,
    pub control: Control,
    /// Where the output's bytes go (a prefix URL), if the producer named a place. Borrowed
    /// from the body, unless JSON escapes in it had to be undone.
    pub output_to: Option<std::borrow::Cow<'a, str>>,
}

/// The `job` part of an envelope, borrowed from the message body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobBody<'a> {
    /// The JSON text of the `job` value.
    Json(&'a str),
    /// The bincode bytes after the kind, to the end of the body.
    Bincode(&'a [u8]),
}

impl JobBody<'_> {
    /// Parses the job as `T`; a job that does not fit is `invalid_params`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        let parsed = match self {
            Self::Json(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
            Self::Bincode(bytes) => Encoding::Bincode.decode(bytes),
        };
        parsed.map_err(|e| JobError::InvalidParams(format!("job: {e}")))
    }
}

impl JobEnvelope {
    pub fn encode(job: &Job, encoding: Encoding) -> Result<Vec<u8>, JobError> {
        Self::encode_with(job, encoding, Control::default())
    }

    /// [`Self::encode`] with the job's control fields (bincode version 2 when any is set).
    pub fn encode_with(job: &Job, encoding: Encoding, control: Control) -> Result<Vec<u8>, JobError> {
        Self::encode_full(job, encoding, control, None)
    }

    /// [`Self::encode_with`] and where the output's bytes go (bincode version 3 when given).
    pub fn encode_full(
        job: &Job,
        encoding: Encoding,
        control: Control,
        output_to: Option<&str>,
    ) -> Result<Vec<u8>, JobError> {
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            version: u32,
            kind: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            deadline_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            not_before_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            output_to: Option<&'a str>,
            job: InputOf<'a>,
        }
        let (kind, input) = (job.kind(), InputOf(job));
        let out = match encoding {
            Encoding::Json => serde_json::to_vec(&Envelope {
                version: ENVELOPE_VERSION,
                kind,
                deadline_ms: control.deadline_ms,
                not_before_ms: control.not_before_ms,
                output_to,
                job: input,
            })
            .map_err(|e| e.to_string()),
            Encoding::Bincode if !job.is_typed() => {
                Err(format!("a {kind} job given as JSON cannot be written as bincode: publish it as JSON"))
            }
            Encoding::Bincode if output_to.is_some() => bincode::serde::encode_to_vec(
                (BINCODE_OUTPUT_VERSION, kind, (control.deadline_ms, control.not_before_ms, output_to), input),
                bincode_config(),
            )
            .map_err(|e| e.to_string()),
            Encoding::Bincode if control.is_empty() => {
                bincode::serde::encode_to_vec((ENVELOPE_VERSION, kind, input), bincode_config())
                    .map_err(|e| e.to_string())
            }
            Encoding::Bincode => bincode::serde::encode_to_vec(
                (BINCODE_CONTROL_VERSION, kind, (control.deadline_ms, control.not_before_ms), input),
                bincode_config(),
            )
            .map_err(|e| e.to_string()),
        };
        out.map_err(JobError::Encode)
    }

    /// Reads an envelope up to its kind. Does not look at the job: see [`JobBody::decode`].
    pub fn open(body: &[u8], encoding: Encoding) -> Result<Opened<'_>, JobError> {
        match encoding {
            Encoding::Json => open_json(body),
            Encoding::Bincode => open_bincode(body),
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
                // The kind comes second in every version.
                decode_bincode_prefix::<String>(&body[used..]).ok().map(|(k, _)| k)
            }
        }
    }
}

fn open_json(body: &[u8]) -> Result<Opened<'_>, JobError> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct V1<'a> {
        #[serde(borrow)]
        kind: &'a str,
        #[serde(borrow)]
        job: &'a RawValue,
        #[serde(default)]
        deadline_ms: Option<u64>,
        #[serde(default)]
        not_before_ms: Option<u64>,
        #[serde(default, borrow)]
        output_to: Option<std::borrow::Cow<'a, str>>,
    }
    let malformed = |e: serde_json::Error| JobError::MalformedEnvelope(e.to_string());
    let head: VersionOnly = serde_json::from_slice(body).map_err(malformed)?;
    check_version(
        head.version.as_u64().ok_or_else(|| {
            JobError::MalformedEnvelope(format!("version must be a positive integer, got {}", head.version))
        })?,
        ENVELOPE_VERSION,
    )?;
    // A kind written with escapes cannot be borrowed; no kind name needs any.
    let v1: V1<'_> = serde_json::from_slice(body).map_err(malformed)?;
    let control = Control { deadline_ms: v1.deadline_ms, not_before_ms: v1.not_before_ms };
    Ok(Opened { kind: v1.kind, job: JobBody::Json(v1.job.get()), control, output_to: v1.output_to })
}

fn open_bincode(body: &[u8]) -> Result<Opened<'_>, JobError> {
    let malformed = |e: String| JobError::MalformedEnvelope(format!("bincode: {e}"));
    let (version, used) = decode_bincode_prefix::<u32>(body).map_err(malformed)?;
    check_version(u64::from(version), BINCODE_OUTPUT_VERSION)?;
    let rest = &body[used..];
    let (len, len_used) = decode_bincode_prefix::<u64>(rest).map_err(malformed)?;
    let end = usize::try_from(len).ok().and_then(|l| len_used.checked_add(l)).filter(|&e| e <= rest.len());
    let Some(end) = end else { return Err(malformed(format!("kind of {len} bytes past the end of the body"))) };
    let kind = std::str::from_utf8(&rest[len_used..end]).map_err(|e| malformed(format!("kind: {e}")))?;
    let (control, output_to, job) = if version == BINCODE_OUTPUT_VERSION {
        let ((deadline_ms, not_before_ms, output_to_len), used) =
            decode_bincode_prefix::<(Option<u64>, Option<u64>, Option<u64>)>(&rest[end..]).map_err(malformed)?;
        // The string is borrowed from the body: its length prefix has just been read.
        let start = end + used;
        let (output_to, job_start) = match output_to_len {
            None => (None, start),
            Some(len) => {
                let stop = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= rest.len());
                let Some(stop) = stop else {
                    return Err(malformed(format!("output_to of {len} bytes past the end of the body")));
                };
                let text = std::str::from_utf8(&rest[start..stop]).map_err(|e| malformed(format!("output_to: {e}")))?;
                (Some(std::borrow::Cow::Borrowed(text)), stop)
            }
        };
        (Control { deadline_ms, not_before_ms }, output_to, &rest[job_start..])
    } else if version == BINCODE_CONTROL_VERSION {
        let ((deadline_ms, not_before_ms), used) =
            decode_bincode_prefix::<(Option<u64>, Option<u64>)>(&rest[end..]).map_err(malformed)?;
        (Control { deadline_ms, not_before_ms }, None, &rest[end + used..])
    } else {
        (Control::default(), None, &rest[end..])
    };
    Ok(Opened { kind, job: JobBody::Bincode(job), control, output_to })
}

/// Versions 1 to `newest` are read.
fn check_version(found: u64, newest: u32) -> Result<(), JobError> {
    if (1..=u64::from(newest)).contains(&found) {
        Ok(())
    } else {
        Err(JobError::UnsupportedVersion { found, supported: newest })
    }
}
