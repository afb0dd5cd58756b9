//! The `prefetch` scenario: the fleet's throughput by prefetch per pool slot.

use serde_json::{Value, json};
use warren_common::Job;

use crate::Cli;
use crate::fleet::{checksum_job, cores, fleet_run, median, plan, resize_job};

/// Throughput by prefetch, per pool slot: for trivial `checksum` jobs, whose delivery is held
/// mostly while the result's confirm comes back, and for `image.resize` jobs, which hold a slot
/// for milliseconds. Shows what [`warren_consumer::app::PREFETCH_PER_SLOT`] buys and costs.
pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let image = resize_job()?;
    let cases: [(&str, &str, Job, u64); 2] =
        [("checksum", "checksum", checksum_job(), cli.messages), ("image", "image.resize", image, cli.heavy_messages)];
    let per_slot = [1usize, 2, 4, 8];
    let mut out = serde_json::Map::new();
    for (name, kind, job, count) in cases {
        let p = plan(count, cli.concurrency, 0.0);
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); per_slot.len()];
        for _ in 0..cli.pairs {
            for (i, k) in per_slot.iter().enumerate() {
                let prefetch = u16::try_from(k * cores()).unwrap_or(u16::MAX);
                let r = fleet_run("bench-prefetch", &[kind], &job, &p, |s| s.consumer.prefetch = prefetch).await?;
                runs[i].push(r.rate());
            }
        }
        let mut row = serde_json::Map::new();
        for (k, rates) in per_slot.iter().zip(runs) {
            let m = median(rates.clone());
            println!("prefetch: {name}, {k} per slot ({} in all): median {m:.0} jobs/s {rates:.0?}", k * cores());
            row.insert(k.to_string(), json!({"prefetch": k * cores(), "jobs_per_s": rates, "median": m}));
        }
        out.insert(name.to_owned(), Value::Object(row));
    }
    Ok(Value::Object(out))
}
