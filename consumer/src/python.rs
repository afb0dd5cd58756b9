//! Python kinds, hosted (docs/python-kinds.md): the worker starts `python -m
//! warren_worker.child MODULE...` children, learns from the first which kinds the modules
//! declare, and runs their jobs one at a time per child over the children's stdin and stdout
//! (`clients/python/warren_worker/_protocol.py` has the frames). A child past its job's time
//! limit is killed (a process can be stopped, unlike a thread) and the next job gets a new one;
//! one that dies is a death for poison counting ([`Ran::Died`]); children are replaced after
//! their jobs or past their memory ([`Recycle`]); their stderr lines are logged with the job id.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child as Process, ChildStdin, ChildStdout, Command};
use warren_common::{CancelFlag, ErrorClass, JobBody, JobError, Limits, Output, Progress, Timing};

use crate::decide;
use crate::pool::{Ran, now_us};
use crate::registry::{Input, RunCx, Runner};

/// The protocol version this worker speaks.
pub const PROTOCOL: u64 = 1;
/// Largest header or body read from a child.
const MAX_PART: u32 = 1 << 30;

/// A frame's two length fields, then its header and body.
pub fn encode_frame(header: &Value, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + head.len() + body.len());
    out.extend_from_slice(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out
}

/// The start of a child's stderr line naming the job whose lines follow (`_protocol.JOB_MARK`).
const JOB_MARK: &str = "\u{1e}warren-job ";
/// Longest piece of a child's stderr logged as one line.
const MAX_LINE: u64 = 16 << 10;

/// Which job a child's stderr lines belong to, read from the stream itself: the child marks
/// where each job's lines start and end, so a line is attributed by its place in the stream, not
/// by when the worker reads it (a line written just before a job's answer is often read after).
#[derive(Debug, Default)]
pub struct StderrJobs {
    current: String,
}

impl StderrJobs {
    /// The job `line` belongs to ("" between jobs), or None for a mark. A mark is a line of
    /// its own: the child writes a newline before it, in the same write.
    pub fn attribute(&mut self, line: &str) -> Option<String> {
        match line.strip_prefix(JOB_MARK).and_then(|id| serde_json::from_str::<String>(id).ok()) {
            Some(id) => {
                self.current = id;
                None
            }
            None => Some(self.current.clone()),
        }
    }
}

/// Logs a child's stderr line by line with the job each belongs to ([`StderrJobs`]) until it
/// ends. Bytes that are not UTF-8 are logged replaced, and a line past [`MAX_LINE`] in pieces,
/// so no output stops the reading (a reader that stopped would close the pipe, and the child's
/// next print would fail its job with a broken pipe).
async fn log_stderr(stderr: tokio::process::ChildStderr, pid: u32) {
    use tokio::io::AsyncBufReadExt as _;
    let mut reader = BufReader::new(stderr);
    let mut jobs = StderrJobs::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        // The child writes a newline before each mark (its own line even after a progress bar).
        if text.is_empty() {
            continue;
        }
        if let Some(job_id) = jobs.attribute(text) {
            tracing::info!(target: "warren_python", pid, job_id = %job_id, "{text}");
        }
    }
}

/// Most places of bytes an output may name for the store (as a job may hold references).
const MAX_BYTES_AT: usize = 64;

/// Where an `ok` frame says its output holds bytes (JSON pointers); none if it says nothing
/// usable. Past [`MAX_BYTES_AT`], the first ones.
fn bytes_at(header: &Value) -> Vec<String> {
    let Some(all) = header["bytes_at"].as_array() else { return Vec::new() };
    all.iter()
        .filter_map(Value::as_str)
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .take(MAX_BYTES_AT)
        .map(str::to_owned)
        .collect()
}

/// A kind as a child declares it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Declared {
    pub name: String,
    pub time_limit_ms: u64,
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub bytes_fields: Vec<String>,
}

/// How one job ended in a child.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its output's JSON text, and where it holds bytes (JSON pointers to base64 strings).
    Output(String, Vec<String>),
    Failed(JobError),
}

