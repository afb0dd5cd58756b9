//! `dump`: copy a queue's messages to a file. The messages are taken unacked and, once the file
//! is written and synced to disk, either handed back (default) or acked (`--ack`), so a dump
//! killed midway, or one whose file could not be written, leaves the queue as it was.

use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::{BasicAckOptions, BasicNackOptions};

use crate::context::Ctx;
use crate::dumpfile::{self, DumpHeader, DumpRecord};
use crate::errors::Result;
use crate::messages::{depth, take};
use crate::output;

pub async fn run(ctx: &Ctx, queue: &str, out: &Path, ack: bool, limit: Option<u64>) -> Result<()> {
    let conn = ctx.connect().await?;
    let ready = u64::from(depth(&conn, queue).await?);
    let ch = conn.create_channel().await?;
    let file = std::fs::File::create(out)?;
    let mut w = BufWriter::new(file);
    let taken_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    dumpfile::write_header(
        &mut w,
        &DumpHeader {
            warren_dump: dumpfile::FORMAT_VERSION,
            vhost: ctx.vhost.clone(),
            queue: queue.into(),
            taken_at_ms,
        },
    )?;
    let want = limit.unwrap_or(ready).min(ready);
    let bar = output::progress(Some(want), "dumping");
    let (mut n, mut last_tag) = (0u64, None);
    while n < want {
        let Some(msg) = take(&ch, queue).await? else { break };
        let d = &msg.delivery;
        dumpfile::write_record(
            &mut w,
            &DumpRecord {
                exchange: d.exchange.to_string(),
                routing_key: d.routing_key.to_string(),
                redelivered: d.redelivered,
                // The tag of the publish that stored it is not the message's (a load tags anew).
                properties: warren_infra::publish::without_tag(&d.properties),
                body: d.data.clone(),
            },
        )?;
        last_tag = Some(d.delivery_tag);
        n += 1;
        bar.inc(1);
    }
    w.flush()?;
    w.get_ref().sync_all()?;
    bar.finish_and_clear();
    if let Some(tag) = last_tag {
        if ack {
            ch.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        } else {
            ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await?;
        }
    }
    let _ = conn.close(200, "dumped".into()).await;
    let fate = if ack { "removed from" } else { "left in (marked redelivered)" };
    if ctx.json {
        output::json(&serde_json::json!({"queue": queue, "file": out, "messages": n, "removed": ack}));
    } else {
        output::line(format!("dumped {n} message(s) to {}; {fate} {queue}", out.display()));
    }
    Ok(())
}
