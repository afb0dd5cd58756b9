//! Names of Warren's own AMQP headers and content types: part of the message contract
//! (`docs/contract.md`). Warren never writes `x-*` headers; those belong to the broker.

/// Content type of JSON-encoded envelopes and results (the interoperable encoding).
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of bincode-2-encoded envelopes and results (compact, Rust to Rust).
pub const CONTENT_TYPE_BINCODE: &str = "application/x-bincode";

/// How many times this job has been attempted before this delivery (0 on first publish).
pub const ATTEMPT: &str = "warren-attempt";

/// How many times the job came back unanswered (its worker died or lost the broker mid-job).
pub const REDELIVERIES: &str = "warren-redeliveries";

/// How many times Warren handed the job back because the broker refused what it needed (a
/// retry copy or dead letter not stored); each hand-back waits longer.
pub const HANDBACKS: &str = "warren-handbacks";

/// Set by Warren's publishers on every message they send: the publish's number on its confirm
/// channel, by which a message the broker returns is matched to its own publish. Receivers
/// ignore it; a copy published again gets a new one.
pub const PUBLISH_TAG: &str = "warren-publish-tag";

/// Dead letters: attempts made in all.
pub const ATTEMPTS: &str = "warren-attempts";
/// Dead letters: why the job was given up.
pub const DEAD_REASON: &str = "warren-dead-reason";
/// Dead letters: the error class, `permanent` or `transient`.
pub const ERROR_CLASS: &str = "warren-error-class";
/// Dead letters: the fixed error type (e.g. `corrupt_image`).
pub const ERROR_TYPE: &str = "warren-error-type";
/// Dead letters: the human-readable error message.
pub const ERROR_MESSAGE: &str = "warren-error-message";
/// Dead letters: the exchange the job was first published to.
pub const ORIGINAL_EXCHANGE: &str = "warren-original-exchange";
/// Dead letters: the routing key the job was first published with.
pub const ORIGINAL_ROUTING_KEY: &str = "warren-original-routing-key";
/// Dead letters: the queue the job was consumed from.
pub const ORIGINAL_QUEUE: &str = "warren-original-queue";
/// Retries and dead letters: when the job first failed, milliseconds since the Unix epoch.
pub const FIRST_FAILED_AT: &str = "warren-first-failed-at";
/// Retries and dead letters: when the job last failed (for dead letters: when it was given up).
pub const FAILED_AT: &str = "warren-failed-at";
/// Dead letters: which consumer gave up the job.
pub const CONSUMER: &str = "warren-consumer";
/// W3C trace context, carried from producer to consumer to result.
pub const TRACEPARENT: &str = "traceparent";
