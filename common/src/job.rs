//! A job on its way to the broker: a kind's name and its input, encoded in an envelope at
//! publish time. Typed with [`Job::new`] (any encoding), or named with a JSON input for kinds
//! the publisher has no Rust type for ([`Job::named`]; JSON only, as bincode needs the type).

use std::borrow::Cow;
use std::sync::Arc;

use crate::kind::Kind;

/// What a job's input must be to travel: serialisable without knowing its type.
trait Input: erased_serde::Serialize + std::fmt::Debug + Send + Sync {}
impl<T: serde::Serialize + std::fmt::Debug + Send + Sync> Input for T {}

/// A job to publish. Cheap to clone (the input is shared).
#[derive(Clone)]
pub struct Job {
    kind: Cow<'static, str>,
    input: Arc<dyn Input>,
    /// False for an input given as JSON, which bincode cannot carry.
    typed: bool,
}

impl Job {
    /// A job of kind `K`.
    pub fn new<K: Kind>(input: K::Input) -> Self
    where
        K::Input: std::fmt::Debug + Sync,
    {
        Self { kind: Cow::Borrowed(K::NAME), input: Arc::new(input), typed: true }
    }

    /// A job of a kind named at run time, its input as JSON (`warren-producer submit`).
    pub fn named(kind: impl Into<String>, input: serde_json::Value) -> Self {
        Self { kind: Cow::Owned(kind.into()), input: Arc::new(input), typed: false }
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Whether the input has its Rust type (and so can be written as bincode).
    pub fn is_typed(&self) -> bool {
        self.typed
    }

    pub(crate) fn input(&self) -> &dyn erased_serde::Serialize {
        &*self.input
    }

    /// Writes the input alone with `s` (to inspect or copy a job).
    pub fn serialize_input<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.input(), s)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("kind", &self.kind).field("input", &self.input).finish()
    }
}

/// Serialises a job's input (for the envelope's `job` field).
pub(crate) struct InputOf<'a>(pub &'a Job);

impl serde::Serialize for InputOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0.input(), s)
    }
}
