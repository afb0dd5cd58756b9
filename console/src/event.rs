//! A lifecycle event as the console reads it (`docs/contract.md`, "Lifecycle events"), and the
//! pure rules that fold a batch of them into each job's summary: which step is the latest, what
//! the job's status is, which error it last met. The store merges these summaries into what it
//! holds with the same rules (`store.rs`), so events may arrive in any order and more than once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One event, with the fields the console uses; the whole JSON object is kept beside it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Event {
    pub event: String,
    pub job_id: String,
    pub kind: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub worker_id: String,
    #[serde(default)]
    pub attempt: u32,
    pub at_us: i64,
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub run_ms: Option<i64>,
    #[serde(default)]
    pub output_bytes: Option<i64>,
    #[serde(default)]
    pub error: Option<EventError>,
    /// progress: how far, 0 to 1.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// progress: a short text from the kind.
    #[serde(default)]
    pub text: Option<String>,
}

impl Event {
    /// The step `event` of a job, by `worker_id` from `queue`, with every optional field empty.
    pub fn new(event: &str, job_id: &str, kind: &str, queue: &str, worker_id: &str, at_us: i64, attempt: u32) -> Self {
        Self {
            event: event.into(),
            job_id: job_id.into(),
            kind: kind.into(),
            queue: queue.into(),
            worker_id: worker_id.into(),
            attempt,
            at_us,
            trace_id: String::new(),
            run_ms: None,
            output_bytes: None,
            error: None,
            fraction: None,
            text: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct EventError {
    pub class: String,
    #[serde(rename = "type")]
    pub error_type: String,
    #[serde(default)]
    pub message: String,
}

/// An event and the JSON object it came as (stored whole, so fields the console does not know
/// are kept for the timeline).
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Event,
    pub raw: String,
}

/// Why a message on the console's queue is not events.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Malformed {
    #[error("not a JSON array of events: {0}")]
    NotEvents(String),
    #[error("event {index}: {why}")]
    Event { index: usize, why: String },
}

/// One event message read: its usable events, and why the others were not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Received>,
    pub refused: Vec<Malformed>,
}

/// Reads one event message: a JSON array of events (a lone object is taken too). Each event is
/// read on its own, so that one bad event does not cost its neighbours (other jobs' events that
/// shared a routing key); `Err` only when the message holds no usable event.
pub fn parse(body: &[u8]) -> Result<Parsed, Malformed> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Malformed::NotEvents(e.to_string()))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        object @ serde_json::Value::Object(_) => vec![object],
        other => return Err(Malformed::NotEvents(format!("a JSON {}", json_type(&other)))),
    };
    let mut parsed = Parsed::default();
    for (index, item) in items.into_iter().enumerate() {
        let raw = item.to_string();
        match serde_json::from_value::<Event>(item) {
            Ok(event) if event.job_id.is_empty() || event.job_id.len() > 200 => {
                parsed.refused.push(Malformed::Event { index, why: "job_id is empty or longer than 200 bytes".into() })
            }
            Ok(event) => parsed.events.push(Received { event: tidy(event), raw }),
            Err(e) => parsed.refused.push(Malformed::Event { index, why: e.to_string() }),
        }
    }
    match (parsed.events.is_empty(), parsed.refused.first()) {
        (true, Some(first)) => Err(first.clone()),
        (true, None) => Err(Malformed::NotEvents("an empty array".into())),
        _ => Ok(parsed),
    }
}

