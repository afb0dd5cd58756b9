//! The stores behind job references: `s3://` (any S3-compatible store, through `object_store`),
//! `file://` (a shared mount, under `store.file_roots`) and `https://` (presigned URLs, one GET).
//!
//! Every transfer is asynchronous and bounded (`store.max_transfers` at once, each within
//! `store.timeout_ms`); none takes a slot of the worker's pools. A download checks the
//! object's size before reading it (the store's metadata, or the response's length) and stops
//! reading past the limit anyway. Failures become the job's errors: not found and denied are
//! permanent (`ref_not_found`, `ref_denied`); a store that does not answer, times out or
//! answers 5xx is `store_unavailable`, which sets the job aside without spending an attempt.
//! Credentials never reach an error: texts are scrubbed of them, and URLs are shown without
//! their query (where a presigned URL keeps its signature).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};
use tokio::sync::Semaphore;
use warren_common::JobError;
use warren_common::bytes::{Ref, Scheme};
use warren_infra::settings::{HostPattern, StoreSettings};

use crate::decide;

/// Most references one job may name.
pub const MAX_REFS_PER_JOB: usize = 64;
/// Most places whose failures are tracked at once ([`decide::Breaker`]); past it, new ones are
/// tried every time.
const MAX_BREAKERS: usize = 4096;

/// The worker's way to its stores. Cheap to share; S3 clients are made once per bucket.
pub struct Stores {
    settings: StoreSettings,
    s3: Mutex<HashMap<String, Arc<AmazonS3>>>,
    http: reqwest::Client,
    transfers: Semaphore,
    /// The breakers of the places that failed lately ([`decide::Breaker`]), by [`Stores::place`];
    /// a place that answers is removed.
    breakers: Mutex<HashMap<String, decide::Breaker>>,
    /// Jobs holding fetched bytes at once (`store.max_held_jobs`).
    held: Semaphore,
    /// Whether an S3 store is configured at all: an endpoint, or credentials (the settings',
    /// or the environment's AWS variables, a web identity or a container's role included).
    s3_configured: bool,
    /// Credentials to scrub from error texts: the configured ones and the environment's.
    secrets: Vec<String>,
    /// `store.file_roots` as given and, where they exist, resolved (symbolic links followed):
    /// a reference is checked as written, a resolved path against the resolved roots.
    roots: Vec<PathBuf>,
    /// `store.https_hosts`, parsed once.
    https_hosts: Vec<HostPattern>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What a store's answer means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    NotFound,
    Denied,
    /// Down, overloaded, timed out: try again later.
    Unavailable,
}

/// An HTTP status of a failed request, as the job sees it: 404 and 410 are not found; 408, 429
/// and 5xx unavailable; any other refusal (401, 403, an expired presigned URL's 400) denied.
pub fn answer_of_status(status: u16) -> Answer {
    match status {
        404 | 410 => Answer::NotFound,
        408 | 429 | 500..=599 => Answer::Unavailable,
        _ => Answer::Denied,
    }
}

/// Whether `path` (absolute, without `.` or `..`) lies under one of `roots`.
pub fn under_roots(path: &Path, roots: &[PathBuf]) -> bool {
    let plain = path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    plain && roots.iter().any(|root| path.starts_with(root) && path != root)
}

/// A `file://` URL's path, its `%XX` escapes decoded.
pub fn file_path(url: &str) -> Result<PathBuf, String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let mut bytes = Vec::with_capacity(rest.len());
    let mut it = rest.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next(), it.next()];
            let value = match hex {
                [Some(h), Some(l)] => std::str::from_utf8(&[h, l]).ok().and_then(|s| u8::from_str_radix(s, 16).ok()),
                _ => None,
            };
            bytes.push(value.ok_or_else(|| "a bad %-escape in a file:// URL".to_owned())?);
        } else {
            bytes.push(b);
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| "a file:// URL's path is not UTF-8".to_owned())?;
    if text.contains('\0') {
        return Err("a file:// URL's path holds a NUL".into());
    }
    Ok(PathBuf::from(text))
}

/// The directory of one job's outputs under its `output_to` prefix: the job id, with anything
/// but letters, digits, `.`, `-` and `_` made `_` (an id cannot climb out of the prefix).
pub fn output_prefix(output_to: &str, job_id: &str) -> String {
    let id: String = job_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    let id = if id.is_empty() || id.chars().all(|c| c == '.') { format!("_{id}") } else { id };
    let sep = if output_to.ends_with('/') { "" } else { "/" };
    format!("{output_to}{sep}{id}/")
}

