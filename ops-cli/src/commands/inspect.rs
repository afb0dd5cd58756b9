//! `status` and `queues`: read-only views from the management API. Its statistics are sampled
//! by the broker every few seconds, so rates and depths here lag the queues by that much;
//! `status` reads each work queue's ready messages and consumers over AMQP instead (a passive
//! declare answers with the queue's state at once).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::context::Ctx;
use crate::errors::Result;
use crate::messages::counts;
use crate::mgmt::QueueInfo;
use crate::output;

#[derive(Debug, Clone, Default)]
struct Row {
    name: String,
    ready: u64,
    unacked: u64,
    consumers: u64,
    publish_rate: Option<f64>,
    deliver_rate: Option<f64>,
    ack_rate: Option<f64>,
    oldest_age_s: Option<f64>,
}

impl Row {
    fn from_info(q: &QueueInfo) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let stats = &q.message_stats;
        Self {
            name: q.name.clone(),
            ready: q.messages_ready,
            unacked: q.messages_unacknowledged,
            consumers: q.consumers,
            publish_rate: stats.publish_details.map(|r| r.rate),
            deliver_rate: stats.deliver_get_details.map(|r| r.rate),
            ack_rate: stats.ack_details.map(|r| r.rate),
            // The timestamp property of the message at the head, in seconds (Warren sets it).
            oldest_age_s: q.head_message_timestamp.map(|ts| (now - ts).max(0.0)),
        }
    }

    fn json(&self) -> Value {
        json!({
            "queue": self.name, "ready": self.ready, "unacked": self.unacked, "consumers": self.consumers,
            "publish_rate": self.publish_rate, "deliver_rate": self.deliver_rate, "ack_rate": self.ack_rate,
            "oldest_age_s": self.oldest_age_s,
        })
    }
}

/// Ready messages and consumers of each queue, exact (see [`counts`]); None when AMQP cannot be
/// reached (the management API's figures are shown then).
async fn exact_counts(ctx: &Ctx, queues: &[&str]) -> Option<std::collections::HashMap<String, (u32, u32)>> {
    let conn = match ctx.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warrenctl: ready and consumer counts from the management API (they lag): {e}");
            return None;
        }
    };
    let mut out = std::collections::HashMap::new();
    for q in queues {
        if let Ok(c) = counts(&conn, q).await {
            out.insert((*q).to_owned(), c);
        }
    }
    let _ = conn.close(200, "status".into()).await;
    Some(out)
}

