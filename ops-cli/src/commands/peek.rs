//! `peek`: show messages without losing them. They are taken unacked and all handed back
//! (nack with requeue), so the queue keeps them, in their places. What peeking changes: RabbitMQ
//! marks them redelivered, and Warren's consumer counts a redelivered job as one return toward
//! `consumer.max_redeliveries`. Peeking dead-letter queues (nothing consumes them) is free.

use lapin::options::BasicNackOptions;

use crate::context::Ctx;
use crate::errors::Result;
use crate::messages::{depth, describe, take};
use crate::output;

pub async fn run(ctx: &Ctx, queue: &str, count: u32, wide: bool) -> Result<()> {
    let conn = ctx.connect().await?;
    depth(&conn, queue).await?;
    let ch = conn.create_channel().await?;
    let mut shown = Vec::new();
    let mut last_tag = None;
    for _ in 0..count {
        let Some(msg) = take(&ch, queue).await? else { break };
        last_tag = Some(msg.delivery.delivery_tag);
        shown.push(describe(&msg.delivery));
    }
    if let Some(tag) = last_tag {
        ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await?;
    }
    let _ = conn.close(200, "peeked".into()).await;
    if ctx.json {
        output::json(&serde_json::Value::from(shown));
        return Ok(());
    }
    let rows = shown
        .iter()
        .map(|m| {
            let s = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let image = m.get("image").map(|i| {
                if i["format"].is_null() {
                    format!("not an image ({}B)", s(&i["bytes"]))
                } else {
                    format!("{} {}x{} {}B", s(&i["format"]), s(&i["width"]), s(&i["height"]), s(&i["bytes"]))
                }
            });
            let dead = m.get("dead").map(|d| {
                let error = if wide { s(&d["error"]) } else { output::clip(&s(&d["error"]), 60) };
                format!("{} {}: {error} (from {})", s(&d["reason"]), s(&d["error_type"]), s(&d["origin"]))
            });
            let id = s(&m["job_id"]);
            vec![
                // The first group of a UUID tells jobs apart on a screen; --wide or --json show it whole.
                if wide { id } else { output::clip(&id, 9) },
                s(&m["kind"]),
                s(&m["attempt"]),
                s(&m["bytes"]),
                image.unwrap_or_else(|| "-".into()),
                dead.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let width = if wide { None } else { Some(120) };
    output::table_within(&["job id", "kind", "attempt", "bytes", "image", "dead letter"], rows, width);
    output::line(format!(
        "{} message(s) shown and returned to {queue}, in place; RabbitMQ now marks them redelivered\n\
         (Warren's consumer counts that as one return toward consumer.max_redeliveries)",
        shown.len()
    ));
    Ok(())
}
