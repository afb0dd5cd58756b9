//! Layered configuration: `config/default.toml` (every key, commented), then the overlay named
//! by `WARREN_ENV` (`config/<env>.toml`, optional), then environment variables
//! `WARREN__SECTION__KEY` (e.g. `WARREN__BROKER__URL`, `WARREN__CONSUMER__POOL_SIZE=2`,
//! `WARREN__CONSUMER__KINDS=image.resize,checksum`; lists are comma-separated, as in
//! `WARREN__MODEL__MEAN=0.485,0.456,0.406`).
//!
//! Relative paths in the configuration are resolved against the parent of the configuration
//! directory, so `config/` and `models/` sit side by side wherever the tree is.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use warren_common::Limits;
use warren_common::codec::Encoding;
use warren_common::kind::{self, RouteDefaults};
use warren_common::resize::Filter;
use warren_common::retry::RetryPolicy;

use crate::redact::{check_urls, redact_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub broker: BrokerSettings,
    pub topology: TopologySettings,
    pub routes: Vec<Route>,
    pub retry: RetryPolicy,
    pub consumer: ConsumerSettings,
    pub producer: ProducerSettings,
    pub limits: Limits,
    pub model: ModelSettings,
    pub telemetry: TelemetrySettings,
    pub console: ConsoleSettings,
    #[serde(default)]
    pub python: PythonSettings,
    #[serde(default)]
    pub store: StoreSettings,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// A secret: never log it, use [`BrokerSettings::redacted_url`].
    pub url: String,
    pub connection_name: String,
    pub confirm_timeout_ms: u64,
    /// The broker's `consumer_timeout`: a delivery unacked for longer closes its channel.
    pub consumer_timeout_ms: u64,
    /// Reconnection backoff: first delay, and the cap (delays double, with full jitter).
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// For `amqps://`: a PEM file of CA certificates to trust beside the system's.
    pub tls_ca_file: PathBuf,
    /// For `amqps://`: a client certificate (PEM) and its private key (PEM, PKCS#8 or RSA),
    /// presented to a listener that asks for one (and for `?auth_mechanism=external`).
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// How long dialling one node may take before the next is tried.
    pub connect_timeout_ms: u64,
    /// How long a worker starting while no node answers keeps dialling (with the reconnect
    /// backoff) before it gives up; not ready meanwhile. Tools (warrenctl, the producer's CLI)
    /// fail at once instead.
    pub startup_timeout_ms: u64,
    /// Where the next connection starts in the list of nodes; shared by clones of these
    /// settings, so a process moves on from the node it lost (`nodes`).
    #[serde(skip)]
    pub rotation: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl BrokerSettings {
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &self.redacted_url())
            .field("connection_name", &self.connection_name)
            .field("confirm_timeout_ms", &self.confirm_timeout_ms)
            .field("consumer_timeout_ms", &self.consumer_timeout_ms)
            .field("reconnect_min_ms", &self.reconnect_min_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("startup_timeout_ms", &self.startup_timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    pub jobs_exchange: String,
    pub results_exchange: String,
    pub results_queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_suffix: String,
    /// Jobs that came back unanswered wait in `<work queue><returned_suffix>` (the returned lane).
    pub returned_suffix: String,
    pub queue_type: QueueType,
    /// For quorum work queues: `x-delivery-limit` (0 = none).
    pub delivery_limit: u32,
    /// Workers publish each job's lifecycle events here (topic, routing key
    /// `<kind>.<event>`); "" = no events.
    pub events_exchange: String,
    /// Delay queues every route has beside its retry tiers, for delayed jobs (`not_before_ms`):
    /// a job waits in the longest that cannot make it late, hop after hop.
    pub delay_tiers_ms: Vec<u64>,
    /// The stream of cancel records every worker reads (`warrenctl cancel`); "" = no
    /// cancellation.
    pub cancel_stream: String,
    /// How long a cancel is kept (the stream's `x-max-age`, and each worker's memory of it).
    pub cancel_retention_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    Classic,
    Quorum,
}

/// Jobs of `kind` are published to the jobs exchange with routing key `kind` and land in `queue`.
/// In `[[routes]]` every field but `kind` is optional: an empty queue or a zero means the kind's
/// own default (`Kind::route`), which [`Route::resolve`] fills in where the kind is known.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub kind: String,
    /// "" = the kind's default queue, else `warren.<kind>`.
    #[serde(default)]
    pub queue: String,
    /// Longest a job (or a batch) of this kind may run; past it the job fails (see
    /// `consumer.retry_timeouts`). 0 = the kind's default.
    #[serde(default)]
    pub time_limit_ms: u64,
    /// This kind's retry policy, replacing `[retry]` when given.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Unacked deliveries per consumer of this queue; 0 = `consumer.prefetch`.
    #[serde(default)]
    pub prefetch: u16,
    /// Batched kinds: most jobs per run (1 = no batching) and how long the first waits for
    /// others; 0 / unset = the kind's default.
    #[serde(default)]
    pub max_batch: usize,
    #[serde(default)]
    pub max_batch_wait_ms: Option<u64>,
    /// Async kinds: jobs awaiting at once in one worker; 0 = the kind's default.
    #[serde(default)]
    pub concurrency: usize,
    /// Highest AMQP `priority` the work queue honours (`x-max-priority`, 1-255; RabbitMQ
    /// advises at most 10); 0 = none: jobs run in the order they came. Classic queues only.
    #[serde(default)]
    pub max_priority: u8,
}

impl Route {
    pub fn new(kind: &str, queue: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            queue: queue.to_owned(),
            time_limit_ms: 0,
            retry: None,
            prefetch: 0,
            max_batch: 0,
            max_batch_wait_ms: None,
            concurrency: 0,
            max_priority: 0,
        }
    }

    /// This route with what it leaves open taken from the kind's defaults.
    pub fn resolve(&self, defaults: &RouteDefaults) -> Route {
        let queue = match (self.queue.as_str(), defaults.queue.as_str()) {
            ("", "") => default_queue(&self.kind),
            ("", q) | (q, _) => q.to_owned(),
        };
        let or = |own: u64, default: u64| if own == 0 { default } else { own };
        Route {
            kind: self.kind.clone(),
            queue,
            time_limit_ms: or(self.time_limit_ms, defaults.time_limit.as_millis() as u64),
            retry: self.retry.clone().or_else(|| defaults.retry.clone()),
            prefetch: if self.prefetch == 0 { defaults.prefetch } else { self.prefetch },
            max_batch: or(self.max_batch as u64, defaults.max_batch as u64).max(1) as usize,
            max_batch_wait_ms: Some(self.max_batch_wait_ms.unwrap_or(defaults.max_batch_wait.as_millis() as u64)),
            concurrency: or(self.concurrency as u64, defaults.concurrency as u64).max(1) as usize,
            max_priority: self.max_priority,
        }
    }

    pub fn time_limit(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.time_limit_ms)
    }
}

