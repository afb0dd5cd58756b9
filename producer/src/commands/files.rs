//! What resize, classify, checksum and `submit --each` share: one job per input file, made by the
//! command's stamp from the file's bytes, `--concurrency` in flight; with `--wait`, each result printed (and, with `--out`,
//! written), and the command fails when any job did.

use std::path::Path;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use warren_common::{Job, ResultStatus};
use warren_infra::PublishError;

use crate::cli::FilesArgs;
use crate::client::{ProducerError, PublishOptions};
use crate::context::Ctx;
use crate::exit_code::Outcome;
use crate::{inputs, output};

/// Makes one file's job from its bytes.
pub type Stamp<'a> = &'a (dyn Fn(Vec<u8>) -> anyhow::Result<Job> + Sync);

/// One job per file of `args.paths` (with `images_only`, directories give their images only).
pub async fn publish(ctx: &mut Ctx, stamp: Stamp<'_>, images_only: bool, args: &FilesArgs) -> anyhow::Result<Outcome> {
    let files = inputs::collect(&args.paths, images_only)?;
    anyhow::ensure!(!files.is_empty(), "no input files found in {:?}", args.paths);
    if args.wait {
        ctx.producer.enable_replies().await?;
    }
    let ctx = &*ctx;
    let opts = PublishOptions { encoding: ctx.encoding, want_result: args.wait, ..Default::default() };
    let outcomes = futures_util::stream::iter(&files)
        .map(|path| one_file(ctx, stamp, path, &opts, args))
        .buffered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let (mut ok, mut failed) = (0, 0);
    for o in outcomes {
        match o {
            Ok(true) => ok += 1,
            Ok(false) => failed += 1,
            // Publishing failed: the broker did not take the job; that is a hard error.
            Err(e) => return Err(e),
        }
    }
    println!("{}", output::totals(ok, failed, args.wait));
    Ok(Outcome::from_failures(failed > 0))
}

/// Publishes one file's job; with --wait, prints and writes its result. Ok(false) = job failed.
async fn one_file(
    ctx: &Ctx,
    stamp: Stamp<'_>,
    path: &Path,
    opts: &PublishOptions,
    args: &FilesArgs,
) -> anyhow::Result<bool> {
    let data = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
    let job = stamp(data).with_context(|| format!("making the job of {}", path.display()))?;
    let ticket = ctx.producer.publish(&job, opts).await.map_err(|e| publish_error(path, &e))?;
    if !args.wait {
        return Ok(true);
    }
    let job_id = ticket.job_id.clone();
    match ticket.wait(ctx.result_timeout).await {
        Ok(result) => {
            let written = match &args.out {
                Some(dir) => Some(output::write(dir, path, &result)?),
                None => None,
            };
            println!("{}", output::result_line(path, &job_id, &result, written.as_deref()));
            Ok(result.status == ResultStatus::Ok)
        }
        Err(e) => {
            println!("{}", output::no_result_line(path, &job_id, &e));
            Ok(false)
        }
    }
}

/// A publish the broker did not take, naming the file; an unroutable job says what is missing.
fn publish_error(path: &Path, e: &ProducerError) -> anyhow::Error {
    let hint = match e {
        ProducerError::Publish(PublishError::Unroutable { .. }) => {
            " (no queue for this kind: is a consumer running, or run with --declare?)"
        }
        _ => "",
    };
    anyhow::anyhow!("publishing {}: {e}{hint}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unroutable_job_says_what_is_missing() {
        let e = ProducerError::Publish(PublishError::Unroutable {
            exchange: "warren.jobs".into(),
            routing_key: "checksum".into(),
            reply: "NO_ROUTE".into(),
        });
        let text = publish_error(Path::new("a.bin"), &e).to_string();
        assert!(text.starts_with("publishing a.bin: unroutable:"), "{text}");
        assert!(text.ends_with("(no queue for this kind: is a consumer running, or run with --declare?)"), "{text}");
        let other = publish_error(Path::new("a.bin"), &ProducerError::RepliesDisabled).to_string();
        assert!(!other.contains("--declare"), "{other}");
    }
}