/// One child process and its pipes.
pub struct Child {
    process: Process,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Jobs it ran, and its resident memory after the last.
    pub jobs: u64,
    pub rss_bytes: u64,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("pid", &self.process.id()).field("jobs", &self.jobs).finish()
    }
}

/// How to start a child, and when to replace one.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub interpreter: String,
    pub modules: Vec<String>,
    /// Prepended to `PYTHONPATH`.
    pub path: Vec<String>,
    pub recycle: Recycle,
}

/// When a child is replaced, between jobs (0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recycle {
    pub max_jobs: u64,
    pub max_rss_bytes: u64,
}

impl Recycle {
    /// Why a child that ran `jobs` jobs and holds `rss_bytes` is replaced now, if it is.
    pub fn why(&self, jobs: u64, rss_bytes: u64) -> Option<&'static str> {
        if self.max_jobs > 0 && jobs >= self.max_jobs {
            Some("jobs")
        } else if self.max_rss_bytes > 0 && rss_bytes > self.max_rss_bytes {
            Some("memory")
        } else {
            None
        }
    }
}

impl Child {
    /// Starts a child and reads its hello: the kinds it declares.
    pub async fn spawn(launch: &Launch) -> anyhow::Result<(Self, Vec<Declared>)> {
        let mut command = Command::new(&launch.interpreter);
        command.arg("-m").arg("warren_worker.child").args(&launch.modules);
        if !launch.path.is_empty() {
            let mut path = launch.path.join(":");
            if let Ok(old) = std::env::var("PYTHONPATH") {
                path = format!("{path}:{old}");
            }
            command.env("PYTHONPATH", path);
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut process =
            command.spawn().with_context(|| format!("start {} -m warren_worker.child", launch.interpreter))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (process.stdin.take(), process.stdout.take(), process.stderr.take())
        else {
            anyhow::bail!("the child's pipes were not opened");
        };
        // Its prints, tracebacks and C extensions' output, each line logged with the job it runs.
        tokio::spawn(log_stderr(stderr, process.id().unwrap_or_default()));
        let mut child = Self { process, stdin, stdout: BufReader::new(stdout), jobs: 0, rss_bytes: 0 };
        let Some((hello, _)) = child.read().await? else {
            anyhow::bail!("the Python child ended before saying which kinds it has (see its stderr above)");
        };
        anyhow::ensure!(
            hello["t"] == "hello" && hello["protocol"].as_u64() == Some(PROTOCOL),
            "the Python child speaks another protocol: {hello}"
        );
        let kinds: Vec<Declared> = serde_json::from_value(hello["kinds"].clone()).context("the child's kinds")?;
        Ok((child, kinds))
    }

    /// The next frame, or None when the child's stdout ended (it died or exited).
    pub async fn read(&mut self) -> anyhow::Result<Option<(Value, Vec<u8>)>> {
        let mut lengths = [0u8; 8];
        match self.stdout.read_exact(&mut lengths).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let head_len = u32::from_le_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
        let body_len = u32::from_le_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
        anyhow::ensure!(head_len <= MAX_PART && body_len <= MAX_PART, "a frame past the limit from the child");
        let mut head = vec![0; head_len as usize];
        let mut body = vec![0; body_len as usize];
        self.stdout.read_exact(&mut head).await?;
        self.stdout.read_exact(&mut body).await?;
        Ok(Some((serde_json::from_slice(&head).context("a frame header from the child")?, body)))
    }

    async fn send(&mut self, header: &Value, body: &[u8]) -> std::io::Result<()> {
        self.stdin.write_all(&encode_frame(header, body)).await?;
        self.stdin.flush().await
    }

    /// Runs one job; the child is gone (killed, or dead) when this returns `Err`.
    pub async fn run(&mut self, job: &JobFrame<'_>, limit: Duration) -> Result<Answer, Ended> {
        let header = json!({"t": "job", "id": job.id, "kind": job.kind, "attempt": job.attempt,
                            "deadline_ms": job.deadline_ms});
        if self.send(&header, job.body).await.is_err() {
            return Err(Ended::Died);
        }
        let mut told = false;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let until = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::select! {
                frame = self.read() => frame,
                _ = tick.tick() => {
                    if !told && job.cancel.is_raised() {
                        told = true;
                        let _ = self.send(&json!({"t": "cancel", "id": job.id}), b"").await;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(until) => {
                    let _ = self.process.start_kill();
                    let _ = self.process.wait().await;
                    return Err(Ended::Killed);
                }
            };
            let Ok(Some((header, body))) = frame else { return Err(Ended::Died) };
            match header["t"].as_str() {
                Some("progress") => {
                    let fraction = header["fraction"].as_f64().unwrap_or(0.0);
                    job.progress.report(fraction, header["text"].as_str().unwrap_or(""));
                }
                Some("ok") => {
                    self.jobs += 1;
                    self.rss_bytes = header["rss_bytes"].as_u64().unwrap_or(0);
                    let bytes_at = bytes_at(&header);
                    return Ok(Answer::Output(String::from_utf8_lossy(&body).into_owned(), bytes_at));
                }
                Some("error") => {
                    self.jobs += 1;
                    self.rss_bytes = header["rss_bytes"].as_u64().unwrap_or(0);
                    return Ok(Answer::Failed(error_of(&header)));
                }
                _ => return Err(Ended::Died),
            }
        }
    }
}

/// A job as the child gets it.
#[derive(Debug)]
pub struct JobFrame<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub attempt: u32,
    pub deadline_ms: Option<u64>,
    /// The job's JSON text, as its envelope held it.
    pub body: &'a [u8],
    pub progress: &'a Progress,
    pub cancel: &'a CancelFlag,
}

/// Why a child did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Past the job's time limit: killed.
    Killed,
    /// It died (exited, crashed, killed from outside) or spoke out of turn.
    Died,
}

