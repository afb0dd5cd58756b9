//! `warren-producer load`: COUNT copies of one job through the load generator (`crate::load`),
//! paced and bounded, and its report.

use anyhow::Context as _;
use warren_common::checksum::{Checksum, ChecksumJob};
use warren_common::classify::{Classify, ClassifyJob};
use warren_common::fault::{Fault, FaultJob};
use warren_common::resize::{Filter, Resize, ResizeJob, ResizeMode};
use warren_common::{Job, Kind};

use super::submit;
use crate::cli::LoadArgs;
use crate::client::PublishOptions;
use crate::context::Ctx;
use crate::exit_code::Outcome;
use crate::load::{self as generator, LoadPlan};

pub async fn run(ctx: &mut Ctx, args: &LoadArgs) -> anyhow::Result<Outcome> {
    let job = job(args, input(args)?)?;
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
    let report = generator::run(&ctx.producer, job, opts, &plan).await;
    report.print();
    Ok(Outcome::from_failures(report.publish_errors > 0 || report.failed > 0 || report.timeouts > 0))
}

/// The job's input: `--input`'s bytes, or SIZE zero bytes for the kinds that take any bytes.
fn input(args: &LoadArgs) -> anyhow::Result<Vec<u8>> {
    match &args.input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None if [Resize::NAME, Classify::NAME].contains(&args.kind.as_str()) => {
            anyhow::bail!("--input is required for {} load", args.kind)
        }
        None => Ok(vec![0u8; args.size]),
    }
}

/// The job every copy is a copy of.
fn job(args: &LoadArgs, data: Vec<u8>) -> anyhow::Result<Job> {
    Ok(match args.kind.as_str() {
        _ if args.job.is_some() => submit::named(&args.kind, args.job.as_deref().unwrap_or("{}"), &[])?,
        Resize::NAME => Job::new::<Resize>(ResizeJob {
            image: data,
            width: args.width,
            height: args.height,
            mode: ResizeMode::Fit,
            filter: Filter::Triangle,
            format: None,
            quality: None,
        }),
        Classify::NAME => Job::new::<Classify>(ClassifyJob { image: data, top_k: Some(1) }),
        Checksum::NAME => Job::new::<Checksum>(ChecksumJob { data, rounds: args.rounds }),
        // A fault job with nothing to inject: the fleet's overhead with no payload at all.
        Fault::NAME => Job::new::<Fault>(FaultJob::default()),
        other => anyhow::bail!("--job is required for {other} load (its input as JSON)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::cli::parse;

    fn args(argv: &[&str]) -> LoadArgs {
        let Command::Load(args) = parse(argv) else { panic!("a load command") };
        args
    }

    #[test]
    fn checksum_load_defaults_to_size_zero_bytes() {
        let a = args(&["load", "--size", "10", "--rounds", "3"]);
        assert_eq!(input(&a).unwrap(), vec![0u8; 10]);
        let j = job(&a, vec![0; 10]).unwrap();
        let body = warren_common::JobEnvelope::encode(&j, warren_common::Encoding::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["job"], serde_json::json!({"data": "AAAAAAAAAAAAAA==", "rounds": 3}));
    }

    #[test]
    fn image_load_needs_an_input() {
        let err = input(&args(&["load", "--kind", "image.resize"])).unwrap_err();
        assert_eq!(err.to_string(), "--input is required for image.resize load");
        let a = args(&["load", "--kind", "image.resize", "--width", "32", "--input", "Cargo.toml"]);
        let j = job(&a, vec![1]).unwrap();
        let body = warren_common::JobEnvelope::encode(&j, warren_common::Encoding::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["job"]["width"].as_u64(), v["job"]["height"].as_u64()), (Some(32), Some(64)));
        assert_eq!((v["job"]["mode"].as_str(), v["job"]["filter"].as_str()), (Some("fit"), Some("triangle")));
    }

    #[test]
    fn any_other_kind_loads_from_its_json() {
        let a = args(&["load", "--kind", "video.probe", "--job", r#"{"url":"x"}"#]);
        assert_eq!(job(&a, Vec::new()).unwrap().kind(), "video.probe");
        let e = job(&args(&["load", "--kind", "video.probe"]), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("--job is required for video.probe"), "{e}");
    }
}
