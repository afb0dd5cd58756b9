//! `warren-producer checksum`: a `checksum` job for every file in PATHS, images or not.

use warren_common::Job;
use warren_common::checksum::ChecksumJob;

use super::{Ctx, files};
use crate::cli::ChecksumArgs;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, args: &ChecksumArgs) -> anyhow::Result<Outcome> {
    let template = Job::Checksum(ChecksumJob { data: Vec::new(), rounds: args.rounds });
    files::publish(ctx, &template, &args.files).await
}
