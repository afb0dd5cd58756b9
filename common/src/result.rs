//! The result message a worker publishes for every job it finishes or gives up on while a reply
//! is expected. It carries the job id, so consumers of results can drop at-least-once duplicates.
//!
//! Its `output` is the kind's output type under the kind's name: in JSON an object with one key,
//! `{"image.resize": {...}}`; in bincode the pair `(kind: String, payload: bytes)`, the payload
//! being the output written on its own in bincode, so that a reader can skip an output whose kind
//! it does not know (docs/contract.md, "Results").

use std::sync::Arc;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::codec::{Encoding, bincode_config};
use crate::envelope::ENVELOPE_VERSION;
use crate::error::{ErrorInfo, JobError};
use crate::kind::Kind;

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
    pub output: Option<Output>,
    pub error: Option<ErrorInfo>,
    /// The attempt that produced this result, counting from 0.
    pub attempt: u32,
    /// The consumer that produced it.
    pub worker: String,
    pub timing: Timing,
}

impl JobResult {
    pub fn ok(job_id: String, kind: String, output: Output, attempt: u32, worker: String, timing: Timing) -> Self {
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

    /// The output as kind `K`'s type; None for an error result or another kind's output.
    pub fn output_as<K: Kind>(&self) -> Option<K::Output> {
        self.output.as_ref().and_then(|o| o.decode::<K>().ok())
    }
}

/// A kind's output: written from its type by a worker, read back as text or bytes by whoever
/// receives the result, and parsed by a reader that knows the kind ([`Output::decode`]).
#[derive(Clone)]
pub struct Output {
    /// The kind's own name when written by a worker (no allocation per job).
    kind: std::borrow::Cow<'static, str>,
    body: Body,
    /// Where a JSON-text output (a hosted kind's) holds bytes, as base64 strings: JSON pointers,
    /// written to a store as references when the job has an `output_to`.
    bytes_at: Arc<[String]>,
}

/// What a worker's output holds: serialisable without knowing its type.
trait Value: erased_serde::Serialize + std::fmt::Debug + Send + Sync {}
impl<T: Serialize + std::fmt::Debug + Send + Sync> Value for T {}

#[derive(Clone)]
enum Body {
    /// Written by a worker.
    Value(Arc<dyn Value>),
    /// Read from a JSON result.
    Json(Arc<RawValue>),
    /// Read from a bincode result: the payload's bytes.
    Bincode(Arc<[u8]>),
}

impl Output {
    pub fn new<K: Kind>(output: K::Output) -> Self
    where
        K::Output: std::fmt::Debug,
    {
        Self { kind: std::borrow::Cow::Borrowed(K::NAME), body: Body::Value(Arc::new(output)), bytes_at: Arc::new([]) }
    }

    /// An output written as JSON text already (by a kind hosted in another language): carried
    /// as it is; such an output travels in JSON results only.
    pub fn from_json(kind: &'static str, json: Box<RawValue>) -> Self {
        Self::from_json_with_bytes(kind, json, Vec::new())
    }

    /// [`Output::from_json`] with the places (JSON pointers, RFC 6901) where the text holds
    /// bytes as standard base64 strings: under an `output_to` ([`crate::bytes::upload_refs`])
    /// each is decoded, written to the store and replaced by its reference, as a typed kind's
    /// bytes fields are; otherwise the text goes as it is.
    pub fn from_json_with_bytes(kind: &'static str, json: Box<RawValue>, bytes_at: Vec<String>) -> Self {
        Self { kind: std::borrow::Cow::Borrowed(kind), body: Body::Json(Arc::from(json)), bytes_at: bytes_at.into() }
    }

    /// The kind's name, the key it travels under.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The output as `K`'s type: an error if it is another kind's, or does not parse as `K`'s.
    pub fn decode<K: Kind>(&self) -> Result<K::Output, JobError> {
        if self.kind != K::NAME {
            return Err(JobError::MalformedEnvelope(format!("output of {:?}, not of {:?}", self.kind, K::NAME)));
        }
        let bad = |e: String| JobError::MalformedEnvelope(format!("output of {}: {e}", self.kind));
        match &self.body {
            Body::Json(raw) => serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string())),
            Body::Bincode(bytes) => Encoding::Bincode.decode(bytes).map_err(bad),
            Body::Value(v) => {
                let json = serde_json::to_vec(&Erased(&**v)).map_err(|e| bad(e.to_string()))?;
                serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
            }
        }
    }

    /// The output as JSON, for people and tools that do not know the kind; None for an output
    /// read from bincode (its layout is its kind's).
    pub fn to_json(&self) -> Option<serde_json::Value> {
        match &self.body {
            Body::Json(raw) => serde_json::from_str(raw.get()).ok(),
            Body::Value(v) => serde_json::to_value(Erased(&**v)).ok(),
            Body::Bincode(_) => None,
        }
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Output");
        d.field("kind", &self.kind);
        match &self.body {
            Body::Value(v) => d.field("value", v),
            Body::Json(raw) => d.field("json", &raw.get().len()),
            Body::Bincode(b) => d.field("bincode", &b.len()),
        };
        d.finish()
    }
}

