//! `replay`: send dead letters back to where they came from (or `--to`). Each is republished
//! with a confirm, `mandatory`, and acked from the dead-letter queue only after that confirm:
//! killed midway, the command loses nothing (at worst one message is replayed and also stays).
//! Messages the filter skips are held unacked while the command runs, then handed back, so each
//! message is looked at once and the skipped ones keep their places.
//!
//! A replayed job starts a new life: `warren-attempt` 0, broker `x-*` headers and Warren's
//! failure headers removed, provenance added (`warren-replayed-at`, `warren-replayed-from`,
//! `warren-replay-count`, `warren-replayed-reason`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::FieldTable;
use serde_json::json;
use warren_common::headers as h;
use warren_common::{Encoding, JobEnvelope};
use warren_infra::{Publisher, fields};

use crate::context::Ctx;
use crate::errors::{CtlError, Result};
use crate::messages::{depth, take};
use crate::output;

pub const REPLAYED_AT: &str = "warren-replayed-at";
pub const REPLAYED_FROM: &str = "warren-replayed-from";
pub const REPLAY_COUNT: &str = "warren-replay-count";
pub const REPLAYED_REASON: &str = "warren-replayed-reason";

/// Warren headers that describe a failure; a replayed job starts without them.
const FAILURE_HEADERS: [&str; 11] = [
    h::DEAD_REASON,
    h::ERROR_CLASS,
    h::ERROR_TYPE,
    h::ERROR_MESSAGE,
    h::ATTEMPTS,
    h::FIRST_FAILED_AT,
    h::FAILED_AT,
    h::CONSUMER,
    h::ORIGINAL_QUEUE,
    h::REDELIVERIES,
    h::ATTEMPT,
];

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub filter: Option<String>,
    pub limit: Option<u64>,
    pub rate: Option<f64>,
    pub dry_run: bool,
    pub to: Option<String>,
}

#[derive(Debug, Default)]
struct Filter {
    reason: Option<String>,
    kind: Option<String>,
    error_type: Option<String>,
    since_ms: Option<u64>,
    job_id: Option<String>,
}

impl Filter {
    fn parse(spec: Option<&str>) -> Result<Self> {
        let mut f = Filter::default();
        for part in spec.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                part.split_once('=').ok_or_else(|| CtlError::Usage(format!("filter {part:?} is not key=value")))?;
            match key {
                "reason" => f.reason = Some(value.into()),
                "kind" => f.kind = Some(value.into()),
                "error_type" | "type" => f.error_type = Some(value.into()),
                "since" => f.since_ms = Some(parse_since(value)?),
                "job_id" | "job" => f.job_id = Some(value.into()),
                other => {
                    return Err(CtlError::Usage(format!(
                        "unknown filter {other:?} (reason, kind, error_type, since, job_id)"
                    )));
                }
            }
        }
        Ok(f)
    }

    fn matches(&self, d: &lapin::message::Delivery) -> bool {
        let headers = d.properties.headers().as_ref();
        let header = |name| fields::get_str(headers, name);
        if self.job_id.as_ref().is_some_and(|id| d.properties.message_id().as_ref().map(|m| m.as_str()) != Some(id)) {
            return false;
        }
        if self.reason.as_ref().is_some_and(|r| header(h::DEAD_REASON).as_ref() != Some(r)) {
            return false;
        }
        if self.error_type.as_ref().is_some_and(|t| header(h::ERROR_TYPE).as_ref() != Some(t)) {
            return false;
        }
        if let Some(kind) = &self.kind {
            let encoding = Encoding::from_content_type(d.properties.content_type().as_ref().map(|s| s.as_str()));
            let of_body = encoding.and_then(|e| JobEnvelope::peek_kind(&d.data, e));
            if of_body.as_ref() != Some(kind) && header(h::ORIGINAL_ROUTING_KEY).as_ref() != Some(kind) {
                return false;
            }
        }
        if let Some(since) = self.since_ms
            && fields::get_u64(headers, h::FAILED_AT).is_none_or(|t| t < since)
        {
            return false;
        }
        true
    }
}