impl Stores {
    /// `held_jobs`: how many jobs may hold fetched bytes at once (`store.max_held_jobs`, its 0
    /// resolved by the caller).
    pub fn new(settings: &StoreSettings, held_jobs: usize) -> anyhow::Result<Self> {
        let mut secrets: Vec<String> = [settings.s3_access_key_id.as_str(), settings.s3_secret_access_key.expose()]
            .into_iter()
            .map(str::to_owned)
            .chain(
                ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
                    .iter()
                    .filter_map(|v| std::env::var(v).ok()),
            )
            .filter(|s| s.len() >= 4)
            .collect();
        secrets.sort();
        secrets.dedup();
        let mut roots: Vec<PathBuf> = settings.file_roots.iter().flat_map(|r| std::fs::canonicalize(r).ok()).collect();
        roots.extend(settings.file_roots.iter().cloned());
        roots.sort();
        roots.dedup();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            // One GET of the URL as given: a presigned URL does not redirect, and a redirect
            // could lead a worker anywhere, or to plain http.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        for pem in ca_certificates(&settings.ca_file)? {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let http = http.build()?;
        // Refused rather than dropped: an allow-list emptied by bad entries would allow any host.
        let https_hosts = (settings.https_hosts.iter())
            .map(|h| HostPattern::parse(h).with_context(|| format!("store.https_hosts: {h:?} is not a host")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            settings: settings.clone(),
            s3: Mutex::new(HashMap::new()),
            http,
            transfers: Semaphore::new(settings.max_transfers.max(1)),
            breakers: Mutex::new(HashMap::new()),
            held: Semaphore::new(held_jobs.max(1)),
            s3_configured: !settings.s3_endpoint.is_empty()
                || !settings.s3_access_key_id.is_empty()
                || [
                    "AWS_ENDPOINT",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty())),
            secrets,
            roots,
            https_hosts,
        })
    }

    /// Whether `r` can be followed here at all (its scheme enabled, a file under a root, an
    /// S3 key of a valid form): checked before any transfer, permanent when not.
    pub fn check(&self, r: &Ref) -> Result<(), JobError> {
        match r.scheme() {
            Scheme::S3 if !self.s3_configured => Err(JobError::RefDenied(format!(
                "{r}: this worker has no S3 store configured ([store] s3_endpoint and credentials)"
            ))),
            Scheme::S3 => s3_location(r).map(drop),
            Scheme::Https if !self.settings.https => {
                Err(JobError::RefDenied(format!("{r}: this worker does not follow https:// references (store.https)")))
            }
            Scheme::Https => {
                let url = reqwest::Url::parse(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
                let (host, port) = (url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(443));
                if https_host_allowed(&self.https_hosts, host, port) {
                    Ok(())
                } else {
                    Err(JobError::RefDenied(format!("{r}: {host}:{port} is not in store.https_hosts")))
                }
            }
            Scheme::File => {
                let path = file_path(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
                if under_roots(&path, &self.roots) {
                    Ok(())
                } else if self.roots.is_empty() {
                    Err(JobError::RefDenied(format!("{r}: this worker reads no file:// references (store.file_roots)")))
                } else {
                    Err(JobError::RefDenied(format!("{r}: not under a directory of store.file_roots")))
                }
            }
        }
    }

    /// Fetches a job's references (each URL once, one after another), at most `limit` bytes in
    /// all as the job will hold them (a URL named by two fields counts twice): by URL, with how
    /// many fields name it.
    pub async fn fetch_all(&self, refs: &[Ref], limit: u64) -> Result<HashMap<String, (Vec<u8>, usize)>, JobError> {
        if refs.len() > MAX_REFS_PER_JOB {
            return Err(JobError::LimitExceeded(format!(
                "a job names at most {MAX_REFS_PER_JOB} references; this one {}",
                refs.len()
            )));
        }
        let mut uses: Vec<(&Ref, usize)> = Vec::new();
        for r in refs {
            self.check(r)?;
            match uses.iter_mut().find(|(u, _)| *u == r) {
                Some((_, n)) => *n += 1,
                None => uses.push((r, 1)),
            }
        }
        let mut left = limit;
        let mut out = HashMap::with_capacity(uses.len());
        for (r, n) in uses {
            let bytes = self.fetch(r, left / n as u64).await?;
            left = left.saturating_sub(bytes.len() as u64 * n as u64);
            out.insert(r.url().to_owned(), (bytes, n));
        }
        Ok(out)
    }

    /// Reads one reference's bytes, at most `limit` of them.
    pub async fn fetch(&self, r: &Ref, limit: u64) -> Result<Vec<u8>, JobError> {
        self.transfer(r, async {
            match r.scheme() {
                Scheme::S3 => self.fetch_s3(r, limit).await,
                Scheme::File => self.fetch_file(r, limit).await,
                Scheme::Https => self.fetch_https(r, limit).await,
            }
        })
        .await
    }

    /// Runs one transfer of `r` in a slot of `store.max_transfers`, within its time budget
    /// (`timeout_ms` x (1 + `retries`): a mount or a store that hangs rather than refusing frees
    /// the job then), its error scrubbed of credentials.
    /// A place that stopped answering is not tried for a while ([`decide::Breaker`]): the job
    /// is set aside at once, holding no slot.
    async fn transfer<T>(&self, r: &Ref, work: impl Future<Output = Result<T, JobError>>) -> Result<T, JobError> {
        let place = self.place(r);
        let probe = self.admit(r, &place, None)?;
        // Should this future be dropped before the answer (a drain), its probe is given up.
        let mut given_up = GiveUpProbe { stores: self, place: &place, armed: probe };
        let _slot = self.transfers.acquire().await.map_err(|_| JobError::StoreUnavailable("closed".into()))?;
        // It may have opened while this one waited for its slot.
        self.admit(r, &place, Some(probe))?;
        let tries = u32::try_from(self.settings.retries.saturating_add(1)).unwrap_or(u32::MAX);
        let budget = Duration::from_millis(self.settings.timeout_ms).saturating_mul(tries);
        let done = tokio::time::timeout(budget, work)
            .await
            .unwrap_or_else(|_| Err(JobError::StoreUnavailable(format!("{r}: no answer within {budget:?}"))));
        given_up.armed = false;
        drop(given_up);
        let unavailable = matches!(done, Err(JobError::StoreUnavailable(_)));
        let mut breakers = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if unavailable && breakers.len() >= MAX_BREAKERS && !breakers.contains_key(&place) {
            // Full of places that failed once or twice (or no longer): keep the open ones.
            breakers.retain(|_, b| b.is_open());
        }
        let tracked = breakers.len() < MAX_BREAKERS || breakers.contains_key(&place);
        if unavailable && tracked {
            breakers.entry(place).or_default().record(true, probe, std::time::Instant::now());
        } else if !unavailable {
            breakers.remove(&place);
        }
        drop(breakers);
        done.map_err(|e| self.scrubbed(e))
    }

    /// Whether a transfer of `r` to `place` goes now: Ok(whether it is the breaker's probe), or
    /// `store_unavailable` without trying. `probe`: asked again for a transfer admitted before
    /// (it goes unless the breaker opened meanwhile).
    fn admit(&self, r: &Ref, place: &str, probe: Option<bool>) -> Result<bool, JobError> {
        let mut breakers = self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(breaker) = breakers.get_mut(place) else { return Ok(false) };
        let now = std::time::Instant::now();
        let refused = |failures: u32, left: Duration| {
            JobError::StoreUnavailable(format!(
                "{r}: not tried: {place} did not answer its last {failures} transfers (tried again in {:.1} s)",
                left.as_secs_f64()
            ))
        };
        match probe {
            Some(probe) if breaker.still_admits(probe) => Ok(probe),
            Some(_) => Err(refused(breaker.failures(), Duration::ZERO)),
            None => match breaker.admit(now) {
                decide::Admit::Go => Ok(false),
                decide::Admit::Probe => Ok(true),
                decide::Admit::Refuse { failures, left } => Err(refused(failures, left)),
            },
        }
    }

    /// What one breaker watches: one S3 bucket (a throttled bucket pauses no other), one
    /// `file://` root (a mount), one https host and port.
    fn place(&self, r: &Ref) -> String {
        match r.scheme() {
            Scheme::S3 => match s3_location(r) {
                Ok((bucket, _)) => format!("s3://{bucket}"),
                Err(_) => "s3://".to_owned(),
            },
            Scheme::File => {
                let path = file_path(r.url()).unwrap_or_default();
                let root = self.roots.iter().find(|root| path.starts_with(root));
                format!("file://{}", root.map_or_else(|| path.display().to_string(), |root| root.display().to_string()))
            }
            Scheme::Https => match reqwest::Url::parse(r.url()) {
                Ok(url) => {
                    format!(
                        "https://{}:{}",
                        url.host_str().unwrap_or_default(),
                        url.port_or_known_default().unwrap_or(443)
                    )
                }
                Err(_) => r.shown().to_owned(),
            },
        }
    }

    /// A place among the jobs that hold fetched bytes (`store.max_held_jobs`), kept until the
    /// job ends: with `limits.max_ref_bytes` per job, it bounds the memory references take.
    pub async fn hold(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.held.acquire().await.expect("the semaphore is never closed")
    }

    /// Writes every object, at most `store.max_transfers` at once across the worker.
    pub async fn store_all(&self, objects: Vec<(Ref, Vec<u8>)>) -> Result<(), JobError> {
        for (r, _) in &objects {
            self.check(r)?;
        }
        // The first alone: should it be a breaker's probe, the others' refusal does not drop it.
        let mut objects = objects.into_iter();
        if let Some((r, bytes)) = objects.next() {
            self.store(&r, bytes).await?;
        }
        let puts = objects.map(|(r, bytes)| async move { self.store(&r, bytes).await });
        futures_util::future::try_join_all(puts).await.map(drop)
    }

    /// Writes one object (replacing what is there: a job run again writes the same names).
    pub async fn store(&self, r: &Ref, bytes: Vec<u8>) -> Result<(), JobError> {
        self.transfer(r, async {
            match r.scheme() {
                Scheme::S3 => self.store_s3(r, bytes).await,
                Scheme::File => self.store_file(r, bytes).await,
                Scheme::Https => {
                    Err(JobError::InvalidParams(format!("{r}: outputs go to s3:// or file://, not https://")))
                }
            }
        })
        .await
    }

    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>, JobError> {
        let mut clients = self.s3.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(bucket) {
            return Ok(c.clone());
        }
        let s = &self.settings;
        let timeout = Duration::from_millis(s.timeout_ms);
        let mut options = ClientOptions::new().with_timeout(timeout).with_connect_timeout(timeout);
        let unavailable = |e: String| JobError::StoreUnavailable(format!("the S3 client for {bucket}: {e}"));
        for pem in ca_certificates(&s.ca_file).map_err(|e| unavailable(e.to_string()))? {
            let certificate = object_store::Certificate::from_pem(&pem).map_err(|e| unavailable(e.to_string()))?;
            options = options.with_root_certificate(certificate);
        }
        let mut builder =
            AmazonS3Builder::from_env().with_bucket_name(bucket).with_client_options(options).with_retry(RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: s.retries,
                retry_timeout: timeout,
            });
        if !s.s3_region.is_empty() {
            builder = builder.with_region(&s.s3_region);
        }
        if !s.s3_endpoint.is_empty() {
            builder = builder.with_endpoint(&s.s3_endpoint).with_allow_http(s.s3_endpoint.starts_with("http://"));
        }
        if !s.s3_access_key_id.is_empty() {
            builder = builder.with_access_key_id(&s.s3_access_key_id);
        }
        if !s.s3_secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(s.s3_secret_access_key.expose());
        }
        let client = Arc::new(
            builder.build().map_err(|e| JobError::StoreUnavailable(format!("the S3 client for {bucket}: {e}")))?,
        );
        clients.insert(bucket.to_owned(), client.clone());
        Ok(client)
    }

    async fn fetch_s3(&self, r: &Ref, limit: u64) -> Result<Vec<u8>, JobError> {
        let (bucket, key) = s3_location(r)?;
        let client = self.client(bucket)?;
        // The size comes with the answer's headers, before any of the body is read: one round
        // trip, not a HEAD and a GET.
        let got = client.get(&key).await.map_err(|e| s3_error(r, e))?;
        check_size(r, got.meta.size, limit)?;
        let mut out = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error(r, e))?;
            out.extend_from_slice(&chunk);
            check_size(r, out.len() as u64, limit)?;
        }
        Ok(out)
    }

    async fn store_s3(&self, r: &Ref, bytes: Vec<u8>) -> Result<(), JobError> {
        let (bucket, key) = s3_location(r)?;
        let client = self.client(bucket)?;
        client.put(&key, PutPayload::from(bytes)).await.map(drop).map_err(|e| s3_error(r, e))
    }

    async fn fetch_file(&self, r: &Ref, limit: u64) -> Result<Vec<u8>, JobError> {
        let path = file_path(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
        // Symbolic links are followed only while they stay under a root.
        let real = tokio::fs::canonicalize(&path).await.map_err(|e| io_error(r, &e))?;
        if !under_roots(&real, &self.roots) {
            return Err(JobError::RefDenied(format!("{r}: leads outside store.file_roots")));
        }
        let meta = tokio::fs::metadata(&real).await.map_err(|e| io_error(r, &e))?;
        if !meta.is_file() {
            return Err(JobError::RefNotFound(format!("{r}: not a file")));
        }
        check_size(r, meta.len(), limit)?;
        // It may have grown since: never read past the limit.
        use tokio::io::AsyncReadExt as _;
        let file = tokio::fs::File::open(&real).await.map_err(|e| io_error(r, &e))?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes).await.map_err(|e| io_error(r, &e))?;
        check_size(r, bytes.len() as u64, limit)?;
        Ok(bytes)
    }

    async fn fetch_https(&self, r: &Ref, limit: u64) -> Result<Vec<u8>, JobError> {
        // A presigned URL is signed for GET alone: the response's length is the size check.
        let response = self.http.get(r.url()).send().await.map_err(|e| http_error(r, &e))?;
        let status = response.status();
        if !status.is_success() {
            let what = format!("{r}: answered {status}");
            return Err(match answer_of_status(status.as_u16()) {
                Answer::NotFound => JobError::RefNotFound(what),
                Answer::Denied => JobError::RefDenied(what),
                Answer::Unavailable => JobError::StoreUnavailable(what),
            });
        }
        if let Some(length) = response.content_length() {
            check_size(r, length, limit)?;
        }
        let mut out = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| http_error(r, &e))?;
            out.extend_from_slice(&chunk);
            check_size(r, out.len() as u64, limit)?;
        }
        Ok(out)
    }

    /// The error with the configured credentials, should a store have quoted them, hidden.
    fn scrubbed(&self, e: JobError) -> JobError {
        let scrub = |text: String| self.secrets.iter().fold(text, |t, s| t.replace(s.as_str(), "***"));
        match e {
            JobError::RefNotFound(t) => JobError::RefNotFound(scrub(t)),
            JobError::RefDenied(t) => JobError::RefDenied(scrub(t)),
            JobError::StoreUnavailable(t) => JobError::StoreUnavailable(scrub(t)),
            JobError::InvalidParams(t) => JobError::InvalidParams(scrub(t)),
            JobError::LimitExceeded(t) => JobError::LimitExceeded(scrub(t)),
            other => other,
        }
    }
}

