//! The `relay` scenario: the fleet running the trivial `checksum` kind against a raw lapin relay
//! ([`crate::relay`]) with the same prefetch, confirm-then-ack pattern and message size; results
//! answered to the producer's `reply_to` queue, then (a second series) to the results exchange.

use serde_json::{Value, json};

use crate::Cli;
use crate::fleet::{AnswerTo, checksum_job, fleet_run_to, median, plan, process_run, relay_run_to};
use crate::procfs::{CpuMeter, CpuUsed};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let reply_to = series(cli, AnswerTo::ReplyTo).await?;
    let results = series(cli, AnswerTo::ResultsExchange).await?;
    let mut out = reply_to.clone();
    out["results_exchange"] = results;
    out["cpu_s_per_job"] = cpu(cli).await?;
    Ok(out)
}

/// CPU per job of the trivial job's fleet with the worker as its own process (the release
/// binary): the worker, the load generator (this process) and the broker, each apart.
async fn cpu(cli: &Cli) -> anyhow::Result<Value> {
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let mut runs = Vec::new();
    for _ in 0..cli.pairs {
        let (report, used) = process_run("bench-checksum", "checksum", &[], None, &checksum_job(), &p, |_| ()).await?;
        let used = used.per_job(cli.messages);
        println!("checksum fleet as a process: {:.0} jobs/s, {}", report.rate(), used.describe());
        runs.push(used);
    }
    let used = CpuUsed::median(&runs);
    println!("checksum fleet as a process, median CPU per job: {}", used.describe());
    Ok(used.json(0.0))
}

async fn series(cli: &Cli, to: AnswerTo) -> anyhow::Result<Value> {
    let name = match to {
        AnswerTo::ReplyTo => "reply_to",
        AnswerTo::ResultsExchange => "results exchange",
    };
    let (mut relay, mut fleet) = (Vec::new(), Vec::new());
    // CPU per job of this process (load generator with the relay or the fleet) and the broker.
    let (mut relay_cpu, mut fleet_cpu) = (Vec::new(), Vec::new());
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let metered = |used: CpuUsed| used.per_job(cli.messages);
    for i in 0..cli.pairs {
        let run_relay = async {
            let meter = CpuMeter::start();
            let r = relay_run_to(&checksum_job(), &p, to).await?;
            anyhow::Ok((r, metered(meter.stop())))
        };
        let run_fleet = async {
            let meter = CpuMeter::start();
            let f = fleet_run_to("bench-fleet", &["checksum"], &checksum_job(), &p, to).await?;
            anyhow::Ok((f, metered(meter.stop())))
        };
        // Odd pairs run the relay first, even pairs the fleet first.
        let ((r, rc), (f, fc)) = if i % 2 == 0 {
            let r = run_relay.await?;
            (r, run_fleet.await?)
        } else {
            let f = run_fleet.await?;
            (run_relay.await?, f)
        };
        println!(
            "relay pair {} (results to {name}): relay {:.0} jobs/s, fleet {:.0} jobs/s; CPU/job in ms, relay + load \
             generator {:.3}, broker {:.3}; fleet + load generator {:.3}, broker {:.3}",
            i + 1,
            r.rate(),
            f.rate(),
            rc.own * 1e3,
            rc.broker * 1e3,
            fc.own * 1e3,
            fc.broker * 1e3
        );
        relay.push(r.rate());
        fleet.push(f.rate());
        relay_cpu.push(rc);
        fleet_cpu.push(fc);
    }
    let (r, f) = (median(relay.clone()), median(fleet.clone()));
    let (rc, fc) = (CpuUsed::median(&relay_cpu), CpuUsed::median(&fleet_cpu));
    println!(
        "relay (results to {name}): median relay {r:.0} jobs/s, fleet {f:.0} jobs/s, ratio {:.2} (target >= 0.95); \
         median CPU/job in ms: relay + load generator {:.3}, broker {:.3}; fleet + load generator {:.3}, broker {:.3}",
        f / r,
        rc.own * 1e3,
        rc.broker * 1e3,
        fc.own * 1e3,
        fc.broker * 1e3
    );
    let cpu = |c: &CpuUsed| json!({"process_s_per_job": c.own, "broker_s_per_job": c.broker});
    Ok(json!({"relay_jobs_per_s": relay, "fleet_jobs_per_s": fleet, "median_relay": r, "median_fleet": f,
              "ratio": f / r, "cpu_relay": cpu(&rc), "cpu_fleet": cpu(&fc)}))
}