/// The queue of a kind that neither its route nor the kind names: `warren.<kind>`.
pub fn default_queue(kind: &str) -> String {
    format!("warren.{kind}")
}

/// Python kinds (`warren_worker`) hosted by the worker in child processes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonSettings {
    /// Modules whose `@warren_worker.kind` functions this worker serves; [] = none.
    pub modules: Vec<String>,
    pub interpreter: String,
    /// Directories put before `PYTHONPATH` (where the modules and `warren_worker` are).
    pub path: Vec<String>,
    /// Child processes, each running one job at a time; 0 = `consumer.pool_size` (or the cores).
    pub children: usize,
    /// A child is replaced after this many jobs (0 = never) ...
    pub max_jobs_per_child: u64,
    /// ... or once its resident memory passes this many MiB after a job (0 = never).
    pub max_rss_mib: u64,
}

impl Default for PythonSettings {
    fn default() -> Self {
        Self {
            modules: Vec::new(),
            interpreter: "python3".into(),
            path: Vec::new(),
            children: 0,
            max_jobs_per_child: 0,
            max_rss_mib: 0,
        }
    }
}

/// Where the bytes behind job references (`{"ref": ...}` in a bytes field) are read and where
/// outputs named by `output_to` are written (docs/deployment.md, "Payloads by reference").
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `s3://` references: the S3-compatible store's endpoint (`http://rgw.local:7480`);
    /// "" = AWS S3 itself (or `AWS_ENDPOINT` from the environment).
    pub s3_endpoint: String,
    pub s3_region: String,
    /// The store's credentials; "" = `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the
    /// environment. Never logged (nor the key id: `Debug` shows whether they are set).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    /// Directories (absolute) under which `file://` references are read and outputs written;
    /// [] = `file://` refused.
    pub file_roots: Vec<PathBuf>,
    /// Whether `https://` references (presigned URLs, read with one GET) are followed.
    pub https: bool,
    /// The hosts `https://` references may name: `host` (any port), `host:port`, or
    /// `*.domain` (any name under it); [] = any host.
    pub https_hosts: Vec<String>,
    /// PEM certificates trusted beside the system's, for the store's endpoint and `https://`
    /// references (a private CA on-prem); "" = the system's alone.
    pub ca_file: PathBuf,
    /// Downloads and uploads at once, per worker.
    pub max_transfers: usize,
    /// Jobs holding fetched bytes at once, per worker (each up to `limits.max_ref_bytes`);
    /// 0 = four times the pool size (the default prefetch).
    pub max_held_jobs: usize,
    /// One request's time limit, body included.
    pub timeout_ms: u64,
    /// Tries after the first, for a 5xx or a broken connection, before the job is set aside.
    pub retries: usize,
}

