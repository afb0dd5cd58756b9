//! `load`: publish the messages of a dump file, body, properties and headers exactly as dumped,
//! each confirmed by the broker and `mandatory` (an unroutable message is counted as failed).

use std::path::Path;
use std::time::Duration;

use warren_infra::Publisher;

use crate::context::Ctx;
use crate::dumpfile;
use crate::errors::{CtlError, Result};
use crate::output;

pub async fn run(ctx: &Ctx, file: &Path, to: Option<&str>) -> Result<()> {
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    let (header, records) =
        dumpfile::read(reader).map_err(|e| CtlError::Usage(format!("{} is not a dump: {e}", file.display())))?;
    let conn = std::sync::Arc::new(ctx.connect().await?);
    let timeout = Duration::from_millis(ctx.settings.broker.confirm_timeout_ms);
    let publisher = Publisher::open(conn.clone(), timeout, 1).await?;
    let bar = output::progress(Some(records.len() as u64), "loading");
    let (mut ok, mut failed) = (0u64, 0u64);
    for r in &records {
        let exchange = to.unwrap_or(&r.exchange);
        match publisher.publish(exchange, &r.routing_key, &r.body, r.properties.clone(), true).await {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                eprintln!("warrenctl: message for {exchange}/{}: {e}", r.routing_key);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = conn.close(200, "loaded".into()).await;
    if ctx.json {
        output::json(&serde_json::json!({"file": file, "from_queue": header.queue, "published": ok, "failed": failed}));
    } else {
        output::line(format!(
            "published {ok} message(s) from {} (dumped from {}); {failed} failed",
            file.display(),
            header.queue
        ));
    }
    if failed > 0 { Err(CtlError::Partial { failed, total: records.len() as u64 }) } else { Ok(()) }
}
