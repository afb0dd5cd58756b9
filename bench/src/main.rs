//! `warren-bench`: how much does the fleet cost over doing the work directly? Each scenario
//! ([`Scenario`]) runs a baseline and the fleet alternately (`--pairs` times, fresh vhost each
//! run), on the local broker, and reports medians and the fleet/baseline ratio; `--out` writes
//! a JSON report.

mod fleet;
mod procfs;
mod relay;
mod scenarios;
mod stats;
mod store;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum as _};
use serde_json::json;

use crate::fleet::cores;
use crate::scenarios::Scenario;

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

#[derive(Parser, Debug)]
#[command(about = "Side-by-side benchmarks of the Warren fleet against its baselines")]
struct Cli {
    /// Baseline/fleet pairs per scenario.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Comma-separated; they run in the order of the possible values, whatever the order given.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "relay,prefetch,image,ml,triton,latency,memory,publish,cluster,events,console"
    )]
    scenarios: Vec<Scenario>,
    /// Jobs per run of the relay and latency scenarios.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Jobs per run of the image and ml scenarios.
    #[arg(long, default_value_t = 1000)]
    heavy_messages: u64,
    /// Jobs in flight from the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long the memory scenario waits after a load before reading RSS.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// Shortest measurement of each in-process rate (pipelines, ML batch sizes), in ms.
    #[arg(long, default_value_t = 1500)]
    measure_ms: u64,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut report = json!({
        "machine": {"cores": cores()},
        "pairs": cli.pairs,
    });
    let mut relay_max = None;
    for &scenario in Scenario::value_variants() {
        if !cli.scenarios.contains(&scenario) {
            continue;
        }
        let part = match scenario {
            Scenario::Relay => {
                let r = scenarios::relay::run(&cli).await?;
                relay_max = r["median_relay"].as_f64();
                r
            }
            Scenario::Prefetch => scenarios::prefetch::run(&cli).await?,
            Scenario::Image => scenarios::image::run(&cli).await?,
            Scenario::Ml => scenarios::ml::run(&cli).await?,
            Scenario::Triton => scenarios::triton::run(&cli).await?,
            Scenario::Memory => scenarios::memory::run(&cli).await?,
            Scenario::Publish => scenarios::publish::run(&cli).await?,
            Scenario::Latency => scenarios::latency::run(&cli, relay_max).await?,
            Scenario::Cluster => scenarios::cluster::run(&cli).await?,
            Scenario::Events => scenarios::events::run(&cli).await?,
            Scenario::Console => scenarios::console::run(&cli).await?,
        };
        let name = scenario.to_possible_value().context("every scenario has a name")?;
        report[name.get_name()] = part;
    }
    if let Some(out) = &cli.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("report written to {}", out.display());
    }
    Ok(())
}