/// A `store.https_hosts` entry: `host` (any port), `host:port`, or `*.domain` (the names under
/// the domain, not the domain itself). Names compare without case or a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: String,
    under: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// The entry's pattern, or None when it is none of the forms above.
    pub fn parse(entry: &str) -> Option<Self> {
        let entry = entry.to_ascii_lowercase();
        let (under, rest) = entry.strip_prefix("*.").map_or((false, entry.as_str()), |rest| (true, rest));
        let (name, port) = match rest.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().ok()?)),
            None => (rest, None),
        };
        let name = name.trim_end_matches('.');
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        plain.then(|| Self { name: name.to_owned(), under, port })
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name_ok = if self.under {
            host.strip_suffix(self.name.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.name
        };
        name_ok && self.port.is_none_or(|p| p == port)
    }
}

impl std::fmt::Debug for StoreSettings {
    /// Without the credentials: only whether each is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "(none)" } else { "(set)" };
        f.debug_struct("StoreSettings")
            .field("s3_endpoint", &redact_url(&self.s3_endpoint))
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &set(&self.s3_access_key_id))
            .field("s3_secret_access_key", &self.s3_secret_access_key)
            .field("file_roots", &self.file_roots)
            .field("https", &self.https)
            .field("https_hosts", &self.https_hosts)
            .field("ca_file", &self.ca_file)
            .field("max_transfers", &self.max_transfers)
            .field("max_held_jobs", &self.max_held_jobs)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .finish()
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: Secret::default(),
            file_roots: Vec::new(),
            https: true,
            https_hosts: Vec::new(),
            ca_file: PathBuf::new(),
            max_transfers: 8,
            max_held_jobs: 0,
            timeout_ms: 30_000,
            retries: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    pub kinds: Vec<String>,
    pub pool_size: usize,
    pub prefetch: u16,
    pub drain_timeout_ms: u64,
    pub worker_id: String,
    /// Times one job may come back unanswered (its worker died or lost the broker) before the
    /// next return dead-letters it as poison (`docs/reliability.md` says how returns are counted).
    pub max_redeliveries: u32,
    /// Whether a job past its time limit is retried (transient) or dead-lettered (permanent).
    pub retry_timeouts: bool,
    /// How often the worker checks that the topology's exchanges exist and declares the
    /// topology again when one is missing (0 = never; a publish that meets a missing exchange
    /// still declares it again).
    pub topology_check_ms: u64,
    /// Lifecycle events waiting to be published, at most; past that new ones are dropped (and
    /// counted) rather than slow a job down.
    pub events_buffer: usize,
    /// Whether event messages are published persistent (`delivery_mode` 2: they outlive a
    /// broker restart while queued) or transient (1, the default: cheaper for the broker when
    /// they pile up in a classic queue, lost with a broker restart before a reader took them;
    /// a quorum queue keeps every message either way).
    pub events_persistent: bool,
}

/// `warren-console`, the status store and web console (`docs/console.md`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Where the page, the API and /metrics are served.
    pub addr: String,
    /// `sqlite://<file>` (created when missing) or `postgres://...` (several consoles may share it).
    pub database_url: String,
    /// The console's durable queue, bound to the events exchange with `#`.
    pub queue: String,
    /// Events stored in one transaction, at most.
    pub batch: usize,
    /// How long a batch waits to fill once its first event came.
    pub batch_wait_ms: u64,
    /// Unacked events the console holds (at least `batch`).
    pub prefetch: u16,
    /// Jobs not heard of for this long are deleted with their events.
    pub retention_hours: u64,
    /// How often retention runs.
    pub retention_check_ms: u64,
    /// The most the console's queue holds (`x-max-length-bytes`) while the console is away;
    /// past it the broker refuses new event messages (workers count them `not_stored`) rather
    /// than grow until its memory alarm blocks every publisher (keep it well below the broker's
    /// memory high watermark). 0 = no bound.
    pub queue_max_bytes: u64,
    /// Bearer token that actions changing a queue (replay) need; "" turns actions off.
    pub token: Secret,
}