/// The error a child reported: its class and type as the kind said (a type is a metric label:
/// at most [`MAX_TYPES`] distinct ones are kept, the rest are `python_error`).
pub fn error_of(header: &Value) -> JobError {
    let class = if header["class"] == "transient" { ErrorClass::Transient } else { ErrorClass::Permanent };
    let error_type = intern(header["type"].as_str().unwrap_or("python_error"));
    let message = header["message"].as_str().unwrap_or(error_type).to_owned();
    JobError::Kind { class, error_type, message }
}

/// Distinct error types kept from children.
pub const MAX_TYPES: usize = 256;

fn intern(error_type: &str) -> &'static str {
    static TYPES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let valid = !error_type.is_empty()
        && error_type.len() <= 64
        && error_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return "python_error";
    }
    let mut types = TYPES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = types.iter().find(|t| **t == error_type) {
        return known;
    }
    if types.len() >= MAX_TYPES {
        return "python_error";
    }
    let leaked: &'static str = Box::leak(error_type.to_owned().into_boxed_str());
    types.push(leaked);
    leaked
}

/// The children of one worker: idle ones kept, at most `permits` running at once.
pub struct Children {
    launch: Launch,
    idle: Mutex<Vec<Child>>,
    permits: tokio::sync::Semaphore,
    pub size: usize,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children").field("size", &self.size).field("launch", &self.launch).finish()
    }
}

