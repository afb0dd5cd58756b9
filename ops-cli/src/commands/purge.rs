//! `purge`: remove every ready message of a queue, after a confirmation (or `--yes`). Unacked
//! messages (held by consumers) are not purged; the count printed is what the broker removed.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::context::Ctx;
use crate::errors::{CtlError, Result};
use crate::messages::depth;
use crate::output;

pub async fn run(ctx: &Ctx, queue: &str, yes: bool) -> Result<()> {
    let conn = ctx.connect().await?;
    let ready = depth(&conn, queue).await?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CtlError::Usage(format!(
                "refusing to purge {queue} ({ready} messages) without --yes: stdin is not a terminal"
            )));
        }
        eprint!("purge {ready} ready message(s) from {queue} in vhost {}? [y/N] ", ctx.vhost);
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CtlError::Aborted);
        }
    }
    let ch = conn.create_channel().await?;
    let removed = ch.queue_purge(queue.into(), Default::default()).await?;
    let _ = conn.close(200, "purged".into()).await;
    if ctx.json {
        output::json(&serde_json::json!({"queue": queue, "purged": removed}));
    } else {
        output::line(format!("purged {removed} message(s) from {queue}"));
    }
    Ok(())
}
