//! The `latency` scenario: p50/p95/p99 of `checksum` jobs at half the relay's maximum rate,
//! fleet vs relay.

use serde_json::{Value, json};
use warren_producer::load::LoadReport;

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run, median, plan, relay_run};

/// `relay_max` is the relay scenario's median rate when it ran; otherwise one relay run
/// measures it first.
pub async fn run(cli: &Cli, relay_max: Option<f64>) -> anyhow::Result<Value> {
    let max = match relay_max {
        Some(m) => m,
        None => relay_run(&checksum_job(), &plan(cli.messages, cli.concurrency, 0.0)).await?.rate(),
    };
    let rate = max / 2.0;
    let count = ((rate * 10.0) as u64).max(200).min(cli.messages);
    let p = plan(count, cli.concurrency, rate);
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    for i in 0..cli.pairs {
        let r = relay_run(&checksum_job(), &p).await?;
        let f = fleet_run("bench-latency", &["checksum"], &checksum_job(), &p, |_| ()).await?;
        let q = |rep: &LoadReport| [0.5, 0.95, 0.99].map(|x| rep.latency_ms(x).unwrap_or(f64::NAN));
        let (rq, fq) = (q(&r), q(&f));
        println!(
            "latency pair {} at {rate:.0} jobs/s: relay p50/p95/p99 {:.1}/{:.1}/{:.1} ms, fleet {:.1}/{:.1}/{:.1} ms",
            i + 1,
            rq[0],
            rq[1],
            rq[2],
            fq[0],
            fq[1],
            fq[2]
        );
        rows.push((rq, fq));
        out.push(json!({"relay_ms": rq, "fleet_ms": fq}));
    }
    let med = |pick: fn(&([f64; 3], [f64; 3])) -> f64| median(rows.iter().map(pick).collect());
    let summary = json!({
        "offered_rate": rate,
        "relay_p50_p95_p99_ms": [med(|r| r.0[0]), med(|r| r.0[1]), med(|r| r.0[2])],
        "fleet_p50_p95_p99_ms": [med(|r| r.1[0]), med(|r| r.1[1]), med(|r| r.1[2])],
        "runs": out,
    });
    println!("latency: medians {summary}");
    Ok(summary)
}