/// Each PEM certificate of `store.ca_file` (none when it is empty).
fn ca_certificates(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("store.ca_file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            out.push(std::mem::take(&mut current).into_bytes());
        }
    }
    anyhow::ensure!(!out.is_empty(), "store.ca_file {}: no PEM certificate in it", path.display());
    Ok(out)
}

/// An `s3://bucket/key` reference's bucket and key.
fn s3_location(r: &Ref) -> Result<(&str, ObjectPath), JobError> {
    let rest = r.url().split_once("://").map_or("", |(_, rest)| rest);
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_bucket(bucket) {
        return Err(JobError::InvalidParams(format!(
            "{r}: {bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
        )));
    }
    let key = ObjectPath::parse(key).map_err(|e| JobError::InvalidParams(format!("{r}: not an object key: {e}")))?;
    Ok((bucket, key))
}

/// S3's bucket naming rules (the common part every S3-compatible store accepts).
pub fn valid_bucket(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..")
}

fn check_size(r: &Ref, size: u64, limit: u64) -> Result<(), JobError> {
    if size > limit {
        return Err(JobError::LimitExceeded(format!(
            "{r} holds more than {limit} bytes (limits.max_ref_bytes): {size} or more"
        )));
    }
    Ok(())
}

fn s3_error(r: &Ref, e: object_store::Error) -> JobError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => JobError::RefNotFound(r.to_string()),
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            JobError::RefDenied(format!("{r}: {source}"))
        }
        E::InvalidPath { source } => JobError::InvalidParams(format!("{r}: {source}")),
        other => {
            let text = other.to_string();
            match status_in(&text).map(answer_of_status) {
                Some(Answer::NotFound) => JobError::RefNotFound(format!("{r}: {text}")),
                Some(Answer::Denied) => JobError::RefDenied(format!("{r}: {text}")),
                Some(Answer::Unavailable) | None => JobError::StoreUnavailable(format!("{r}: {text}")),
            }
        }
    }
}