/// An event's strings as both databases take them: no NUL (PostgreSQL's TEXT refuses it; a
/// job's bad input can carry one into an error message), and bounded (an index entry has a
/// size limit). The raw JSON keeps a NUL as the escape `\u0000`, which is fine.
fn tidy(mut e: Event) -> Event {
    fn clean(s: &mut String, max: usize) {
        if s.contains('\0') {
            *s = s.replace('\0', "\u{fffd}");
        }
        if s.len() > max {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
    }
    clean(&mut e.job_id, 200);
    clean(&mut e.event, 50);
    clean(&mut e.kind, 100);
    clean(&mut e.queue, 255);
    clean(&mut e.worker_id, 200);
    clean(&mut e.trace_id, 64);
    if let Some(err) = &mut e.error {
        clean(&mut err.class, 50);
        clean(&mut err.error_type, 100);
        clean(&mut err.message, 4000);
    }
    if let Some(t) = &mut e.text {
        clean(t, 200);
    }
    e
}

/// Whether a database refused a write because of what was written (PostgreSQL's data
/// exceptions, integrity violations and program limits by SQLSTATE class; SQLite's TOOBIG,
/// CONSTRAINT and MISMATCH by primary result code), rather than because it is unavailable
/// (anything else: it will take the same write later). `code` is the driver's error code.
pub fn refused_by_data(code: Option<&str>) -> bool {
    match code {
        Some(c) if c.len() == 5 => matches!(&c[..2], "22" | "23" | "54"),
        Some(c) => c.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 18..=20)),
        None => false,
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The steps in the order the contract gives for events of the same instant.
pub const STEPS: [&str; 10] = [
    "received",
    "started",
    "progress",
    "succeeded",
    "retried",
    "dead_lettered",
    "returned",
    "handed_back",
    "cancelled",
    "delayed",
];

/// A step's place among events of the same instant (unknown steps last).
pub fn rank(event: &str) -> i64 {
    STEPS.iter().position(|s| *s == event).map_or(STEPS.len() as i64, |p| p as i64)
}

/// An event's place in its job's history: by time, then by step. Later means larger.
pub fn order_key(at_us: i64, event: &str) -> i64 {
    at_us.saturating_mul(16).saturating_add(rank(event))
}

/// What a job is doing after a step.
pub fn status_after(event: &str) -> &'static str {
    match event {
        "received" => "received",
        "started" | "progress" => "running",
        "succeeded" => "succeeded",
        "retried" => "retrying",
        "dead_lettered" => "dead_lettered",
        "returned" | "handed_back" => "queued",
        "cancelled" => "cancelled",
        "delayed" => "delayed",
        _ => "unknown",
    }
}

/// The statuses a job can have, for filters.
pub const STATUSES: [&str; 8] =
    ["received", "running", "succeeded", "retrying", "dead_lettered", "queued", "cancelled", "delayed"];

/// What a batch says about one job; merged into the stored row with the same rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub kind: String,
    pub queue: String,
    pub first_us: i64,
    pub last_us: i64,
    pub status: &'static str,
    /// `order_key` of the step that set the status.
    pub status_key: i64,
    pub worker_id: String,
    /// Attempts seen: the highest attempt + 1.
    pub attempts: i64,
    pub trace_id: String,
    /// The latest error met, and the `order_key` of its step (0: none).
    pub error: Option<EventError>,
    pub error_key: i64,
    pub run_ms: Option<i64>,
    pub output_bytes: Option<i64>,
    pub progress: Option<f64>,
    pub progress_text: Option<String>,
    pub progress_key: i64,
}

impl Summary {
    fn of(e: &Event) -> Self {
        let key = order_key(e.at_us, &e.event);
        let mut s = Summary {
            kind: e.kind.clone(),
            queue: e.queue.clone(),
            first_us: e.at_us,
            last_us: e.at_us,
            status: status_after(&e.event),
            status_key: key,
            worker_id: e.worker_id.clone(),
            attempts: i64::from(e.attempt) + 1,
            trace_id: e.trace_id.clone(),
            error: None,
            error_key: 0,
            run_ms: e.run_ms,
            output_bytes: e.output_bytes,
            progress: None,
            progress_text: None,
            progress_key: 0,
        };
        if let Some(err) = &e.error {
            s.error = Some(err.clone());
            s.error_key = key;
        }
        if e.event == "progress" {
            s.progress = e.fraction;
            s.progress_text = e.text.clone();
            s.progress_key = key;
        }
        if e.event == "succeeded" {
            s.progress = Some(1.0);
            s.progress_key = key;
        }
        s
    }

