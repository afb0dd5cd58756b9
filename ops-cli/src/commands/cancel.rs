//! `cancel`: one cancel record for the given job ids on the cancel stream, confirmed by the
//! broker. Workers read it (those that start later too) and never start those jobs.

use std::sync::Arc;
use std::time::Duration;

use warren_infra::Publisher;
use warren_infra::cancels;

use crate::context::Ctx;
use crate::errors::{CtlError, Result};
use crate::output;

pub async fn run(ctx: &Ctx, job_ids: &[String]) -> Result<()> {
    if let Some(empty) = job_ids.iter().position(String::is_empty) {
        return Err(CtlError::Usage(format!("job id #{} is empty", empty + 1)));
    }
    let stream = &ctx.settings.topology.cancel_stream;
    if stream.is_empty() {
        return Err(CtlError::Config("cancellation is off: topology.cancel_stream is empty".into()));
    }
    let conn = Arc::new(ctx.connect().await?);
    let timeout = Duration::from_millis(ctx.settings.broker.confirm_timeout_ms);
    let publisher = Publisher::open(conn.clone(), timeout, 1).await?;
    let ids: Vec<&str> = job_ids.iter().map(String::as_str).collect();
    let published = cancels::cancel(&publisher, &ctx.settings, &ids).await;
    let _ = conn.close(200, "cancelled".into()).await;
    let at_ms = published.map_err(|e| {
        CtlError::Broker(format!(
            "{e:#} (is the stream declared? any worker declares it at start-up, as does `warrenctl topology apply`)"
        ))
    })?;
    if ctx.json {
        output::json(&serde_json::json!({"cancelled": job_ids, "stream": stream, "at_ms": at_ms}));
    } else {
        let days = ctx.settings.topology.cancel_retention_s as f64 / 86_400.0;
        output::line(format!(
            "cancel of {} job(s) recorded on {stream} (held for {days:.1} days): none of them starts from now on",
            job_ids.len()
        ));
    }
    Ok(())
}
