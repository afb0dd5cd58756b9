//! `warren-producer load`: COUNT copies of one job through the load generator (`crate::load`),
//! paced and bounded, and its report.

use anyhow::Context as _;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::fault::FaultJob;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Job, JobKind};

use super::Ctx;
use crate::cli::LoadArgs;
use crate::client::PublishOptions;
use crate::exit_code::Outcome;
use crate::load::{self as generator, LoadPlan};

pub async fn run(ctx: &mut Ctx, args: &LoadArgs) -> anyhow::Result<Outcome> {
    let data = input(args)?;
    let template = template(args);
    if args.wait {
        ctx.producer.enable_replies().await?;
    }
    let plan = LoadPlan {
        count: args.count,
        rate: args.rate,
        concurrency: args.concurrency,
        wait: args.wait,
        result_timeout: ctx.result_timeout,
    };
    let opts = PublishOptions { encoding: ctx.encoding, ..Default::default() };
    let report = generator::run(&ctx.producer, template.with_input(data), opts, &plan).await;
    report.print();
    Ok(Outcome::from_failures(report.publish_errors > 0 || report.failed > 0 || report.timeouts > 0))
}

/// The job's input: `--input`'s bytes, or SIZE zero bytes for the kinds that take any bytes.
fn input(args: &LoadArgs) -> anyhow::Result<Vec<u8>> {
    match &args.input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None if matches!(args.kind, JobKind::Checksum | JobKind::Fault) => Ok(vec![0u8; args.size]),
        None => anyhow::bail!("--input is required for {} load", args.kind),
    }
}

/// The job every copy is stamped from.
fn template(args: &LoadArgs) -> Job {
    match args.kind {
        JobKind::ImageResize => Job::Resize(ResizeJob {
            image: Vec::new(),
            width: args.width,
            height: args.height,
            mode: ResizeMode::Fit,
            filter: Filter::Triangle,
            format: None,
            quality: None,
        }),
        JobKind::MlClassify => Job::Classify(ClassifyJob { image: Vec::new(), top_k: Some(1) }),
        JobKind::Checksum => Job::Checksum(ChecksumJob { data: Vec::new(), rounds: args.rounds }),
        // A fault job with nothing to inject: the fleet's overhead with no payload at all.
        JobKind::Fault => Job::Fault(FaultJob::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::commands::parse;

    fn args(argv: &[&str]) -> LoadArgs {
        let Command::Load(args) = parse(argv) else { panic!("a load command") };
        args
    }

    #[test]
    fn checksum_load_defaults_to_size_zero_bytes() {
        let a = args(&["load", "--size", "10", "--rounds", "3"]);
        assert_eq!(input(&a).unwrap(), vec![0u8; 10]);
        assert_eq!(template(&a), Job::Checksum(ChecksumJob { data: Vec::new(), rounds: 3 }));
    }

    #[test]
    fn image_load_needs_an_input() {
        let err = input(&args(&["load", "--kind", "image.resize"])).unwrap_err();
        assert_eq!(err.to_string(), "--input is required for image.resize load");
        let a = args(&["load", "--kind", "image.resize", "--width", "32", "--input", "Cargo.toml"]);
        let Job::Resize(j) = template(&a) else { panic!("a resize job") };
        assert_eq!((j.width, j.height, j.mode, j.filter), (32, 64, ResizeMode::Fit, Filter::Triangle));
    }
}
