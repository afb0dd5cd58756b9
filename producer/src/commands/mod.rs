//! One module per command; `files` is what the one-job-per-file commands share.

pub mod checksum;
pub mod classify;
pub mod files;
pub mod load;
pub mod resize;
pub mod submit;

use std::time::Duration;

use warren_common::Encoding;

use crate::cli::Command;
use crate::client::Producer;
use crate::exit_code::Outcome;

/// What every command runs with: the connected producer and the settings it applies to each job.
#[derive(Debug)]
pub struct Ctx {
    pub producer: Producer,
    /// `--encoding`; the configured default when `None`.
    pub encoding: Option<Encoding>,
    /// How long a result may take (`producer.result_timeout_ms`).
    pub result_timeout: Duration,
}

pub async fn run(ctx: &mut Ctx, command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Resize(args) => resize::run(ctx, &args).await,
        Command::Classify(args) => classify::run(ctx, &args).await,
        Command::Checksum(args) => checksum::run(ctx, &args).await,
        Command::Load(args) => load::run(ctx, &args).await,
        Command::Submit(args) => submit::run(ctx, &args).await,
    }
}

/// The parsed command line for `args` (after the program name); for the commands' tests.
#[cfg(test)]
pub(crate) fn parse(args: &[&str]) -> Command {
    use clap::Parser as _;
    crate::cli::Cli::try_parse_from(std::iter::once("warren-producer").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} parses: {e}"))
        .command
}
