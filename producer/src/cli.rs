//! The `warren-producer` command line: clap types only; `commands/` runs them. Exit codes are
//! in `exit_code.rs`.

mod wire_enum;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use warren_common::Encoding;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeMode};

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
    Resize(ResizeArgs),
    /// ml.classify every image in PATHS.
    Classify(ClassifyArgs),
    /// checksum every file in PATHS.
    Checksum(ChecksumArgs),
    /// Generate load: COUNT copies of one job, paced and bounded, with a latency report.
    Load(LoadArgs),
    /// Publish one job of any kind (JSON), files attached as bytes fields; or, with --each, one
    /// job per file.
    Submit(SubmitArgs),
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job's kind (its routing key), e.g. image.blurhash.
    #[arg(long)]
    pub kind: String,
    /// The job's input as JSON: inline, or @path to read it from a file.
    #[arg(long, default_value = "{}")]
    pub job: String,
    /// A file's bytes as a field of the job (base64 in JSON): FIELD=PATH; repeatable.
    #[arg(long = "bytes", value_name = "FIELD=PATH")]
    pub bytes: Vec<String>,
    /// A reference as a bytes field of the job, fetched by the worker: FIELD=URL, the URL
    /// s3://bucket/key, file:///path or https://... (presigned); repeatable.
    #[arg(long = "ref", value_name = "FIELD=URL")]
    pub refs: Vec<String>,
    /// Where the worker writes the output's bytes (s3://bucket/prefix/ or file:///dir/); the
    /// result carries references to them.
    #[arg(long, value_name = "PREFIX")]
    pub output_to: Option<String>,
    /// One job per file of PATHS, each file's bytes in this field (resize, classify and
    /// checksum are this with their own field).
    #[arg(long, value_name = "FIELD", requires = "paths")]
    pub each: Option<String>,
    /// With --each: files or directories.
    pub paths: Vec<PathBuf>,
    /// Await the result and print it.
    #[arg(long)]
    pub wait: bool,
    /// With --each and --wait: write outputs into this directory.
    #[arg(long, requires = "wait")]
    pub out: Option<PathBuf>,
    /// With --each: jobs in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// AMQP priority of the job (its route's max_priority bounds it). Not with --each.
    #[arg(long, conflicts_with = "each")]
    pub priority: Option<u8>,
    /// The job's deadline, this many ms from now: not started (nor retried) after it. Not with --each.
    #[arg(long, conflicts_with = "each")]
    pub timeout_ms: Option<u64>,
    /// Not to start before this many ms from now. Not with --each.
    #[arg(long, conflicts_with = "each")]
    pub delay_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ResizeArgs {
    #[arg(long)]
    pub width: u32,
    #[arg(long)]
    pub height: u32,
    #[arg(long, value_parser = wire_enum(&ResizeMode::ALL, ResizeMode::as_str), default_value = "fit")]
    pub mode: ResizeMode,
    #[arg(long, value_parser = wire_enum(&Filter::ALL, Filter::as_str), default_value = "lanczos3")]
    pub filter: Filter,
    /// Output format (default: the input's).
    #[arg(long, value_parser = wire_enum(&Format::ALL, Format::as_str))]
    pub format: Option<Format>,
    /// JPEG quality 1-100.
    #[arg(long)]
    pub quality: Option<u8>,
    #[command(flatten)]
    pub files: FilesArgs,
}

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[arg(long)]
    pub top_k: Option<u32>,
    #[command(flatten)]
    pub files: FilesArgs,
}

#[derive(Args, Debug)]
pub struct ChecksumArgs {
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    #[command(flatten)]
    pub files: FilesArgs,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Any kind: the built-in ones make their job from the flags below; any other needs --job.
    #[arg(long, default_value = "checksum")]
    pub kind: String,
    /// The job's input file (image kinds need one); checksum jobs default to SIZE zero bytes.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// For a kind this tool has no flags for: its input as JSON (inline or @path), sent as it is.
    #[arg(long)]
    pub job: Option<String>,
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Jobs per second; 0 = as fast as confirms allow.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Most jobs outstanding at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Await every result and report end-to-end latency.
    #[arg(long)]
    pub wait: bool,
    /// For resize: target width and height.
    #[arg(long, default_value_t = 64)]
    pub width: u32,
    #[arg(long, default_value_t = 64)]
    pub height: u32,
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
}

/// The inputs of a one-job-per-file command, and what to do with the results.
#[derive(Args, Debug)]
pub struct FilesArgs {
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

/// The parsed command line for `args` (after the program name); for the commands' tests.
#[cfg(test)]
pub(crate) fn parse(args: &[&str]) -> Command {
    use clap::Parser as _;
    Cli::try_parse_from(std::iter::once("warren-producer").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} parses: {e}"))
        .command
}