/// The HTTP status an `object_store` error's text reports ("... non-2xx status code: 400 Bad
/// Request ..."): the crate maps 404, 401 and 403 to variants of their own and keeps the others,
/// behind a type it does not export, in that text. None: no status (a connection that failed).
pub fn status_in(text: &str) -> Option<u16> {
    let (_, after) = text.split_once("status code: ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|s| (100..600).contains(s))
}

/// A file system's answer: missing (also a file where a directory is expected, or a loop of
/// links), denied, a name that cannot be (a directory where a file is to be written, too long):
/// permanent; anything else (an I/O error of the mount) the store's being unavailable.
fn io_error(r: &Ref, e: &std::io::Error) -> JobError {
    use std::io::ErrorKind as K;
    const ELOOP: i32 = 40;
    match e.kind() {
        K::NotFound | K::NotADirectory => JobError::RefNotFound(format!("{r}: {e}")),
        _ if e.raw_os_error() == Some(ELOOP) => JobError::RefNotFound(format!("{r}: {e}")),
        K::PermissionDenied | K::ReadOnlyFilesystem => JobError::RefDenied(format!("{r}: {e}")),
        K::IsADirectory | K::InvalidFilename | K::InvalidInput => JobError::InvalidParams(format!("{r}: {e}")),
        _ => JobError::StoreUnavailable(format!("{r}: {e}")),
    }
}

/// A failed HTTP exchange, without the URL reqwest would quote (its query is the signature).
fn http_error(r: &Ref, e: &reqwest::Error) -> JobError {
    if e.is_builder() {
        return JobError::InvalidParams(format!("{r}: not a URL this worker can request"));
    }
    if e.is_redirect() {
        return JobError::RefDenied(format!("{r}: answered with a redirect, which presigned URLs are not"));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the exchange failed"
    };
    JobError::StoreUnavailable(format!("{r}: {what}"))
}

impl Stores {
    /// Writes a file under a root: its directory made, then resolved (symbolic links followed)
    /// and checked to be under a root still, and the file written into that resolved directory.
    async fn store_file(&self, r: &Ref, bytes: Vec<u8>) -> Result<(), JobError> {
        let path = file_path(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(JobError::InvalidParams(format!("{r}: no file name")));
        };
        tokio::fs::create_dir_all(dir).await.map_err(|e| io_error(r, &e))?;
        let real = tokio::fs::canonicalize(dir).await.map_err(|e| io_error(r, &e))?;
        let path = real.join(name);
        if !under_roots(&path, &self.roots) {
            return Err(JobError::RefDenied(format!("{r}: leads outside store.file_roots")));
        }
        write_whole(r, &real, &path, bytes).await
    }
}

/// Writes `path` in `dir` whole: written beside it and renamed, so a reader never sees half.
async fn write_whole(r: &Ref, dir: &Path, path: &Path, bytes: Vec<u8>) -> Result<(), JobError> {
    let partial = dir.join(format!(".{}.partial", uuid::Uuid::new_v4()));
    tokio::fs::write(&partial, bytes).await.map_err(|e| io_error(r, &e))?;
    if let Err(e) = tokio::fs::rename(&partial, path).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(io_error(r, &e));
    }
    Ok(())
}