/// Equal when of the same kind with the same payload: the same JSON, or, where either was read
/// from bincode, the same bincode bytes.
impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        if self.kind != other.kind {
            return false;
        }
        let bincode = |b: &Body| match b {
            Body::Bincode(bytes) => Some(bytes.to_vec()),
            Body::Value(v) => bincode::serde::encode_to_vec(Erased(&**v), bincode_config()).ok(),
            Body::Json(_) => None,
        };
        match (&self.body, &other.body) {
            (Body::Bincode(_), _) | (_, Body::Bincode(_)) => {
                bincode(&self.body).is_some() && bincode(&self.body) == bincode(&other.body)
            }
            _ => self.to_json().is_some() && self.to_json() == other.to_json(),
        }
    }
}

/// A JSON-text output with each base64 string at `bytes_at` decoded and written as a bytes field
/// ([`crate::bytes::serialize`]: under [`crate::bytes::upload_refs`], a reference to a new
/// object). A pointer to nothing is skipped; one to something other than base64 text fails.
fn with_bytes_stored(raw: &RawValue, bytes_at: &[String]) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    struct Field<'a>(&'a [u8]);
    impl Serialize for Field<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            crate::bytes::serialize(self.0, s)
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    for pointer in bytes_at {
        let Some(at) = value.pointer_mut(pointer) else { continue };
        let serde_json::Value::String(text) = at else {
            return Err(format!("the output's bytes at {pointer:?} are not base64 text"));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("the output's bytes at {pointer:?}: {e}"))?;
        *at = serde_json::to_value(Field(&bytes)).map_err(|e| e.to_string())?;
    }
    Ok(value)
}

struct Erased<'a>(&'a dyn Value);

impl Serialize for Erased<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0, s)
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        if s.is_human_readable() {
            let mut map = s.serialize_map(Some(1))?;
            match &self.body {
                Body::Value(v) => map.serialize_entry(&self.kind, &Erased(&**v))?,
                Body::Json(raw) if !self.bytes_at.is_empty() && crate::bytes::uploading() => {
                    let stored = with_bytes_stored(raw, &self.bytes_at).map_err(S::Error::custom)?;
                    map.serialize_entry(&self.kind, &stored)?;
                }
                Body::Json(raw) => map.serialize_entry(&self.kind, &**raw)?,
                Body::Bincode(_) => {
                    return Err(S::Error::custom("an output read from bincode cannot be written as JSON"));
                }
            }
            map.end()
        } else {
            let payload: Arc<[u8]> = match &self.body {
                // The payload is written on its own first, so that it can carry its length.
                Body::Value(v) => bincode::serde::encode_to_vec(Erased(&**v), bincode_config())
                    .map_err(|e| S::Error::custom(e.to_string()))?
                    .into(),
                Body::Bincode(b) => b.clone(),
                Body::Json(_) => return Err(S::Error::custom("an output read from JSON cannot be written as bincode")),
            };
            let mut pair = s.serialize_tuple(2)?;
            pair.serialize_element(&self.kind)?;
            pair.serialize_element(&Bytes(&payload))?;
            pair.end()
        }
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() { d.deserialize_map(OutputVisitor) } else { d.deserialize_tuple(2, OutputVisitor) }
    }
}

struct OutputVisitor;

impl<'de> Visitor<'de> for OutputVisitor {
    type Value = Output;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an output: {kind: payload}, or (kind, payload bytes)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Output, A::Error> {
        let Some((kind, raw)) = map.next_entry::<String, Box<RawValue>>()? else {
            return Err(de::Error::custom("an output object needs one key, the kind"));
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("an output object has exactly one key, the kind"));
        }
        Ok(Output { kind: kind.into(), body: Body::Json(Arc::from(raw)), bytes_at: Arc::new([]) })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Output, A::Error> {
        let kind: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let payload: ByteBuf = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok(Output { kind: kind.into(), body: Body::Bincode(payload.0.into()), bytes_at: Arc::new([]) })
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::bytes::deserialize(d).map(ByteBuf)
    }
}