impl std::fmt::Debug for ConsoleSettings {
    /// The database URL without its password; the token as `(redacted)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("addr", &self.addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("batch_wait_ms", &self.batch_wait_ms)
            .field("prefetch", &self.prefetch)
            .field("retention_hours", &self.retention_hours)
            .field("retention_check_ms", &self.retention_check_ms)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("token", &self.token)
            .finish()
    }
}

/// A secret from the configuration: never printed by `Debug`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "(none)" } else { "(redacted)" })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    pub encoding: Encoding,
    pub result_timeout_ms: u64,
    /// How long a publish keeps reconnecting and trying again before it fails.
    pub publish_retry_ms: u64,
    /// The reply queue is deleted by the broker after this long unused.
    pub reply_queue_expires_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub name: String,
    /// Where the model runs: ONNX Runtime in this process, or a Triton server over gRPC.
    pub backend: ModelBackend,
    pub path: PathBuf,
    pub labels_path: PathBuf,
    /// One value for every channel, or one per channel (`WARREN__MODEL__MEAN=0.5` or
    /// `=0.485,0.456,0.406`).
    #[serde(deserialize_with = "one_or_many")]
    pub mean: Vec<f32>,
    #[serde(deserialize_with = "one_or_many")]
    pub std: Vec<f32>,
    pub resize_filter: Filter,
    pub max_aspect_ratio: f32,
    pub outputs: ModelOutputs,
    pub height: usize,
    pub width: usize,
    pub sessions: usize,
    pub intra_threads: usize,
    pub onnxruntime_path: PathBuf,
    /// Triton's gRPC endpoint, e.g. `http://127.0.0.1:8001`.
    pub triton_url: String,
    /// The model's name in Triton's repository, and its version ("" = the server's choice).
    pub triton_model: String,
    pub triton_model_version: String,
    /// Deadline of one inference request; past it the request is cancelled.
    pub triton_timeout_ms: u64,
    /// How often the model's readiness is asked while the worker runs.
    pub triton_ready_interval_ms: u64,
    /// How long start-up waits for the server and the model to be ready.
    pub triton_startup_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelBackend {
    /// ONNX Runtime, in-process (`ort`).
    Ort,
    /// NVIDIA Triton Inference Server, over gRPC (KServe v2 protocol).
    Triton,
}

impl ModelBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ort => "ort",
            Self::Triton => "triton",
        }
    }
}

/// `WARREN__SECTION__KEY` variables; the keys below take comma-separated lists.
fn environment() -> config::Environment {
    config::Environment::with_prefix("WARREN")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("consumer.kinds")
        .with_list_parse_key("model.mean")
        .with_list_parse_key("model.std")
        .with_list_parse_key("python.modules")
        .with_list_parse_key("python.path")
        .with_list_parse_key("store.file_roots")
        .with_list_parse_key("store.https_hosts")
        .try_parsing(true)
}

