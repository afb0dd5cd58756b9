//! `warren-consumer`: settings, telemetry, build, run until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use warren_consumer::Application;
use warren_infra::{Settings, settings, telemetry};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(version, about = "Warren worker: consumes job queues and publishes results")]
struct Cli {
    /// Directory holding default.toml and the WARREN_ENV overlays.
    #[arg(long, env = "WARREN_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
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
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&settings::config_dir(cli.config_dir)).context("loading settings")?;
    telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
