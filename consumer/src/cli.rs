//! A worker process's `main`: command line, runtime, settings, telemetry, signals, then
//! `Application::run_until_stopped`; or `routes`, which prints the effective routes and topology
//! without connecting.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use warren_infra::topology::Plan;
use warren_infra::{Settings, settings, telemetry};

use crate::builder::WorkerBuilder;
use crate::routes::{self, Declared};

#[derive(Parser, Debug)]
#[command(about = "A Warren worker: consumes the queues of its job kinds and publishes results")]
struct Cli {
    /// Directory holding default.toml and the WARREN_ENV overlays.
    #[arg(long, env = "WARREN_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints the kinds this worker serves, their effective routes and the topology it declares,
    /// then exits (nothing is connected or loaded).
    Routes {
        /// One JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
}

impl WorkerBuilder {
    /// Runs a whole worker process: parses its command line (`--config-dir`, the `routes`
    /// command), loads the settings, starts telemetry and the runtime, runs until SIGTERM or
    /// Ctrl-C, drains, and returns the exit code.
    pub fn main(self) -> ExitCode {
        main(self)
    }
}

fn main(kinds: WorkerBuilder) -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match run(cli, kinds).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One readable line (with its causes) for operators, whatever RUST_BACKTRACE says.
                if tracing::dispatcher::has_been_set() {
                    tracing::error!(error = format!("{e:#}"), "worker failed");
                } else {
                    eprintln!("warren worker: {e:#}");
                }
                ExitCode::FAILURE
            }
        }
    });
    // A job thread past its time limit cannot be stopped, and dropping the runtime would wait
    // for it forever: the drain already handed its job back, so do not wait long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn run(cli: Cli, kinds: WorkerBuilder) -> anyhow::Result<()> {
    let settings = Settings::load(&settings::config_dir(cli.config_dir)).context("loading settings")?;
    if let Some(Command::Routes { json }) = cli.command {
        return print_routes(&settings, &kinds, json);
    }
    telemetry::init(&settings.telemetry);
    if let Some(describe) = kinds.allocator {
        tracing::info!(allocator = %describe(), "memory allocator");
    }
    // A panic inside a job is caught and dead-lettered; log it as an event (JSON in production)
    // rather than as loose text on stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %info.payload_as_str().unwrap_or("non-string payload"), %location, "panic");
    }));
    // Listening before start-up, which can wait long for a broker: a SIGTERM then ends the
    // start-up cleanly (exit 0) instead of killing the process, as it did until the first poll
    // of the shutdown future, just after "consumer ready".
    let mut signals = Signals::listen();
    let app = tokio::select! {
        app = kinds.build(settings) => app?,
        () = signals.first() => {
            tracing::info!("shutdown requested during start-up; exiting");
            return Ok(());
        }
    };
    app.run_until_stopped(signals.shutdown()).await
}

fn print_routes(settings: &Settings, kinds: &WorkerBuilder, json: bool) -> anyhow::Result<()> {
    let declared: Vec<Declared<'_>> =
        kinds.pending.iter().map(|p| Declared { name: p.name, defaults: &p.defaults, opt_in: p.opt_in }).collect();
    let served = routes::served(settings, &declared)?;
    let pool = crate::pool::WorkerPool::new(settings.consumer.pool_size).size();
    let rows: Vec<serde_json::Value> = served
        .iter()
        .map(|r| {
            let shape = kinds.pending.iter().find(|p| p.name == r.kind).map(|p| p.shape);
            let shape = shape.unwrap_or(crate::builder::Shape::Blocking);
            let prefetch = routes::prefetch_for(settings, r, pool, shape.runs(r));
            let retry = settings.retry_policy(r);
            serde_json::json!({
                "kind": r.kind, "shape": shape.as_str(), "queue": r.queue,
                "returned_queue": settings.returned_queue(&r.queue), "dead_queue": settings.dead_queue(&r.queue),
                "time_limit_ms": r.time_limit_ms, "prefetch": prefetch, "max_attempts": retry.max_attempts,
                "max_batch": r.max_batch, "max_batch_wait_ms": r.max_batch_wait_ms, "concurrency": r.concurrency,
            })
        })
        .collect();
    let foreign = routes::foreign(settings, &declared);
    let plan = Plan::with_routes(settings, &served);
    let queues: Vec<&str> = plan.queues.iter().map(|(q, _)| q.as_str()).collect();
    let exchanges: Vec<&str> = plan.exchanges.iter().map(|(e, _)| e.as_str()).collect();
    if json {
        let doc = serde_json::json!({
            "pool_size": pool, "routes": rows, "other_workers_routes": foreign,
            "exchanges": exchanges, "queues": queues,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("pool: {pool} slots");
    println!(
        "{:<20} {:<9} {:<28} {:>10} {:>8} {:>8} {:>6} {:>6}",
        "KIND", "SHAPE", "QUEUE", "LIMIT_MS", "PREFETCH", "ATTEMPTS", "BATCH", "CONC"
    );
    for r in &rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        let n = |k: &str| r[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
        println!(
            "{:<20} {:<9} {:<28} {:>10} {:>8} {:>8} {:>6} {:>6}",
            s("kind"),
            s("shape"),
            s("queue"),
            n("time_limit_ms"),
            n("prefetch"),
            n("max_attempts"),
            n("max_batch"),
            n("concurrency")
        );
    }
    if !foreign.is_empty() {
        println!("routes left to other workers: {}", foreign.join(", "));
    }
    println!("exchanges: {}", exchanges.join(", "));
    println!("queues: {}", queues.join(", "));
    Ok(())
}

/// SIGTERM and SIGINT, listened to from the start of the process.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => {
                    tracing::warn!("cannot listen for signals; only Ctrl-C stops the worker");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn first(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Resolves on the first signal. From then on, a second one exits at once (code 130): the
    /// broker redelivers whatever was unfinished.
    async fn shutdown(mut self) {
        self.first().await;
        tracing::info!("shutdown requested; draining (a second signal stops at once)");
        tokio::spawn(async move {
            self.first().await;
            tracing::warn!("second signal: exiting now; the broker redelivers unfinished jobs");
            std::process::exit(130);
        });
    }
}