/// Numbers given as a list or as one value; from a file they are numbers, from an environment
/// variable text (`0.5`, or `0.485,0.456,0.406` split into a list of texts).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Float(f32),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Number),
        Many(Vec<Number>),
    }
    let number = |n: Number| match n {
        Number::Float(x) => Ok(x),
        Number::Text(t) => {
            t.trim().parse::<f32>().map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number")))
        }
    };
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => Ok(vec![number(n)?]),
        OneOrMany::Many(v) => v.into_iter().map(number).collect(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelOutputs {
    Logits,
    Probabilities,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: String,
    /// Where /metrics, /healthz and /readyz are served ("" = not served).
    pub metrics_addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// Loads `default.toml`, the `WARREN_ENV` overlay and `WARREN__*` variables from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let default = dir.join("default.toml");
        anyhow::ensure!(
            default.is_file(),
            "configuration file {} not found (set --config-dir or WARREN_CONFIG_DIR)",
            default.display()
        );
        let env = std::env::var("WARREN_ENV").unwrap_or_else(|_| "local".into());
        let built = config::Config::builder()
            .add_source(config::File::from(default.clone()))
            .add_source(config::File::from(dir.join(format!("{env}.toml"))).required(false))
            .add_source(environment())
            .build()
            .with_context(|| format!("reading configuration from {}", dir.display()))?;
        let mut settings: Settings = built
            .try_deserialize()
            .with_context(|| format!("invalid configuration in {} (WARREN_ENV={env})", dir.display()))?;
        let base = dir.parent().unwrap_or(Path::new("."));
        settings.resolve_paths(base);
        for r in &mut settings.routes {
            if r.queue.is_empty() {
                r.queue = default_queue(&r.kind);
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let m = &mut self.model;
        let b = &mut self.broker;
        for p in [
            &mut m.path,
            &mut m.labels_path,
            &mut m.onnxruntime_path,
            &mut b.tls_ca_file,
            &mut b.tls_cert_file,
            &mut b.tls_key_file,
            &mut self.store.ca_file,
        ] {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for k in self.routes.iter().map(|r| &r.kind).chain(&self.consumer.kinds) {
            anyhow::ensure!(
                kind::valid_name(k),
                "{k:?} is not a job kind's name: lowercase words of a-z, 0-9, _ or -, joined by dots"
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            anyhow::ensure!(
                !self.routes[..i].iter().any(|o| o.kind == r.kind),
                "[[routes]] names kind {:?} twice",
                r.kind
            );
        }
        check_urls(&self.broker.url).map_err(|e| anyhow::anyhow!("broker.url: {e}"))?;
        anyhow::ensure!(
            self.topology.cancel_stream.is_empty() || self.topology.cancel_retention_s > 0,
            "topology.cancel_retention_s must be positive"
        );
        anyhow::ensure!(
            !self.topology.delay_tiers_ms.is_empty() && !self.topology.delay_tiers_ms.contains(&0),
            "topology.delay_tiers_ms needs at least one delay, each above 0 ms (delayed jobs wait in them)"
        );
        anyhow::ensure!(self.broker.confirm_timeout_ms > 0, "broker.confirm_timeout_ms must be positive");
        anyhow::ensure!(
            0 < self.broker.reconnect_min_ms && self.broker.reconnect_min_ms <= self.broker.reconnect_max_ms,
            "need 0 < broker.reconnect_min_ms <= broker.reconnect_max_ms"
        );
        self.retry.check().map_err(anyhow::Error::msg).context("[retry]")?;
        if self.model.backend == ModelBackend::Triton {
            let m = &self.model;
            anyhow::ensure!(
                m.triton_url.starts_with("http://") || m.triton_url.starts_with("https://"),
                "model.triton_url must be an http:// or https:// URL of Triton's gRPC port (got {:?})",
                m.triton_url
            );
            anyhow::ensure!(!m.triton_model.is_empty(), "model.backend = \"triton\" needs model.triton_model");
            anyhow::ensure!(
                m.triton_timeout_ms > 0 && m.triton_ready_interval_ms > 0,
                "model.triton_timeout_ms and model.triton_ready_interval_ms must be positive"
            );
        }
        let store = &self.store;
        anyhow::ensure!(
            store.timeout_ms > 0 && store.max_transfers > 0,
            "store.timeout_ms and store.max_transfers must be positive"
        );
        anyhow::ensure!(
            store.s3_endpoint.is_empty()
                || store.s3_endpoint.starts_with("http://")
                || store.s3_endpoint.starts_with("https://"),
            "store.s3_endpoint must be an http:// or https:// URL (got {:?})",
            redact_url(&store.s3_endpoint)
        );
        for root in &store.file_roots {
            anyhow::ensure!(root.is_absolute(), "store.file_roots: {} is not an absolute path", root.display());
        }
        for host in &store.https_hosts {
            anyhow::ensure!(
                HostPattern::parse(host).is_some(),
                "store.https_hosts: {host:?} is not a host, host:port or *.domain"
            );
        }
        for r in &self.routes {
            self.check_priority(r)?;
            if let Some(p) = &r.retry {
                p.check().map_err(anyhow::Error::msg).with_context(|| format!("route {}: retry", r.kind))?;
            }
        }
        Ok(())
    }

    /// A route with priorities needs classic queues: RabbitMQ 3.10's quorum queues have none.
    pub fn check_priority(&self, route: &Route) -> anyhow::Result<()> {
        anyhow::ensure!(
            route.max_priority == 0 || self.topology.queue_type == QueueType::Classic,
            "route {}: max_priority = {} needs classic queues, but topology.queue_type = \"quorum\": \
             RabbitMQ 3.10's quorum queues have no priorities (the broker refuses x-max-priority on them). \
             Remove max_priority from the route, or set topology.queue_type = \"classic\" (classic queues \
             are not replicated: the queue's node is a single point of failure)",
            route.kind,
            route.max_priority
        );
        Ok(())
    }

    /// The retry policy of a route: its own, or the global one.
    pub fn retry_policy<'a>(&'a self, route: &'a Route) -> &'a RetryPolicy {
        route.retry.as_ref().unwrap_or(&self.retry)
    }

    /// Every delay queue of a route, by its delay, shortest first: its retry policy's tiers and
    /// `topology.delay_tiers_ms`.
    pub fn delay_tiers(&self, route: &Route) -> Vec<std::time::Duration> {
        let mut tiers = self.retry_policy(route).tiers();
        tiers.extend(self.topology.delay_tiers_ms.iter().map(|&ms| std::time::Duration::from_millis(ms)));
        tiers.sort();
        tiers.dedup();
        tiers
    }

    /// The delay queue holding jobs of `queue` that wait `delay` before their next attempt.
    pub fn retry_queue(&self, queue: &str, delay: std::time::Duration) -> String {
        format!("{queue}.retry.{}ms", delay.as_millis())
    }

    pub fn route(&self, kind: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.kind == kind)
    }

    /// The returned lane of a work queue: jobs that came back unanswered, run one at a time.
    pub fn returned_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.topology.returned_suffix)
    }

    /// The dead-letter queue of a work queue.
    pub fn dead_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.topology.dead_letter_suffix)
    }
}

