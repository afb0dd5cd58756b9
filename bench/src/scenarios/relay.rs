//! The `relay` scenario: the fleet running the trivial `checksum` kind against a raw lapin relay
//! ([`crate::relay`]) with the same prefetch, confirm-then-ack pattern and message size.

use serde_json::{Value, json};

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run, median, plan, relay_run};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let (mut relay, mut fleet) = (Vec::new(), Vec::new());
    let p = plan(cli.messages, cli.concurrency, 0.0);
    for i in 0..cli.pairs {
        let r = relay_run(&checksum_job(), &p).await?;
        let f = fleet_run("bench-fleet", &["checksum"], &checksum_job(), &p, |_| ()).await?;
        println!("relay pair {}: relay {:.0} jobs/s, fleet {:.0} jobs/s", i + 1, r.rate(), f.rate());
        relay.push(r.rate());
        fleet.push(f.rate());
    }
    let (r, f) = (median(relay.clone()), median(fleet.clone()));
    println!("relay: median relay {r:.0} jobs/s, fleet {f:.0} jobs/s, ratio {:.2} (target >= 0.8)", f / r);
    Ok(
        json!({"relay_jobs_per_s": relay, "fleet_jobs_per_s": fleet, "median_relay": r, "median_fleet": f, "ratio": f / r}),
    )
}