impl Children {
    /// Starts the first child and learns the kinds; the others start as jobs need them.
    pub async fn start(launch: Launch, size: usize) -> anyhow::Result<(Self, Vec<Declared>)> {
        let (first, kinds) = Child::spawn(&launch).await?;
        let size = size.max(1);
        let children = Self { launch, idle: Mutex::new(vec![first]), permits: tokio::sync::Semaphore::new(size), size };
        Ok((children, kinds))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A Python kind, as the delivery path sees it.
#[derive(Debug)]
pub struct PythonKind {
    pub name: &'static str,
    pub children: std::sync::Arc<Children>,
    /// The input's fields the kind declared as bytes (base64 in JSON), which may hold references.
    pub bytes_fields: std::sync::Arc<[String]>,
}

impl PythonKind {
    /// The job's text with each declared bytes field that holds a reference read through
    /// `warren_common::bytes` (so the worker lists the reference, then puts its fetched bytes
    /// in place), a filled field written back as base64.
    fn with_refs(&self, text: &str) -> Result<String, JobError> {
        if self.bytes_fields.is_empty() || !text.contains("\"ref\"") {
            return Ok(text.to_owned());
        }
        let invalid = |e: String| JobError::InvalidParams(format!("job: {e}"));
        let mut input: serde_json::Map<String, Value> =
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut filled = false;
        for field in self.bytes_fields.iter() {
            if let Some(value @ Value::Object(_)) = input.get_mut(field) {
                let bytes = warren_common::bytes::deserialize(&*value).map_err(|e| invalid(format!("{field}: {e}")))?;
                if warren_common::Ref::from_bytes(&bytes).is_none() {
                    use base64::Engine as _;
                    *value = Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes));
                    filled = true;
                }
            }
        }
        if filled { serde_json::to_string(&input).map_err(|e| invalid(e.to_string())) } else { Ok(text.to_owned()) }
    }
}

