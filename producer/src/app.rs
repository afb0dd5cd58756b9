//! Running a parsed command line: settings and telemetry, the connection, the metrics server and
//! topology when asked for, then the command (`commands/`), then a clean close.

use std::time::Duration;

use anyhow::Context as _;
use warren_infra::{Settings, settings};

use crate::cli::Cli;
use crate::client::Producer;
use crate::commands;
use crate::context::Ctx;
use crate::exit_code::Outcome;

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let settings = Settings::load(&settings::config_dir(cli.config_dir)).context("loading settings")?;
    warren_infra::telemetry::init(&settings.telemetry);
    let result_timeout = Duration::from_millis(settings.producer.result_timeout_ms);
    let producer = Producer::connect(settings).await?;
    if let Some(addr) = &cli.metrics_addr {
        serve_metrics(&producer, addr).await?;
    }
    if cli.declare {
        producer.declare_topology().await?;
    }
    let mut ctx = Ctx { producer, encoding: cli.encoding, result_timeout };
    let ended = commands::run(&mut ctx, cli.command).await?;
    ctx.producer.close().await;
    Ok(ended)
}

/// Serves /metrics, /healthz and /readyz (ready while connected) on `addr` in the background.
async fn serve_metrics(producer: &Producer, addr: &str) -> anyhow::Result<()> {
    let metrics = producer.metrics().clone();
    let probe = metrics.clone();
    let bound = warren_infra::serve::spawn(addr, metrics.registry.clone(), move || {
        let up = probe.is_connected();
        (up, if up { "connected".into() } else { "not connected".into() })
    })
    .await?;
    eprintln!("warren-producer: metrics on http://{bound}/metrics");
    Ok(())
}