    /// Merges `other` (about the same job) in: the order of merging does not matter.
    pub fn merge(&mut self, other: Summary) {
        if self.kind == "unknown" {
            self.kind = other.kind.clone();
        }
        self.first_us = self.first_us.min(other.first_us);
        self.last_us = self.last_us.max(other.last_us);
        if other.status_key >= self.status_key {
            self.status = other.status;
            self.status_key = other.status_key;
            self.worker_id = other.worker_id;
            self.queue = other.queue;
        }
        self.attempts = self.attempts.max(other.attempts);
        if self.trace_id.is_empty() {
            self.trace_id = other.trace_id;
        }
        if other.error_key > self.error_key {
            self.error = other.error;
            self.error_key = other.error_key;
        }
        self.run_ms = other.run_ms.or(self.run_ms);
        self.output_bytes = other.output_bytes.or(self.output_bytes);
        if other.progress_key > self.progress_key {
            self.progress = other.progress;
            self.progress_text = other.progress_text;
            self.progress_key = other.progress_key;
        }
    }
}

/// Each job's summary of a batch, by job id (sorted: writers that share a database take rows in
/// the same order).
pub fn summarise<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeMap<String, Summary> {
    let mut out: BTreeMap<String, Summary> = BTreeMap::new();
    for e in events {
        let s = Summary::of(e);
        match out.get_mut(&e.job_id) {
            Some(held) => held.merge(s),
            None => {
                out.insert(e.job_id.clone(), s);
            }
        }
    }
    out
}

/// One run of a job as its events tell it: an attempt, or the part of one before a hand-back,
/// or a life after a replay (which starts again from attempt 0).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub attempt: u32,
    /// The worker of its latest step.
    pub worker_id: String,
    pub start_us: i64,
    /// When it ended (its latest step that ends an attempt), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_us: Option<i64>,
    /// succeeded, retried, dead_lettered, returned, handed_back, cancelled; or the status it is
    /// in while it runs.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_text: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
}

/// Steps that end an attempt.
pub fn ends_attempt(event: &str) -> bool {
    matches!(event, "succeeded" | "retried" | "dead_lettered" | "returned" | "handed_back" | "cancelled")
}

