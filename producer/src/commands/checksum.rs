//! `warren-producer checksum`: a `checksum` job for every file in PATHS, images or not.

use warren_common::Job;
use warren_common::checksum::{Checksum, ChecksumJob};

use super::files;
use crate::cli::ChecksumArgs;
use crate::context::Ctx;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, args: &ChecksumArgs) -> anyhow::Result<Outcome> {
    let rounds = args.rounds;
    let stamp = move |data| Ok(Job::new::<Checksum>(ChecksumJob { data, rounds }));
    files::publish(ctx, &stamp, false, &args.files).await
}
