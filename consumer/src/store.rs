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

use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};
use tokio::sync::Semaphore;
use warren_common::JobError;
use warren_common::bytes::{Ref, Scheme};
use warren_infra::settings::StoreSettings;

/// The worker's way to its stores. Cheap to share; S3 clients are made once per bucket.
pub struct Stores {
    settings: StoreSettings,
    s3: Mutex<HashMap<String, Arc<AmazonS3>>>,
    http: reqwest::Client,
    transfers: Semaphore,
    /// `store.file_roots`, resolved (symbolic links followed) where they exist.
    roots: Vec<PathBuf>,
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
    pub fn new(settings: &StoreSettings) -> anyhow::Result<Self> {
        let roots =
            settings.file_roots.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::limited(5));
        for pem in ca_certificates(&settings.ca_file)? {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        let http = http.build()?;
        Ok(Self {
            settings: settings.clone(),
            s3: Mutex::new(HashMap::new()),
            http,
            transfers: Semaphore::new(settings.max_transfers.max(1)),
            roots,
        })
    }

    /// Whether `r` can be followed here at all (its scheme enabled, a file under a root, an
    /// S3 key of a valid form): checked before any transfer, permanent when not.
    pub fn check(&self, r: &Ref) -> Result<(), JobError> {
        match r.scheme() {
            Scheme::S3 => s3_location(r).map(drop),
            Scheme::Https if !self.settings.https => {
                Err(JobError::RefDenied(format!("{r}: this worker does not follow https:// references (store.https)")))
            }
            Scheme::Https => Ok(()),
            Scheme::File => {
                let path = file_path(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
                if under_roots(&path, &self.roots) || under_roots(&path, &self.settings.file_roots) {
                    Ok(())
                } else if self.roots.is_empty() {
                    Err(JobError::RefDenied(format!("{r}: this worker reads no file:// references (store.file_roots)")))
                } else {
                    Err(JobError::RefDenied(format!("{r}: not under a directory of store.file_roots")))
                }
            }
        }
    }

    /// Fetches every reference (each URL once, at most `store.max_transfers` at once across
    /// the worker), each at most `limit` bytes: by URL, with how many fields name it.
    pub async fn fetch_all(&self, refs: &[Ref], limit: u64) -> Result<HashMap<String, (Vec<u8>, usize)>, JobError> {
        let mut uses: HashMap<&Ref, usize> = HashMap::new();
        for r in refs {
            self.check(r)?;
            *uses.entry(r).or_default() += 1;
        }
        let fetches =
            uses.iter().map(|(r, n)| async move { Ok((r.url().to_owned(), (self.fetch(r, limit).await?, *n))) });
        futures_util::future::try_join_all(fetches).await.map(|v| v.into_iter().collect())
    }

    /// Reads one reference's bytes, at most `limit` of them.
    pub async fn fetch(&self, r: &Ref, limit: u64) -> Result<Vec<u8>, JobError> {
        let _permit = self.transfers.acquire().await.map_err(|_| JobError::StoreUnavailable("closed".into()))?;
        let got = match r.scheme() {
            Scheme::S3 => self.fetch_s3(r, limit).await,
            Scheme::File => self.fetch_file(r, limit).await,
            Scheme::Https => self.fetch_https(r, limit).await,
        };
        got.map_err(|e| self.scrubbed(e))
    }

    /// Writes every object, at most `store.max_transfers` at once across the worker.
    pub async fn store_all(&self, objects: Vec<(Ref, Vec<u8>)>) -> Result<(), JobError> {
        for (r, _) in &objects {
            self.check(r)?;
        }
        let puts = objects.into_iter().map(|(r, bytes)| async move { self.store(&r, bytes).await });
        futures_util::future::try_join_all(puts).await.map(drop)
    }

    /// Writes one object (replacing what is there: a job run again writes the same names).
    pub async fn store(&self, r: &Ref, bytes: Vec<u8>) -> Result<(), JobError> {
        let _permit = self.transfers.acquire().await.map_err(|_| JobError::StoreUnavailable("closed".into()))?;
        let put = match r.scheme() {
            Scheme::S3 => self.store_s3(r, bytes).await,
            Scheme::File => store_file(r, bytes).await,
            Scheme::Https => Err(JobError::InvalidParams(format!("{r}: outputs go to s3:// or file://, not https://"))),
        };
        put.map_err(|e| self.scrubbed(e))
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
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&s.s3_region)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: s.retries,
                retry_timeout: timeout,
            });
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
        let meta = client.head(&key).await.map_err(|e| s3_error(r, e))?;
        check_size(r, meta.size, limit)?;
        let got = client.get(&key).await.map_err(|e| s3_error(r, e))?;
        // It may have changed between the two requests.
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
        let bytes = tokio::fs::read(&real).await.map_err(|e| io_error(r, &e))?;
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
        let secrets = [self.settings.s3_access_key_id.as_str(), self.settings.s3_secret_access_key.expose()];
        let scrub = |text: String| secrets.iter().filter(|s| s.len() >= 4).fold(text, |t, s| t.replace(s, "***"));
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
    let key = ObjectPath::parse(key).map_err(|e| JobError::InvalidParams(format!("{r}: not an object key: {e}")))?;
    Ok((bucket, key))
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

fn io_error(r: &Ref, e: &std::io::Error) -> JobError {
    match e.kind() {
        std::io::ErrorKind::NotFound => JobError::RefNotFound(r.to_string()),
        std::io::ErrorKind::PermissionDenied => JobError::RefDenied(format!("{r}: {e}")),
        _ => JobError::StoreUnavailable(format!("{r}: {e}")),
    }
}

/// A failed HTTP exchange, without the URL reqwest would quote (its query is the signature).
fn http_error(r: &Ref, e: &reqwest::Error) -> JobError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the exchange failed"
    };
    JobError::StoreUnavailable(format!("{r}: {what}"))
}

async fn store_file(r: &Ref, bytes: Vec<u8>) -> Result<(), JobError> {
    let path = file_path(r.url()).map_err(|e| JobError::InvalidParams(format!("{r}: {e}")))?;
    let Some(dir) = path.parent() else { return Err(JobError::InvalidParams(format!("{r}: no directory"))) };
    tokio::fs::create_dir_all(dir).await.map_err(|e| io_error(r, &e))?;
    // Written beside it and renamed: a reader never sees half an object.
    let partial = dir.join(format!(".{}.partial", uuid::Uuid::new_v4()));
    tokio::fs::write(&partial, bytes).await.map_err(|e| io_error(r, &e))?;
    if let Err(e) = tokio::fs::rename(&partial, &path).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(io_error(r, &e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn file_references_are_read_under_their_roots_and_written_whole() {
        let dir = std::env::temp_dir().join(format!("warren-store-{}", uuid::Uuid::new_v4()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join("outside"), b"secret").unwrap();
        std::fs::write(root.join("in.bin"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("link")).unwrap();
        let settings = StoreSettings { file_roots: vec![root.clone()], ..StoreSettings::default() };
        let stores = Stores::new(&settings).unwrap();
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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credentials_are_scrubbed_from_errors() {
        let settings = StoreSettings {
            s3_access_key_id: "AKIDEXAMPLE".into(),
            s3_secret_access_key: warren_infra::settings::Secret("wJalrXUtnFEMI".into()),
            ..StoreSettings::default()
        };
        let stores = Stores::new(&settings).unwrap();
        let e = stores.scrubbed(JobError::RefDenied("key AKIDEXAMPLE with wJalrXUtnFEMI refused".into()));
        assert_eq!(e.to_string(), "reference denied: key *** with *** refused");
    }
}
