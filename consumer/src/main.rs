//! `warren-consumer`: settings, telemetry, build, run until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use warren_consumer::Application;
use warren_infra::{Settings, settings, telemetry};

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

#[derive(Parser, Debug)]
#[command(version, about = "Warren worker: consumes job queues and publishes results")]
struct Cli {
    /// Directory holding default.toml and the WARREN_ENV overlays.
    #[arg(long, env = "WARREN_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-consumer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match run(cli).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One readable line (with its causes) for operators, whatever RUST_BACKTRACE says.
                if tracing::dispatcher::has_been_set() {
                    tracing::error!(error = format!("{e:#}"), "warren-consumer failed");
                } else {
                    eprintln!("warren-consumer: {e:#}");
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&settings::config_dir(cli.config_dir)).context("loading settings")?;
    telemetry::init(&settings.telemetry);
    tracing::info!(allocator = %warren_infra::alloc::configure(), "memory allocator");
    // A panic inside a job is caught and dead-lettered; log it as an event (JSON in production)
    // rather than as loose text on stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %info.payload_as_str().unwrap_or("non-string payload"), %location, "panic");
    }));
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on the first SIGTERM or SIGINT. From then on, a second one exits at once (code 130):
/// the broker redelivers whatever was unfinished.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot listen for signals; only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested; draining (a second signal stops at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: exiting now; the broker redelivers unfinished jobs");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}
