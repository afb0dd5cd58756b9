//! One module per command; what they share of messages is in `crate::messages`.

pub mod cancel;
pub mod dump;
pub mod inspect;
pub mod job;
pub mod load;
pub mod peek;
pub mod purge;
pub mod replay;
pub mod topology;

use crate::cli::Command;
use crate::context::Ctx;
use crate::errors::Result;

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Status => inspect::status(ctx).await,
        Command::Queues { all } => inspect::queues(ctx, all),
        Command::Peek { queue, count, wide } => peek::run(ctx, &queue, count, wide).await,
        Command::Dump { queue, out, ack, limit } => dump::run(ctx, &queue, &out, ack, limit).await,
        Command::Load { file, to } => load::run(ctx, &file, to.as_deref()).await,
        Command::Replay { dead_queue, filter, limit, rate, dry_run, to } => {
            let opts = replay::Options { filter, limit, rate, dry_run, to };
            replay::run(ctx, &dead_queue, opts).await
        }
        Command::Job { job_id, console_url } => job::run(ctx, &job_id, console_url.as_deref()),
        Command::Cancel { job_ids } => cancel::run(ctx, &job_ids).await,
        Command::Purge { queue, yes } => purge::run(ctx, &queue, yes).await,
        Command::Topology { action } => topology::run(ctx, action).await,
    }
}