/// `since=` takes an RFC 3339 time, milliseconds since the epoch, or an age like `2h` / `30m`.
pub fn parse_since(value: &str) -> Result<u64> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    let now = SystemTime::now();
    let at = humantime::parse_rfc3339_weak(value)
        .or_else(|_| humantime::parse_duration(value).map(|age| now - age))
        .map_err(|_| {
            CtlError::Usage(format!("since={value}: give an RFC 3339 time, epoch milliseconds or an age (2h)"))
        })?;
    Ok(at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub queue: String,
    pub dry_run: bool,
    pub replayed: u64,
    /// Left in place by the filter.
    pub skipped: u64,
    /// Could not be replayed (no origin, or the broker refused the copy); left in place.
    pub failed: u64,
    /// With `dry_run`: where each would go.
    pub plan: Vec<serde_json::Value>,
    /// Why each failed one failed (`<job id>: <why>`); `failed` counts them.
    pub errors: Vec<String>,
}

/// `warrenctl replay`: replays and prints what it did.
pub async fn run(ctx: &Ctx, dead_queue: &str, opts: Options) -> Result<()> {
    let dry_run = opts.dry_run;
    let report = replay(ctx, dead_queue, opts, true).await?;
    let Report { replayed, skipped, failed, plan, errors, .. } = &report;
    for e in errors {
        eprintln!("warrenctl: {e}");
    }
    let verb = if dry_run { "would replay" } else { "replayed" };
    if ctx.json {
        output::json(&json!(report));
    } else {
        for p in plan {
            output::line(format!(
                "would replay {} -> {} ({})",
                p["job_id"],
                p["to"].as_str().unwrap_or(""),
                p["reason"]
            ));
        }
        output::line(format!("{verb} {replayed}, skipped {skipped} (filter), failed {failed} from {dead_queue}"));
    }
    if *failed > 0 { Err(CtlError::Partial { failed: *failed, total: replayed + failed }) } else { Ok(()) }
}