/// The configuration directory: the flag or `WARREN_CONFIG_DIR` when given, else `./config`.
pub fn config_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        model: Norm,
    }

    #[derive(Debug, Deserialize)]
    struct Norm {
        #[serde(deserialize_with = "one_or_many")]
        mean: Vec<f32>,
    }

    /// `[model]` from `toml`, overridden by the environment variables `env`.
    fn mean(toml: &str, env: &[(&str, &str)]) -> Result<Vec<f32>, config::ConfigError> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let doc: Doc = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .add_source(environment().source(Some(env)))
            .build()?
            .try_deserialize()?;
        Ok(doc.model.mean)
    }

    #[test]
    fn normalisation_is_one_value_or_one_per_channel_from_a_file_or_the_environment() {
        let file = "[model]\nmean = [0.5]";
        assert_eq!(mean(file, &[]).unwrap(), vec![0.5]);
        assert_eq!(mean("[model]\nmean = 0.25", &[]).unwrap(), vec![0.25]);
        assert_eq!(mean("[model]\nmean = [0.485, 0.456, 0.406]", &[]).unwrap(), vec![0.485, 0.456, 0.406]);
        assert_eq!(mean(file, &[("WARREN__MODEL__MEAN", "0.25")]).unwrap(), vec![0.25]);
        assert_eq!(mean(file, &[("WARREN__MODEL__MEAN", "0.485, 0.456,0.406")]).unwrap(), vec![0.485, 0.456, 0.406]);
        let err = mean(file, &[("WARREN__MODEL__MEAN", "0.5,bright")]).unwrap_err().to_string();
        assert!(err.contains("\"bright\" is not a number"), "{err}");
    }

    #[test]
    fn https_hosts_are_hosts_host_ports_or_wildcard_domains() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut s = Settings::load(&dir).expect("config/default.toml loads");
        assert!(s.store.https_hosts.is_empty(), "any host by default");
        s.store.https_hosts =
            ["store.example", "minio.lan:9000", "*.s3.example", "10.0.0.7"].map(String::from).to_vec();
        s.validate().expect("valid hosts");
        for bad in ["https://store.example", "store.example/path", "*", "a.*.example", "host:99999", ""] {
            s.store.https_hosts = vec![bad.to_owned()];
            let e = s.validate().expect_err(bad).to_string();
            assert!(e.contains("store.https_hosts"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_consoles_secrets_stay_out_of_debug() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut s = Settings::load(&dir).expect("config/default.toml loads");
        s.console.database_url = "postgres://warren:hunter2@db:5432/warren".into();
        s.console.token = Secret("s3cret-token".into());
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("s3cret-token"), "{printed}");
        assert!(printed.contains("db:5432") && printed.contains("(redacted)"));
    }
}
