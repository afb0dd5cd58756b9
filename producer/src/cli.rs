//! The `warren-producer` command line.
//!
//! Exit codes: 0 every job published (and, with `--wait`, every result ok); 1 some job failed
//! or its result did not come in time; 2 a usage, configuration or broker error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
mod wire_enum;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt as _;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::fault::FaultJob;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Encoding, Job, JobKind, ResultStatus};
use warren_infra::{Settings, settings};

use crate::client::{Producer, ProducerError, PublishOptions};
use crate::inputs;
use crate::load::{self, LoadPlan};
use crate::output;
use warren_infra::PublishError;
use wire_enum::wire_enum;

#[derive(Parser, Debug)]
#[command(version, about = "Publish Warren jobs with confirms and await their results")]
pub struct Cli {
    /// Directory holding default.toml and the WARREN_ENV overlays.
    #[arg(long, env = "WARREN_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// Envelope encoding (default from config: producer.encoding).
    #[arg(long, value_parser = wire_enum(&Encoding::ALL, Encoding::as_str), global = true)]
    pub encoding: Option<Encoding>,
    /// Declare the topology first (consumers also do at start-up).
    #[arg(long, global = true)]
    pub declare: bool,
    /// Serve /metrics, /healthz and /readyz here while running (e.g. 127.0.0.1:9465).
    #[arg(long, env = "WARREN_PRODUCER_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// image.resize every image in PATHS (files or directories).
    Resize {
        #[arg(long)]
        width: u32,
        #[arg(long)]
        height: u32,
        #[arg(long, value_parser = wire_enum(&ResizeMode::ALL, ResizeMode::as_str), default_value = "fit")]
        mode: ResizeMode,
        #[arg(long, value_parser = wire_enum(&Filter::ALL, Filter::as_str), default_value = "lanczos3")]
        filter: Filter,
        /// Output format (default: the input's).
        #[arg(long, value_parser = wire_enum(&Format::ALL, Format::as_str))]
        format: Option<Format>,
        /// JPEG quality 1-100.
        #[arg(long)]
        quality: Option<u8>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// ml.classify every image in PATHS.
    Classify {
        #[arg(long)]
        top_k: Option<u32>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// checksum every file in PATHS.
    Checksum {
        #[arg(long, default_value_t = 1)]
        rounds: u32,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Generate load: COUNT copies of one job, paced and bounded, with a latency report.
    Load {
        #[arg(long, value_parser = parse_kind, default_value = "checksum")]
        kind: JobKind,
        /// The job's input file (image kinds need one); checksum jobs default to SIZE zero bytes.
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Jobs per second; 0 = as fast as confirms allow.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Most jobs outstanding at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Await every result and report end-to-end latency.
        #[arg(long)]
        wait: bool,
        /// For resize: target width and height.
        #[arg(long, default_value_t = 64)]
        width: u32,
        #[arg(long, default_value_t = 64)]
        height: u32,
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Await each result by correlation id and print it.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: write outputs (images, JSON) into this directory.
    #[arg(long, requires = "wait")]
    pub out: Option<PathBuf>,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

fn parse_kind(s: &str) -> Result<JobKind, String> {
    JobKind::parse(s).map_err(|e| e.to_string())
}

/// Runs the command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let settings = Settings::load(&settings::config_dir(cli.config_dir)).context("loading settings")?;
    warren_infra::telemetry::init(&settings.telemetry);
    let result_timeout = Duration::from_millis(settings.producer.result_timeout_ms);
    let mut producer = Producer::connect(settings).await?;
    if let Some(addr) = &cli.metrics_addr {
        let metrics = producer.metrics().clone();
        let probe = metrics.clone();
        let bound = warren_infra::serve::spawn(addr, metrics.registry.clone(), move || {
            let up = probe.is_connected();
            (up, if up { "connected".into() } else { "not connected".into() })
        })
        .await?;
        eprintln!("warren-producer: metrics on http://{bound}/metrics");
    }
    if cli.declare {
        producer.declare_topology().await?;
    }
    let encoding = cli.encoding;
    let code = match cli.command {
        Command::Resize { width, height, mode, filter, format, quality, run } => {
            let template = Job::Resize(ResizeJob { image: Vec::new(), width, height, mode, filter, format, quality });
            publish_files(&mut producer, &template, &run, encoding, result_timeout).await?
        }
        Command::Classify { top_k, run } => {
            publish_files(
                &mut producer,
                &Job::Classify(ClassifyJob { image: Vec::new(), top_k }),
                &run,
                encoding,
                result_timeout,
            )
            .await?
        }
        Command::Checksum { rounds, run } => {
            publish_files(
                &mut producer,
                &Job::Checksum(ChecksumJob { data: Vec::new(), rounds }),
                &run,
                encoding,
                result_timeout,
            )
            .await?
        }
        Command::Load { kind, input, size, count, rate, concurrency, wait, width, height, rounds } => {
            let data = match &input {
                Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                None if matches!(kind, JobKind::Checksum | JobKind::Fault) => vec![0u8; size],
                None => anyhow::bail!("--input is required for {kind} load"),
            };
            let template = match kind {
                JobKind::ImageResize => Job::Resize(ResizeJob {
                    image: Vec::new(),
                    width,
                    height,
                    mode: ResizeMode::Fit,
                    filter: Filter::Triangle,
                    format: None,
                    quality: None,
                }),
                JobKind::MlClassify => Job::Classify(ClassifyJob { image: Vec::new(), top_k: Some(1) }),
                JobKind::Checksum => Job::Checksum(ChecksumJob { data: Vec::new(), rounds }),
                // A fault job with nothing to inject: the fleet's overhead with no payload at all.
                JobKind::Fault => Job::Fault(FaultJob::default()),
            };
            if wait {
                producer.enable_replies().await?;
            }
            let plan = LoadPlan { count, rate, concurrency, wait, result_timeout };
            let opts = PublishOptions { encoding, ..Default::default() };
            let report = load::run(&producer, template.with_input(data), opts, &plan).await;
            report.print();
            i32::from(report.publish_errors > 0 || report.failed > 0 || report.timeouts > 0)
        }
    };
    producer.close().await;
    Ok(code)
}

async fn publish_files(
    producer: &mut Producer,
    template: &Job,
    run: &RunArgs,
    encoding: Option<Encoding>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let files = inputs::collect(&run.paths, template.kind() != JobKind::Checksum)?;
    anyhow::ensure!(!files.is_empty(), "no input files found in {:?}", run.paths);
    if run.wait {
        producer.enable_replies().await?;
    }
    let producer = &*producer;
    let opts = PublishOptions { encoding, want_result: run.wait, job_id: None };
    let outcomes = futures_util::stream::iter(files.iter())
        .map(|path| {
            let opts = opts.clone();
            async move { one_file(producer, template, path, &opts, run, timeout).await }
        })
        .buffered(run.concurrency.max(1))
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
    if run.wait {
        println!("{} jobs: {ok} ok, {failed} failed", ok + failed);
    } else {
        println!("{ok} jobs published and confirmed");
    }
    Ok(i32::from(failed > 0))
}

/// Publishes one file's job; with --wait, prints and writes its result. Ok(false) = job failed.
async fn one_file(
    producer: &Producer,
    template: &Job,
    path: &Path,
    opts: &PublishOptions,
    run: &RunArgs,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let data = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
    let ticket = producer.publish(&template.with_input(data), opts).await.map_err(|e| {
        let hint = match &e {
            ProducerError::Publish(PublishError::Unroutable { .. }) => {
                " (no queue for this kind: is a consumer running, or run with --declare?)"
            }
            _ => "",
        };
        anyhow::anyhow!("publishing {}: {e}{hint}", path.display())
    })?;
    if !run.wait {
        return Ok(true);
    }
    let job_id = ticket.job_id.clone();
    match ticket.wait(timeout).await {
        Ok(result) => {
            let mut line = format!("{} [{job_id}] {}", path.display(), output::summary(&result));
            if let Some(dir) = &run.out {
                let written = output::write(dir, path, &result)?;
                line.push_str(&format!(" -> {}", written.display()));
            }
            println!("{line}");
            Ok(result.status == ResultStatus::Ok)
        }
        Err(e) => {
            println!("{} [{job_id}] error: {e}", path.display());
            Ok(false)
        }
    }
}
