//! `job <id>`: what happened to one job, from warren-console's API (`GET /api/jobs/{id}`): its
//! status, each attempt (worker, start, end, outcome, error) and its timeline.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::context::Ctx;
use crate::errors::{CtlError, Result};
use crate::output;

pub fn run(ctx: &Ctx, job_id: &str, console_url: Option<&str>) -> Result<()> {
    let base = console_url.map_or_else(|| format!("http://{}", ctx.settings.console.addr), str::to_owned);
    let url = format!("{}/api/jobs/{}", base.trim_end_matches('/'), crate::mgmt::enc(job_id));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&url).call().map_err(|e| CtlError::Console(format!("{base}: {e}")))?;
    let status = resp.status().as_u16();
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    match status {
        200 => {}
        404 => return Err(CtlError::JobNotFound(format!("the console has not heard of job {job_id:?}"))),
        _ => return Err(CtlError::Console(format!("{status}: {}", body["error"].as_str().unwrap_or("no answer")))),
    }
    if ctx.json {
        output::json(&body);
        return Ok(());
    }
    let job = &body["job"];
    let mut line = format!(
        "{} {} {} after {} attempt(s), first heard {}, last {}",
        job["job_id"].as_str().unwrap_or(job_id),
        job["kind"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?"),
        job["attempts"],
        when(&job["first_us"]),
        when(&job["last_us"]),
    );
    if let Some(t) = job["trace_id"].as_str() {
        line.push_str(&format!(", trace {t}"));
    }
    output::line(line);
    if let Some(e) = job["error"].as_object() {
        output::line(format!(
            "last error: {} {}: {}",
            e.get("class").and_then(Value::as_str).unwrap_or(""),
            e.get("type").and_then(Value::as_str).unwrap_or(""),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ));
    }
    let rows = body["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let detail =
                        ["fraction", "text", "error", "reason", "delay_ms", "run_ms", "output_bytes", "returns"]
                            .iter()
                            .filter_map(|k| {
                                e.get(*k).map(|v| match (*k, v.as_f64()) {
                                    ("fraction", Some(f)) => format!("{:.0}%", f * 100.0),
                                    _ => format!("{k}={}", compact(v)),
                                })
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                    vec![
                        when(&e["at_us"]),
                        e["event"].as_str().unwrap_or("").to_owned(),
                        e["attempt"].to_string(),
                        e["worker_id"].as_str().unwrap_or("").to_owned(),
                        output::clip(&detail, 70),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(&["when (UTC)", "step", "attempt", "worker", "details"], rows);
    Ok(())
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("type").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

/// Microseconds since the epoch as an RFC 3339 time (to the millisecond).
fn when(us: &Value) -> String {
    us.as_u64()
        .map(|us| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_micros(us)).to_string())
        .unwrap_or_default()
}