pub async fn status(ctx: &Ctx) -> Result<()> {
    // One listing of the vhost's queues (the work queues, their retry tiers and dead letters),
    // not a request per queue: the management API is the broker's, and status runs in loops.
    let listed: std::collections::HashMap<String, QueueInfo> =
        ctx.mgmt.queues(&ctx.vhost)?.into_iter().map(|q| (q.name.clone(), q)).collect();
    let messages = |name: &str| listed.get(name).map_or(0, |q| q.messages);
    // Queues the listing lacks print as missing: no declare is spent on them.
    let work: Vec<&str> =
        ctx.settings.routes.iter().map(|r| r.queue.as_str()).filter(|q| listed.contains_key(*q)).collect();
    let exact = exact_counts(ctx, &work).await;
    let mut out = Vec::new();
    for route in &ctx.settings.routes {
        let Some(q) = listed.get(&route.queue) else {
            out.push(json!({"kind": route.kind, "queue": route.queue, "missing": true}));
            continue;
        };
        let mut row = Row::from_info(q);
        let counted = exact.as_ref().and_then(|e| e.get(&route.queue));
        if let Some(&(ready, consumers)) = counted {
            (row.ready, row.consumers) = (u64::from(ready), u64::from(consumers));
        }
        let dead = messages(&ctx.settings.dead_queue(&route.queue));
        let returned = messages(&ctx.settings.returned_queue(&route.queue));
        // Retries and delayed jobs (not_before_ms) wait alike in the route's delay queues.
        let delayed: u64 = ctx
            .settings
            .delay_tiers(route)
            .into_iter()
            .map(|t| messages(&ctx.settings.retry_queue(&route.queue, t)))
            .sum();
        // Time to empty the backlog at the current completion rate.
        let drain_s = match (row.ready, row.ack_rate) {
            (0, _) => Some(0.0),
            (n, Some(r)) if r > 0.0 => Some(n as f64 / r),
            _ => None,
        };
        let mut v = row.json();
        v["kind"] = json!(route.kind);
        v["dead_letters"] = json!(dead);
        v["delayed"] = json!(delayed);
        // The name before delayed jobs shared the delay queues; the same figure.
        v["retrying"] = json!(delayed);
        v["returned"] = json!(returned);
        v["drain_estimate_s"] = json!(drain_s);
        // Whether ready and consumers are exact (AMQP) or the management API's lagging figures.
        v["counts"] = json!(if counted.is_some() { "amqp" } else { "management" });
        out.push(v);
    }
    let cancelled = cancelled(ctx).await;
    if ctx.json {
        output::json(&json!({"vhost": ctx.vhost, "queues": out, "cancelled": cancelled}));
        return Ok(());
    }
    let rows = out
        .iter()
        .map(|v| {
            if v["missing"].as_bool() == Some(true) {
                let mut r = vec![
                    v["kind"].as_str().unwrap_or_default().to_owned(),
                    v["queue"].as_str().unwrap_or_default().to_owned(),
                ];
                r.extend(std::iter::repeat_n("missing".to_owned(), 1).chain(std::iter::repeat_n(String::new(), 8)));
                return r;
            }
            vec![
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["queue"].as_str().unwrap_or_default().to_owned(),
                v["ready"].to_string(),
                v["unacked"].to_string(),
                v["consumers"].to_string(),
                output::rate(v["publish_rate"].as_f64()),
                output::rate(v["ack_rate"].as_f64()),
                output::duration_s(v["oldest_age_s"].as_f64()),
                v["delayed"].to_string(),
                v["dead_letters"].to_string(),
                output::duration_s(v["drain_estimate_s"].as_f64()),
            ]
        })
        .collect();
    output::table(
        &["kind", "queue", "ready", "unacked", "consumers", "in/s", "done/s", "oldest", "delayed", "dead", "drain"],
        rows,
    );
    if let Some(n) = cancelled {
        let days = ctx.settings.topology.cancel_retention_s as f64 / 86_400.0;
        output::line(format!(
            "cancelled: {n} job id(s) within the last {days:.1} days (stream {})",
            ctx.settings.topology.cancel_stream
        ));
    }
    Ok(())
}

/// Job ids cancelled within the retention: the cancel stream read to its end (None when
/// cancellation is off or the stream cannot be read, with the reason on stderr).
async fn cancelled(ctx: &Ctx) -> Option<usize> {
    if ctx.settings.topology.cancel_stream.is_empty() {
        return None;
    }
    let read = async {
        let conn = std::sync::Arc::new(ctx.connect().await?);
        let timeout = std::time::Duration::from_millis(ctx.settings.broker.confirm_timeout_ms);
        let publisher = warren_infra::Publisher::open(conn.clone(), timeout, 1).await?;
        let set = warren_infra::cancels::read_all(&conn, &publisher, &ctx.settings, timeout).await;
        let _ = conn.close(200, "status".into()).await;
        anyhow::Ok(set?.len())
    };
    match read.await {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("warrenctl: cancelled count unavailable: {e:#}");
            None
        }
    }
}

pub fn queues(ctx: &Ctx, all: bool) -> Result<()> {
    let wanted = ctx.warren_queues();
    let mut rows: Vec<Row> = ctx
        .mgmt
        .queues(&ctx.vhost)?
        .iter()
        .map(Row::from_info)
        .filter(|r| {
            all || wanted.contains(&r.name) || wanted.iter().any(|w| r.name.starts_with(&format!("{w}.retry.")))
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if ctx.json {
        output::json(&Value::from(rows.iter().map(Row::json).collect::<Vec<_>>()));
        return Ok(());
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.ready.to_string(),
                r.unacked.to_string(),
                r.consumers.to_string(),
                output::rate(r.publish_rate),
                output::rate(r.deliver_rate),
                output::duration_s(r.oldest_age_s),
            ]
        })
        .collect();
    output::table(&["queue", "ready", "unacked", "consumers", "in/s", "out/s", "oldest"], table);
    Ok(())
}
