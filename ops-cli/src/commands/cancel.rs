//! `cancel`: one cancel record for the given job ids on the cancel stream, confirmed by the
//! broker. Workers read it (those that start later too) and never start those jobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warren_infra::Publisher;
use warren_infra::cancels::{self, Record};

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
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let record = Record::Cancel { job_ids: job_ids.to_vec(), at_ms };
    let published = cancels::publish(&publisher, &ctx.settings, &record).await;
    let _ = conn.close(200, "cancelled".into()).await;
    published.map_err(|e| {
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