impl Runner for PythonKind {
    fn name(&self) -> &'static str {
        self.name
    }

    /// The job's JSON text, kept as it is; Python kinds take JSON jobs only.
    fn decode(&self, job: JobBody<'_>) -> Result<Input, JobError> {
        match job {
            JobBody::Json(text) => Ok(Box::new(self.with_refs(text)?)),
            JobBody::Bincode(_) => {
                Err(JobError::InvalidParams(format!("{} is a Python kind: publish its jobs as JSON", self.name)))
            }
        }
    }

    fn validate(&self, _input: &Input, _limits: &Limits) -> Result<(), JobError> {
        Ok(())
    }

    fn run<'a>(&'a self, input: Input, cx: RunCx<'a>) -> BoxFuture<'a, Ran<Output>> {
        Box::pin(async move {
            let Ok(text) = input.downcast::<String>() else {
                return Ran::Done(Err(JobError::Panicked("a Python job of another type".into())), Timing::default());
            };
            let _permit = tokio::select! {
                biased;
                () = cx.gate.cancelled() => return Ran::NotStarted,
                permit = self.children.permits.acquire() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ran::NotStarted,
                },
            };
            let left = cx.deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let limit = match decide::at_start(cx.cancel.is_raised(), left, cx.time_limit) {
                Ok(limit) => limit,
                Err(e) => {
                    let now = now_us();
                    return Ran::Done(Err(e), Timing { started_at_us: now, finished_at_us: now });
                }
            };
            let started_at_us = now_us();
            let idle = self.children.lock().pop();
            let mut child = match idle {
                Some(child) => child,
                None => match Child::spawn(&self.children.launch).await {
                    Ok((child, _)) => child,
                    Err(e) => {
                        let error = JobError::transient("python_child_failed", format!("{e:#}"));
                        return Ran::Done(Err(error), Timing { started_at_us, finished_at_us: now_us() });
                    }
                },
            };
            let deadline_ms = left.map(|l| now_us() / 1000 + u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
            let frame = JobFrame {
                id: cx.job_id,
                kind: self.name,
                attempt: cx.attempt,
                deadline_ms,
                body: text.as_bytes(),
                progress: &cx.progress,
                cancel: &cx.cancel,
            };
            let result = match child.run(&frame, limit).await {
                Ok(answer) => {
                    match self.children.launch.recycle.why(child.jobs, child.rss_bytes) {
                        Some(why) => {
                            tracing::info!(
                                why,
                                jobs = child.jobs,
                                rss_bytes = child.rss_bytes,
                                "replacing the Python child (a new one starts with the next job)"
                            );
                            drop(child);
                        }
                        None => self.children.lock().push(child),
                    }
                    match answer {
                        Answer::Output(json, bytes_at) => serde_json::value::RawValue::from_string(json)
                            .map(|raw| Output::from_json_with_bytes(self.name, raw, bytes_at))
                            .map_err(|e| JobError::Encode(format!("the Python kind's output: {e}"))),
                        Answer::Failed(e) => Err(e),
                    }
                }
                Err(Ended::Killed) => {
                    tracing::warn!(?limit, "Python job passed its time limit; its child was killed");
                    Err(JobError::TimedOut { limit, retry: cx.retry_timeouts })
                }
                Err(Ended::Died) => {
                    tracing::warn!("the Python child running the job died (its stderr is in this log)");
                    return Ran::Died(Timing { started_at_us, finished_at_us: now_us() });
                }
            };
            Ran::Done(result, Timing { started_at_us, finished_at_us: now_us() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_two_lengths_a_json_header_and_the_body_untouched() {
        let frame = encode_frame(&json!({"t": "stop"}), b"\x00\xffraw");
        assert_eq!(&frame[..8], &[12, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&frame[8..20], br#"{"t":"stop"}"#);
        assert_eq!(&frame[20..], b"\x00\xffraw");
    }

    #[test]
    fn stderr_lines_belong_to_the_job_their_place_in_the_stream_says() {
        let mut jobs = StderrJobs::default();
        assert_eq!(jobs.attribute("importing").as_deref(), Some(""));
        assert_eq!(jobs.attribute("\u{1e}warren-job \"a-1\""), None);
        assert_eq!(jobs.attribute("INFO thumbnail 128x86").as_deref(), Some("a-1"));
        assert_eq!(jobs.attribute("\u{1e}warren-job \"\""), None);
        assert_eq!(jobs.attribute("between jobs").as_deref(), Some(""));
        // An id with a newline or quotes travels as a JSON string.
        assert_eq!(jobs.attribute("\u{1e}warren-job \"b\\n\\\"2\""), None);
        assert_eq!(jobs.attribute("x").as_deref(), Some("b\n\"2"));
        // Something that only looks like a mark is a line of text, as is a mark within a line.
        assert_eq!(jobs.attribute("\u{1e}warren-job not json").as_deref(), Some("b\n\"2"));
        assert_eq!(jobs.attribute("text \u{1e}warren-job \"c\"").as_deref(), Some("b\n\"2"));
    }

    #[test]
    fn an_ok_frame_names_at_most_64_places_of_bytes_as_json_pointers() {
        assert_eq!(bytes_at(&json!({"t": "ok"})), Vec::<String>::new());
        assert_eq!(bytes_at(&json!({"bytes_at": ["/image", 3, "nope", "/a~1b/0"]})), ["/image", "/a~1b/0"]);
        assert_eq!(bytes_at(&json!({"bytes_at": [""]})), [""], "the whole output was bytes");
        let many: Vec<String> = (0..100).map(|i| format!("/{i}")).collect();
        let kept = bytes_at(&json!({ "bytes_at": many }));
        assert_eq!((kept.len(), kept[63].as_str()), (MAX_BYTES_AT, "/63"));
    }

    #[test]
    fn a_child_is_replaced_past_its_jobs_or_its_memory() {
        let never = Recycle::default();
        assert_eq!(never.why(u64::MAX, u64::MAX), None);
        let bounded = Recycle { max_jobs: 3, max_rss_bytes: 100 };
        assert_eq!(bounded.why(2, 100), None);
        assert_eq!(bounded.why(3, 0), Some("jobs"));
        assert_eq!(bounded.why(1, 101), Some("memory"));
    }

    #[test]
    fn a_childs_error_keeps_its_class_and_a_bounded_type() {
        let e = error_of(&json!({"t": "error", "class": "transient", "type": "backend_down", "message": "down"}));
        assert_eq!(
            (e.class(), e.error_type(), e.to_string().as_str()),
            (ErrorClass::Transient, "backend_down", "down")
        );
        let e = error_of(&json!({"class": "anything", "type": "Not A Label"}));
        assert_eq!((e.class(), e.error_type()), (ErrorClass::Permanent, "python_error"));
        assert_eq!(intern("backend_down"), intern("backend_down"));
    }
}
