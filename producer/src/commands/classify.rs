//! `warren-producer classify`: an `ml.classify` job for every image in PATHS.

use warren_common::Job;
use warren_common::classify::{Classify, ClassifyJob};

use super::files;
use crate::cli::ClassifyArgs;
use crate::context::Ctx;
use crate::exit_code::Outcome;

pub async fn run(ctx: &mut Ctx, args: &ClassifyArgs) -> anyhow::Result<Outcome> {
    let top_k = args.top_k;
    let stamp = move |image| Ok(Job::new::<Classify>(ClassifyJob { image, top_k }));
    files::publish(ctx, &stamp, true, &args.files).await
}