/// A job's runs from its events (in any order), in the order they happened: a new run starts
/// with another attempt number, or with a step after the previous run ended.
pub fn attempts(events: &[Event]) -> Vec<Attempt> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| order_key(e.at_us, &e.event));
    let mut out: Vec<Attempt> = Vec::new();
    for e in sorted {
        let new_run = match out.last() {
            None => true,
            Some(a) => a.attempt != e.attempt || (a.end_us.is_some() && !ends_attempt(&e.event)),
        };
        if new_run {
            out.push(Attempt {
                attempt: e.attempt,
                worker_id: e.worker_id.clone(),
                start_us: e.at_us,
                end_us: None,
                outcome: status_after(&e.event).to_owned(),
                error: None,
                run_ms: None,
                progress: None,
                progress_text: None,
                trace_id: e.trace_id.clone(),
            });
        }
        let Some(a) = out.last_mut() else { continue };
        a.worker_id.clone_from(&e.worker_id);
        if ends_attempt(&e.event) {
            a.end_us = Some(e.at_us);
            a.outcome.clone_from(&e.event);
        } else {
            a.end_us = None;
            a.outcome = status_after(&e.event).to_owned();
        }
        if e.error.is_some() {
            a.error.clone_from(&e.error);
        }
        if e.run_ms.is_some() {
            a.run_ms = e.run_ms;
        }
        if e.event == "progress" {
            a.progress = e.fraction;
            a.progress_text.clone_from(&e.text);
        }
        if a.trace_id.is_empty() {
            a.trace_id.clone_from(&e.trace_id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, at_us: i64, attempt: u32) -> Event {
        Event::new(event, "j1", "checksum", "warren.checksum", &format!("w-{event}"), at_us, attempt)
    }

    fn failed(event: &str, at_us: i64, attempt: u32, ty: &str) -> Event {
        let mut e = ev(event, at_us, attempt);
        e.error = Some(EventError { class: "transient".into(), error_type: ty.into(), message: format!("{ty}!") });
        e
    }

    #[test]
    fn reads_an_array_a_lone_object_and_refuses_the_rest() {
        let body = br#"[{"version":1,"event":"received","job_id":"a","kind":"checksum","at_us":5,"future":true}]"#;
        let got = parse(body).expect("an array").events;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.job_id, "a");
        assert!(got[0].raw.contains("\"future\":true"), "unknown fields are kept: {}", got[0].raw);
        assert_eq!(parse(br#"{"event":"started","job_id":"b","kind":"k","at_us":1}"#).expect("object").events.len(), 1);
        assert!(matches!(parse(b"not json"), Err(Malformed::NotEvents(_))));
        assert!(matches!(parse(b"42"), Err(Malformed::NotEvents(m)) if m.contains("number")));
        assert!(matches!(parse(b"[]"), Err(Malformed::NotEvents(_))));
        assert!(matches!(parse(br#"[{"event":"x"}]"#), Err(Malformed::Event { index: 0, .. })));
        assert!(matches!(
            parse(br#"[{"event":"x","job_id":"","kind":"k","at_us":1}]"#),
            Err(Malformed::Event { index: 0, .. })
        ));
    }

    #[test]
    fn one_bad_event_does_not_cost_its_neighbours() {
        // A job without a message id is dead-lettered with job_id "": it shares a message with
        // other jobs' dead_lettered events.
        let body = br#"[{"event":"dead_lettered","job_id":"a","kind":"k","at_us":1},
                        {"event":"dead_lettered","job_id":"","kind":"k","at_us":2},
                        {"event":"dead_lettered","job_id":"c","kind":"k","at_us":3}]"#;
        let got = parse(body).expect("two usable events");
        assert_eq!(got.events.iter().map(|r| r.event.job_id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert!(matches!(got.refused.as_slice(), [Malformed::Event { index: 1, .. }]));
    }

    #[test]
    fn strings_lose_their_nul_bytes_and_their_excess() {
        let long = "w".repeat(5000);
        let body = format!(
            r#"[{{"event":"dead_lettered","job_id":"a","kind":"k\u0000","worker_id":"{long}","at_us":1,
                 "error":{{"class":"permanent","type":"invalid_params","message":"bad \u0000 byte é{long}"}}}}]"#
        );
        let e = &parse(body.as_bytes()).expect("an event").events[0];
        assert_eq!(e.event.kind, "k\u{fffd}");
        assert_eq!(e.event.worker_id.len(), 200);
        let message = &e.event.error.as_ref().expect("error").message;
        assert!(!message.contains('\0') && message.len() <= 4000 && message.starts_with("bad \u{fffd} byte"));
        assert!(e.raw.contains("\\u0000"), "the raw JSON keeps the escape: {}", e.raw);
    }

    #[test]
    fn only_what_a_write_holds_makes_the_database_refuse_it_for_good() {
        // PostgreSQL: invalid byte sequence, value too long, unique violation, index row too big.
        for refused in ["22021", "22001", "23505", "54000"] {
            assert!(refused_by_data(Some(refused)), "{refused}");
        }
        // PostgreSQL: too many connections, deadlock, admin shutdown, read-only; SQLite: BUSY
        // (5), LOCKED (6), IOERR (10), FULL (13); and no code at all (I/O, pool timeout).
        for unavailable in [
            Some("53300"),
            Some("40P01"),
            Some("57P01"),
            Some("25006"),
            Some("5"),
            Some("6"),
            Some("10"),
            Some("13"),
            None,
        ] {
            assert!(!refused_by_data(unavailable), "{unavailable:?}");
        }
        // SQLite: TOOBIG, CONSTRAINT (and its extended codes, e.g. PRIMARYKEY 1555), MISMATCH.
        for refused in ["18", "19", "1555", "20"] {
            assert!(refused_by_data(Some(refused)), "{refused}");
        }
    }

    #[test]
    fn the_latest_step_sets_the_status_whatever_the_order_they_come_in() {
        let events = [
            ev("received", 10, 0),
            ev("started", 10, 0),
            failed("retried", 20, 0, "timeout"),
            ev("received", 1_020, 1),
            ev("started", 1_021, 1),
            ev("succeeded", 1_030, 1),
        ];
        let forward = summarise(events.iter());
        let backward = summarise(events.iter().rev());
        assert_eq!(forward, backward);
        let s = &forward["j1"];
        assert_eq!(s.status, "succeeded");
        assert_eq!(s.worker_id, "w-succeeded");
        assert_eq!(s.attempts, 2);
        assert_eq!((s.first_us, s.last_us), (10, 1_030));
        assert_eq!(s.error.as_ref().map(|e| e.error_type.as_str()), Some("timeout"), "the error met is kept");
        assert_eq!(s.progress, Some(1.0));
    }

    #[test]
    fn steps_of_one_instant_follow_the_contracts_order() {
        // received and started in the same microsecond: started is the later step.
        let s = &summarise([ev("started", 7, 0), ev("received", 7, 0)].iter())["j1"];
        assert_eq!(s.status, "running");
        assert!(order_key(7, "dead_lettered") > order_key(7, "started"));
        assert!(order_key(8, "received") > order_key(7, "cancelled"));
        assert_eq!(rank("something_new"), STEPS.len() as i64);
    }

    #[test]
    fn merging_is_the_same_in_any_grouping() {
        // Two batches stored one after the other end where one batch would.
        let a = [ev("received", 1, 0), failed("retried", 3, 0, "timeout")];
        let b = [ev("received", 5, 1), failed("dead_lettered", 9, 1, "bad_input")];
        let whole = summarise(a.iter().chain(b.iter()));
        let mut first = summarise(b.iter());
        let second = summarise(a.iter());
        first.get_mut("j1").expect("j1").merge(second["j1"].clone());
        assert_eq!(first, whole);
        let s = &whole["j1"];
        assert_eq!(s.status, "dead_lettered");
        assert_eq!(s.error.as_ref().map(|e| e.error_type.as_str()), Some("bad_input"), "the latest error wins");
    }

    #[test]
    fn attempts_are_told_apart_with_their_outcomes() {
        let mut ok = ev("succeeded", 1_030, 1);
        ok.run_ms = Some(9);
        let events = [
            ev("started", 10, 0),
            failed("retried", 20, 0, "timeout"),
            ev("received", 10, 0),
            ok,
            ev("received", 1_020, 1),
            ev("started", 1_021, 1),
        ];
        let a = attempts(&events);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].attempt, a[0].start_us, a[0].end_us), (0, 10, Some(20)));
        assert_eq!(a[0].outcome, "retried");
        assert_eq!(a[0].error.as_ref().map(|e| e.error_type.as_str()), Some("timeout"));
        assert_eq!((a[1].outcome.as_str(), a[1].end_us, a[1].run_ms), ("succeeded", Some(1_030), Some(9)));
        assert_eq!(a[1].worker_id, "w-succeeded");
        // Handed back, then taken again: two runs of attempt 0, the second running.
        let again = attempts(&[ev("received", 1, 0), ev("handed_back", 2, 0), ev("started", 3, 0)]);
        assert_eq!(again.len(), 2);
        assert_eq!((again[0].outcome.as_str(), again[0].end_us), ("handed_back", Some(2)));
        assert_eq!((again[1].attempt, again[1].outcome.as_str(), again[1].end_us), (0, "running", None));
        // Dead-lettered, replayed (attempt 0 again) and answered: two lives.
        let lives = attempts(&[
            ev("received", 1, 0),
            failed("dead_lettered", 2, 0, "timeout"),
            ev("received", 10, 0),
            ev("succeeded", 12, 0),
        ]);
        assert_eq!(lives.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["dead_lettered", "succeeded"]);
        assert_eq!(lives[1].error, None, "the second life met no error");
    }

    #[test]
    fn an_unknown_kind_gives_way_to_a_known_one_and_progress_is_the_latest() {
        let mut first = ev("dead_lettered", 1, 0);
        first.kind = "unknown".into();
        let mut p1 = ev("progress", 2, 0);
        p1.fraction = Some(0.25);
        p1.text = Some("a quarter".into());
        let mut p2 = ev("progress", 3, 0);
        p2.fraction = Some(0.5);
        let s = &summarise([p2, first, p1].iter())["j1"];
        assert_eq!(s.kind, "checksum");
        assert_eq!(s.progress, Some(0.5));
        assert_eq!(s.progress_text, None);
        assert_eq!(s.status, "running");
    }
}
