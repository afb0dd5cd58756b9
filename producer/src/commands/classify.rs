//! `warren-producer classify`: an `ml.classify` job for every image in PATHS.

use warren_common::Job;
use warren_common::classify::ClassifyJob;

use super::{Ctx, files};
use crate::cli::ClassifyArgs;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, args: &ClassifyArgs) -> anyhow::Result<Outcome> {
    let template = Job::Classify(ClassifyJob { image: Vec::new(), top_k: args.top_k });
    files::publish(ctx, &template, &args.files).await
}
