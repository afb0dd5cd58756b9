//! One module per command; `files` is what the one-job-per-file commands share.

pub mod checksum;
pub mod classify;
pub mod files;
pub mod load;
pub mod resize;
pub mod submit;

use crate::cli::Command;
use crate::context::Ctx;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Resize(args) => resize::run(ctx, &args).await,
        Command::Classify(args) => classify::run(ctx, &args).await,
        Command::Checksum(args) => checksum::run(ctx, &args).await,
        Command::Load(args) => load::run(ctx, &args).await,
        Command::Submit(args) => submit::run(ctx, &args).await,
    }
}
