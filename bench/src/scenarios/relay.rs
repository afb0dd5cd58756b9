//! The `relay` scenario: the fleet running the trivial `checksum` kind against a raw lapin relay
//! ([`crate::relay`]) with the same prefetch, confirm-then-ack pattern and message size; results
//! answered to the producer's `reply_to` queue, then (a second series) to the results exchange.

use serde_json::{Value, json};

use crate::Cli;
use crate::fleet::{AnswerTo, checksum_job, fleet_run_to, median, plan, relay_run_to};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let reply_to = series(cli, AnswerTo::ReplyTo).await?;
    let results = series(cli, AnswerTo::ResultsExchange).await?;
    let mut out = reply_to.clone();
    out["results_exchange"] = results;
    Ok(out)
}

async fn series(cli: &Cli, to: AnswerTo) -> anyhow::Result<Value> {
    let name = match to {
        AnswerTo::ReplyTo => "reply_to",
        AnswerTo::ResultsExchange => "results exchange",
    };
    let (mut relay, mut fleet) = (Vec::new(), Vec::new());
    let p = plan(cli.messages, cli.concurrency, 0.0);
    for i in 0..cli.pairs {
        let r = relay_run_to(&checksum_job(), &p, to).await?;
        let f = fleet_run_to("bench-fleet", &["checksum"], &checksum_job(), &p, to).await?;
        println!(
            "relay pair {} (results to {name}): relay {:.0} jobs/s, fleet {:.0} jobs/s",
            i + 1,
            r.rate(),
            f.rate()
        );
        relay.push(r.rate());
        fleet.push(f.rate());
    }
    let (r, f) = (median(relay.clone()), median(fleet.clone()));
    println!(
        "relay (results to {name}): median relay {r:.0} jobs/s, fleet {f:.0} jobs/s, ratio {:.2} (target >= 0.95)",
        f / r
    );
    Ok(
        json!({"relay_jobs_per_s": relay, "fleet_jobs_per_s": fleet, "median_relay": r, "median_fleet": f, "ratio": f / r}),
    )
}