/// Replays the dead letters of `dead_queue` that `opts` selects (the same code for
/// `warrenctl replay` and the console's replay action); `progress` shows a bar on the terminal.
pub async fn replay(ctx: &Ctx, dead_queue: &str, opts: Options, progress: bool) -> Result<Report> {
    let filter = Filter::parse(opts.filter.as_deref())?;
    let to = opts.to.as_deref().map(|t| match t.split_once('/') {
        Some((ex, key)) => (ex.to_owned(), Some(key.to_owned())),
        None => (t.to_owned(), None),
    });
    let conn = std::sync::Arc::new(ctx.connect().await?);
    let ready = u64::from(depth(&conn, dead_queue).await?);
    let ch = conn.create_channel().await?;
    let timeout = Duration::from_millis(ctx.settings.broker.confirm_timeout_ms);
    let publisher = Publisher::open(conn.clone(), timeout, 1).await?;
    let bar = if progress {
        output::progress(Some(opts.limit.unwrap_or(ready).min(ready)), "replaying")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (mut replayed, mut skipped) = (0u64, 0u64);
    let mut errors = Vec::new();
    let mut plan = Vec::new();
    let mut held = Vec::new();
    let started = Instant::now();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    while opts.limit.is_none_or(|l| replayed + (errors.len() as u64) < l) {
        let Some(msg) = take(&ch, dead_queue).await? else { break };
        let d = &msg.delivery;
        if !filter.matches(d) {
            skipped += 1;
            held.push(d.delivery_tag);
            continue;
        }
        let headers = d.properties.headers().as_ref();
        let origin_ex = fields::get_str(headers, h::ORIGINAL_EXCHANGE);
        let origin_key = fields::get_str(headers, h::ORIGINAL_ROUTING_KEY);
        let (exchange, key) = match (&to, origin_ex, origin_key) {
            (Some((ex, Some(key))), _, _) => (ex.clone(), key.clone()),
            (Some((ex, None)), _, key) => (ex.clone(), key.unwrap_or_else(|| d.routing_key.to_string())),
            (None, Some(ex), Some(key)) => (ex, key),
            (None, _, _) => {
                let id = d.properties.message_id().as_ref().map(|s| s.to_string());
                errors.push(format!("{}: no origin headers; use --to", id.as_deref().unwrap_or("?")));
                held.push(d.delivery_tag);
                continue;
            }
        };
        let job_id = d.properties.message_id().as_ref().map(|s| s.to_string());
        if opts.dry_run {
            plan.push(json!({"job_id": job_id, "to": format!("{exchange}/{key}"),
                             "reason": fields::get_str(headers, h::DEAD_REASON)}));
            held.push(d.delivery_tag);
            replayed += 1;
            continue;
        }
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(replayed as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let props = d.properties.clone().with_headers(provenance(headers, dead_queue, now_ms));
        match publisher.publish(&exchange, &key, &d.data, props, true).await {
            Ok(()) => {
                ch.basic_ack(d.delivery_tag, BasicAckOptions::default()).await?;
                replayed += 1;
            }
            Err(e) => {
                errors.push(format!("{}: {e}", job_id.as_deref().unwrap_or("?")));
                held.push(d.delivery_tag);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Hand back what was skipped, failed or only planned, in one go, so each keeps its place.
    for tag in held {
        ch.basic_nack(tag, BasicNackOptions { multiple: false, requeue: true }).await?;
    }
    let _ = conn.close(200, "replayed".into()).await;
    let failed = errors.len() as u64;
    Ok(Report { queue: dead_queue.to_owned(), dry_run: opts.dry_run, replayed, skipped, failed, plan, errors })
}

/// The headers of a replayed job: broker `x-*` and Warren's failure headers removed, the attempt
/// counter reset, provenance added.
fn provenance(headers: Option<&FieldTable>, dead_queue: &str, now_ms: u64) -> FieldTable {
    let previous_reason = fields::get_str(headers, h::DEAD_REASON);
    let count = fields::get_u64(headers, REPLAY_COUNT).unwrap_or(0) + 1;
    let mut out = FieldTable::default();
    for (k, v) in headers.map(|t| t.inner().iter()).into_iter().flatten() {
        let name = k.as_str();
        if !name.starts_with("x-") && !FAILURE_HEADERS.contains(&name) {
            out.insert(k.clone(), v.clone());
        }
    }
    fields::set_u64(&mut out, h::ATTEMPT, 0);
    fields::set_u64(&mut out, REPLAYED_AT, now_ms);
    fields::set_str(&mut out, REPLAYED_FROM, dead_queue);
    fields::set_u64(&mut out, REPLAY_COUNT, count);
    if let Some(r) = previous_reason {
        fields::set_str(&mut out, REPLAYED_REASON, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    #[test]
    fn filters_parse_and_refuse_nonsense() {
        let f = Filter::parse(Some("reason=permanent_error, kind=image.resize,since=1700000000000")).expect("parses");
        assert_eq!(f.reason.as_deref(), Some("permanent_error"));
        assert_eq!(f.kind.as_deref(), Some("image.resize"));
        assert_eq!(f.since_ms, Some(1_700_000_000_000));
        assert!(Filter::parse(Some("colour=red")).is_err());
        assert!(Filter::parse(Some("reason")).is_err());
        assert!(Filter::parse(Some("since=yesterday-ish")).is_err());
        let rfc = Filter::parse(Some("since=2026-11-21T10:00:00Z")).expect("rfc 3339");
        assert_eq!(rfc.since_ms, Some(1_795_255_200_000));
    }

    #[test]
    fn a_replayed_job_starts_afresh_with_provenance() {
        let mut headers = FieldTable::default();
        fields::set_u64(&mut headers, h::ATTEMPT, 4);
        fields::set_str(&mut headers, h::DEAD_REASON, "attempts_exhausted");
        fields::set_str(&mut headers, h::ERROR_TYPE, "timeout");
        fields::set_str(&mut headers, h::TRACEPARENT, "00-abc-def-01");
        headers.insert("x-death".into(), AMQPValue::Boolean(true));
        let out = provenance(Some(&headers), "q.dead", 42);
        let get = |n| fields::get_str(Some(&out), n);
        assert_eq!(fields::get_u64(Some(&out), h::ATTEMPT), Some(0));
        assert_eq!((get(h::DEAD_REASON), get(h::ERROR_TYPE)), (None, None));
        assert!(fields::get(Some(&out), "x-death").is_none());
        assert_eq!(get(h::TRACEPARENT).as_deref(), Some("00-abc-def-01"));
        assert_eq!(get(REPLAYED_FROM).as_deref(), Some("q.dead"));
        assert_eq!(get(REPLAYED_REASON).as_deref(), Some("attempts_exhausted"));
        assert_eq!(fields::get_u64(Some(&out), REPLAY_COUNT), Some(1));
        assert_eq!(fields::get_u64(Some(&provenance(Some(&out), "q.dead", 43)), REPLAY_COUNT), Some(2));
    }
}
