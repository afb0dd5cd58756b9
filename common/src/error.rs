//! The one error type of job processing, and its classification.
//!
//! Every failure is either permanent (retrying cannot help: bad input, unsupported parameters,
//! unknown kind or version, a panic in the job) or transient (it may succeed later: a timeout,
//! a model that is unavailable, a resource limit of the worker). The consumer decides what to do
//! with a message from the class alone; `error_type` is the fixed, low-cardinality label used in
//! dead-letter headers and metrics. Never put a message text into a label.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether retrying a failed job can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Permanent,
    Transient,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("unsupported content type {0:?}: use application/json or application/x-bincode")]
    UnsupportedContentType(String),
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(String),
    #[error("unsupported envelope version {found}; this worker reads versions 1 to {supported}")]
    UnsupportedVersion { found: u64, supported: u32 },
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("no route for job kind {0:?} in this worker's configuration")]
    KindNotServed(String),
    #[error("invalid job parameters: {0}")]
    InvalidParams(String),
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    #[error("corrupt image: {0}")]
    CorruptImage(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("input does not fit the model: {0}")]
    ModelInputMismatch(String),
    #[error("encoding the output failed: {0}")]
    Encode(String),
    #[error("delivered {deliveries} times without an answer (each time its worker died or lost the broker mid-job)")]
    RedeliveryLimit { deliveries: u32 },
    #[error("job panicked: {0}")]
    Panicked(String),
    #[error("job exceeded its time limit of {limit:?}")]
    TimedOut { limit: Duration, retry: bool },
    #[error("{0}")]
    Injected(String),
    /// The kind's backend (model server) is down, overloaded or lacks the model: no job's
    /// doing, so the job goes back to its queue without spending an attempt.
    #[error("model unavailable: {0}")]
    ModelUnavailable(String),
    /// A request to the backend failed in a way this job may have caused (past its deadline,
    /// cancelled, aborted): transient, and it spends an attempt. Same type on the wire.
    #[error("model unavailable: {0}")]
    ModelRequestFailed(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the broker did not store the result ({0}); the job is run again later")]
    ResultNotStored(String),
    /// The job's `deadline_ms` passed before it could start, or before its next attempt.
    #[error("deadline passed: {0}")]
    DeadlineExceeded(String),
    /// Cancelled by its producer or an operator (`warrenctl cancel`) before it started.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A reference's object (`s3://`, `file://`, `https://`) does not exist.
    #[error("reference not found: {0}")]
    RefNotFound(String),
    /// A reference's object may not be read or written with the worker's credentials, or lies
    /// outside what the worker is configured to reach.
    #[error("reference denied: {0}")]
    RefDenied(String),
    /// The store behind a reference did not answer (down, timed out, a 5xx): no job's doing,
    /// so the job is set aside without spending an attempt, like [`JobError::ModelUnavailable`].
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// An error of a kind's own: its class, a fixed type (documented by the kind, like the
    /// types above: lowercase words joined by `_`) and a message for people.
    #[error("{message}")]
    Kind { class: ErrorClass, error_type: &'static str, message: String },
}

impl JobError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::TimedOut { retry: false, .. } => ErrorClass::Permanent,
            Self::TimedOut { retry: true, .. }
            | Self::ModelUnavailable(_)
            | Self::StoreUnavailable(_)
            | Self::ModelRequestFailed(_)
            | Self::Inference(_)
            | Self::Injected(_)
            | Self::ResultNotStored(_) => ErrorClass::Transient,
            Self::Kind { class, .. } => *class,
            _ => ErrorClass::Permanent,
        }
    }

    /// A fixed identifier for the error, for headers, results and metric labels.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::UnsupportedContentType(_) => "unsupported_content_type",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MalformedEnvelope(_) => "malformed_envelope",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::UnknownKind(_) => "unknown_kind",
            Self::KindNotServed(_) => "kind_not_served",
            Self::InvalidParams(_) => "invalid_params",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::CorruptImage(_) => "corrupt_image",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::ModelInputMismatch(_) => "model_input_mismatch",
            Self::Encode(_) => "encode_failed",
            Self::Panicked(_) => "panic",
            Self::RedeliveryLimit { .. } => "redelivery_limit",
            Self::TimedOut { .. } => "timeout",
            Self::Injected(_) => "injected_fault",
            Self::ModelUnavailable(_) | Self::ModelRequestFailed(_) => "model_unavailable",
            Self::Inference(_) => "inference_failed",
            Self::ResultNotStored(_) => "result_not_stored",
            Self::DeadlineExceeded(_) => "deadline_exceeded",
            Self::Cancelled(_) => "cancelled",
            Self::RefNotFound(_) => "ref_not_found",
            Self::RefDenied(_) => "ref_denied",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Kind { error_type, .. } => error_type,
        }
    }
}

impl JobError {
    /// A kind's own permanent error: retrying cannot help (the input is wrong for it).
    pub fn permanent(error_type: &'static str, message: impl Into<String>) -> Self {
        Self::Kind { class: ErrorClass::Permanent, error_type, message: message.into() }
    }

    /// A kind's own transient error: a later attempt may succeed (a service was down).
    pub fn transient(error_type: &'static str, message: impl Into<String>) -> Self {
        Self::Kind { class: ErrorClass::Transient, error_type, message: message.into() }
    }
}

/// The error as it travels in a result message: class, fixed type and human message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub class: ErrorClass,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

/// Longest error message a result or a dead letter carries, in bytes (UTF-8), ellipsis included.
pub const MAX_MESSAGE_BYTES: usize = 2048;

impl JobError {
    /// The message for people, cut to [`MAX_MESSAGE_BYTES`] at a character boundary (with `…`
    /// when cut): a message can quote the input (an unknown kind's name), which has no bound.
    pub fn bounded_message(&self) -> String {
        let mut message = self.to_string();
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES - '…'.len_utf8();
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        message
    }
}

impl From<&JobError> for ErrorInfo {
    fn from(e: &JobError) -> Self {
        Self { class: e.class(), error_type: e.error_type().to_owned(), message: e.bounded_message() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_message_is_at_most_2_kib_in_bytes_whatever_it_quotes() {
        for c in ["x", "é", "€", "𝄞"] {
            let long = JobError::UnknownKind(c.repeat(5_000));
            let info = ErrorInfo::from(&long);
            assert!(info.message.len() <= MAX_MESSAGE_BYTES, "{c}: {} bytes", info.message.len());
            assert!(info.message.len() > MAX_MESSAGE_BYTES - 8, "{c}: cut no shorter than needed");
            assert!(info.message.ends_with('…'), "{c}: marked as cut");
        }
        let short = JobError::UnknownKind("nope".into());
        assert_eq!(ErrorInfo::from(&short).message, "unknown job kind \"nope\"", "a short message is whole");
    }
}
