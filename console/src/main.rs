//! `warren-console`: see the library's documentation and `docs/console.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use warren_infra::{Settings, settings, telemetry};

#[derive(Parser, Debug)]
#[command(about = "Warren's status store and web console: every job's timeline, by id")]
struct Cli {
    /// Directory holding default.toml and the WARREN_ENV overlays.
    #[arg(long, env = "WARREN_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Where to serve (console.addr).
    #[arg(long)]
    addr: Option<String>,
    /// sqlite://<file> or postgres://... (console.database_url).
    #[arg(long)]
    database_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-console: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match run(cli).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("warren-console: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(&settings::config_dir(cli.config_dir))?;
    if let Some(addr) = cli.addr {
        settings.console.addr = addr;
    }
    if let Some(url) = cli.database_url {
        settings.console.database_url = url;
    }
    telemetry::init(&settings.telemetry);
    let console = warren_console::Console::start(settings).await?;
    // The tests and scripts read this line for the address (port 0 picks a free one).
    println!("warren-console listening on http://{}", console.addr);
    wait_for_signal().await;
    tracing::info!("stopping: events not yet committed stay in the queue");
    console.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