/// Gives up a breaker's probe whose transfer ends without an answer recorded (dropped).
struct GiveUpProbe<'a> {
    stores: &'a Stores,
    place: &'a str,
    armed: bool,
}

impl Drop for GiveUpProbe<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut breakers = self.stores.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(breaker) = breakers.get_mut(self.place) {
                breaker.abandon_probe();
            }
        }
    }
}

/// Whether an `https://` reference to `host`:`port` is followed under `allowed`
/// (`store.https_hosts`, parsed; empty: any host).
pub fn https_host_allowed(allowed: &[HostPattern], host: &str, port: u16) -> bool {
    allowed.is_empty() || allowed.iter().any(|p| p.matches(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_references_go_only_to_the_hosts_allowed() {
        let allowed = |list: &[&str], host: &str, port: u16| {
            https_host_allowed(&list.iter().filter_map(|s| HostPattern::parse(s)).collect::<Vec<_>>(), host, port)
        };
        assert!(allowed(&[], "169.254.169.254", 443), "none listed: any host");
        let list = ["store.example", "minio.lan:9000", "*.s3.example"];
        assert!(allowed(&list, "store.example", 443) && allowed(&list, "STORE.example.", 8443));
        assert!(
            allowed(&["Store.Example.", "minio.lan.:9000"], "store.example", 1)
                && allowed(&["minio.lan.:9000"], "minio.lan", 9000)
        );
        assert!(allowed(&list, "minio.lan", 9000) && !allowed(&list, "minio.lan", 443));
        assert!(allowed(&list, "bucket.s3.example", 443) && allowed(&list, "a.b.s3.example", 443));
        assert!(!allowed(&list, "s3.example", 443), "*.domain is the names under it");
        assert!(!allowed(&list, "evils3.example", 443) && !allowed(&list, "store.example.evil", 443));
        assert!(!allowed(&list, "169.254.169.254", 443) && !allowed(&list, "localhost", 443));
    }

    #[test]
    fn statuses_are_not_found_denied_or_unavailable() {
        assert_eq!(answer_of_status(404), Answer::NotFound);
        assert_eq!(answer_of_status(410), Answer::NotFound);
        for s in [400, 401, 403, 405] {
            assert_eq!(answer_of_status(s), Answer::Denied, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(answer_of_status(s), Answer::Unavailable, "{s}");
        }
    }

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for ok in ["abc", "photos-2026", "a.b.c", "0ab"] {
            assert!(valid_bucket(ok), "{ok}");
        }
        for bad in ["ab", "Photos", "a_b", "-ab", "ab-", "a..b", &"a".repeat(64), "a b"] {
            assert!(!valid_bucket(bad), "{bad}");
        }
    }

    #[test]
    fn an_object_store_error_tells_its_status() {
        let text = "Generic S3 error: Error performing HEAD http://127.0.0.1:1/in/a in 402µs - \
                    Server returned non-2xx status code: 400 Bad Request: ";
        assert_eq!(status_in(text), Some(400));
        assert_eq!(status_in("... status code: 503 Service Unavailable"), Some(503));
        assert_eq!(status_in("Generic S3 error: error sending request: connection refused"), None);
        assert_eq!(status_in("status code: 99"), None);
    }

    #[test]
    fn files_are_read_only_under_a_root() {
        let roots = [PathBuf::from("/mnt/share"), PathBuf::from("/data")];
        for ok in ["/mnt/share/a.jpg", "/mnt/share/x/y/z.png", "/data/b"] {
            assert!(under_roots(Path::new(ok), &roots), "{ok}");
        }
        for bad in ["/mnt/share", "/mnt/shared/a", "/mnt/share/../etc/passwd", "/etc/passwd", "relative/a"] {
            assert!(!under_roots(Path::new(bad), &roots), "{bad}");
        }
        assert!(!under_roots(Path::new("/mnt/share/a"), &[]), "no roots, no files");
    }

    #[test]
    fn file_urls_decode_their_escapes() {
        assert_eq!(file_path("file:///mnt/a%20b.jpg").unwrap(), PathBuf::from("/mnt/a b.jpg"));
        assert_eq!(file_path("file:///mnt/a.jpg?x=1").unwrap(), PathBuf::from("/mnt/a.jpg"));
        assert!(file_path("file:///mnt/%zz").is_err());
        assert!(file_path("file:///mnt/%00").is_err());
    }

    #[test]
    fn an_output_prefix_holds_the_job_id_and_cannot_climb_out() {
        assert_eq!(output_prefix("s3://b/out/", "job-1"), "s3://b/out/job-1/");
        assert_eq!(output_prefix("s3://b/out", "job-1"), "s3://b/out/job-1/");
        assert_eq!(output_prefix("file:///o/", "../../etc"), "file:///o/.._.._etc/");
        assert_eq!(output_prefix("file:///o/", ".."), "file:///o/_../");
        assert_eq!(output_prefix("file:///o/", ""), "file:///o/_/");
        assert_eq!(output_prefix("s3://b/", "a b/c?d"), "s3://b/a_b_c_d/");
    }

    #[tokio::test]
    async fn a_breakers_probe_dropped_before_its_answer_lets_the_next_transfer_probe() {
        // A host that takes connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let stores = Stores::new(&StoreSettings::default(), 2).unwrap();
        let r = Ref::new(format!("https://127.0.0.1:{port}/a.jpg")).unwrap();
        let place = stores.place(&r);
        assert_eq!(place, format!("https://127.0.0.1:{port}"));
        assert_eq!(stores.place(&Ref::new("s3://photos/a/b.jpg").unwrap()), "s3://photos", "one breaker per bucket");
        // Opened two seconds ago for one second: the next transfer is the probe.
        let then = std::time::Instant::now() - Duration::from_secs(2);
        let mut breaker = decide::Breaker::default();
        for _ in 0..decide::BREAKER_FAILURES {
            breaker.record(true, false, then);
        }
        stores.breakers.lock().unwrap().insert(place.clone(), breaker);
        // The probe's job is dropped (a drain) while it waits for the answer.
        let dropped = tokio::time::timeout(Duration::from_millis(100), stores.fetch(&r, 100)).await;
        assert!(dropped.is_err(), "the host never answers");
        let now = std::time::Instant::now();
        let admit = stores.breakers.lock().unwrap().get_mut(&place).map(|b| b.admit(now));
        assert_eq!(admit, Some(decide::Admit::Probe), "the next transfer probes: the dropped one is given up");
    }

    #[tokio::test]
    async fn file_references_are_read_under_their_roots_and_written_whole() {
        let dir = std::env::temp_dir().join(format!("warren-store-{}", uuid::Uuid::new_v4()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join("outside"), b"secret").unwrap();
        std::fs::write(root.join("in.bin"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("link")).unwrap();
        let settings = StoreSettings { file_roots: vec![root.clone()], ..StoreSettings::default() };
        let stores = Stores::new(&settings, 2).unwrap();
        let at = |p: &Path| Ref::new(format!("file://{}", p.display())).unwrap();
        assert_eq!(stores.fetch(&at(&root.join("in.bin")), 100).await.unwrap(), b"0123456789");
        let e = stores.fetch(&at(&root.join("in.bin")), 9).await.unwrap_err();
        assert_eq!(e.error_type(), "limit_exceeded", "{e}");
        let e = stores.fetch(&at(&root.join("missing")), 100).await.unwrap_err();
        assert_eq!(e.error_type(), "ref_not_found", "{e}");
        let e = stores.fetch(&at(&root.join("link")), 100).await.unwrap_err();
        assert_eq!(e.error_type(), "ref_denied", "a link out of the root: {e}");
        let e = stores.check(&at(&dir.join("outside"))).unwrap_err();
        assert_eq!(e.error_type(), "ref_denied", "{e}");
        let out = at(&root.join("out/job/0.jpg"));
        stores.store_all(vec![(out.clone(), b"abc".to_vec())]).await.unwrap();
        assert_eq!(stores.fetch(&out, 100).await.unwrap(), b"abc");
        let leftovers: Vec<_> = std::fs::read_dir(root.join("out/job")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no partial file left");
        // A directory of the output's path that links out of the root: refused, nothing written.
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), root.join("out/linked")).unwrap();
        let e = stores.store(&at(&root.join("out/linked/0.jpg")), b"abc".to_vec()).await.unwrap_err();
        assert_eq!(e.error_type(), "ref_denied", "{e}");
        assert_eq!(std::fs::read_dir(dir.join("elsewhere")).unwrap().count(), 0, "nothing written outside");
        // A file where a directory is expected, a directory where the file is: permanent.
        let e = stores.fetch(&at(&root.join("in.bin/x")), 100).await.unwrap_err();
        assert_eq!(e.error_type(), "ref_not_found", "{e}");
        let e = stores.store(&at(&root.join("out/job")), b"abc".to_vec()).await.unwrap_err();
        assert_eq!(e.class(), warren_common::ErrorClass::Permanent, "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credentials_are_scrubbed_from_errors() {
        let settings = StoreSettings {
            s3_access_key_id: "AKIDEXAMPLE".into(),
            s3_secret_access_key: warren_infra::settings::Secret("wJalrXUtnFEMI".into()),
            ..StoreSettings::default()
        };
        let stores = Stores::new(&settings, 2).unwrap();
        let e = stores.scrubbed(JobError::RefDenied("key AKIDEXAMPLE with wJalrXUtnFEMI refused".into()));
        assert_eq!(e.to_string(), "reference denied: key *** with *** refused");
    }
}
