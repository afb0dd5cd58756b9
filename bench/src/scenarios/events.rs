//! The `events` scenario: what lifecycle events cost. The trivial `checksum` fleet with events
//! off (`topology.events_exchange = ""`) against events on, with a queue bound to every event
//! (`#`, as a status store would bind one) so that the broker routes and stores each of them,
//! and nobody reads it (a console that is away: the broker's worst case). Events on are run
//! twice: transient (the default) and persistent (`consumer.events_persistent`). Each round
//! runs the three in another order; CPU per job is measured for this process (the fleet and
//! the load generator) and for the broker.

use serde_json::{Value, json};

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run_in, median, plan, vhost};
use crate::procfs::{CpuMeter, CpuUsed};

#[derive(Clone, Copy)]
enum Events {
    Off,
    Transient,
    Persistent,
}

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let all = [Events::Off, Events::Transient, Events::Persistent];
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpus: [Vec<CpuUsed>; 3] = Default::default();
    for round in 0..cli.pairs {
        for k in 0..3 {
            let i = (round + k) % 3;
            let (rate, cpu) = fleet(all[i], &p).await?;
            rates[i].push(rate);
            cpus[i].push(cpu);
        }
        println!(
            "events round {}: off {:.0} jobs/s ({}), transient {:.0} ({}), persistent {:.0} ({})",
            round + 1,
            rates[0][round],
            describe(&cpus[0][round]),
            rates[1][round],
            describe(&cpus[1][round]),
            rates[2][round],
            describe(&cpus[2][round]),
        );
    }
    let m: Vec<f64> = rates.iter().map(|r| median(r.clone())).collect();
    let c: Vec<CpuUsed> = cpus.iter().map(|c| CpuUsed::median(c)).collect();
    let (transient, persistent) = (m[1] / m[0], m[2] / m[0]);
    // Each round's runs are seconds apart, so the noise of a shared machine (its off
    // runs vary by a quarter) weighs less on the ratio within a round.
    let paired = |i: usize| median(rates[0].iter().zip(&rates[i]).map(|(off, on)| on / off).collect());
    let (paired_transient, paired_persistent) = (paired(1), paired(2));
    println!(
        "events: median off {:.0} jobs/s, transient {:.0}, persistent {:.0}: ratio {transient:.3}, persistent {persistent:.3}",
        m[0], m[1], m[2]
    );
    println!(
        "events: median of each round's ratio: transient {paired_transient:.3} (target >= 0.97), persistent {paired_persistent:.3}"
    );
    println!("events: median off {}; transient {}; persistent {}", describe(&c[0]), describe(&c[1]), describe(&c[2]));
    let cpu = |c: &CpuUsed| json!({"fleet_and_load_generator": c.own, "broker": c.broker});
    Ok(json!({
        "off_jobs_per_s": rates[0], "on_jobs_per_s": rates[1], "persistent_jobs_per_s": rates[2],
        "median_off": m[0], "median_on": m[1], "median_persistent": m[2],
        "ratio": transient, "ratio_persistent": persistent,
        "paired_ratio": paired_transient, "paired_ratio_persistent": paired_persistent,
        "cpu_s_per_job": {"off": cpu(&c[0]), "on": cpu(&c[1]), "persistent": cpu(&c[2])},
    }))
}

/// One fleet run: its rate, and the CPU per job of this process and of the broker.
async fn fleet(events: Events, p: &warren_producer::load::LoadPlan) -> anyhow::Result<(f64, CpuUsed)> {
    let v = vhost("bench-events");
    if !matches!(events, Events::Off) {
        bind_every_event(&warren_e2e::settings_for(&v)).await?;
    }
    let cpu = CpuMeter::start();
    let report = fleet_run_in(&v, &["checksum"], &checksum_job(), p, |s| match events {
        Events::Off => s.topology.events_exchange = String::new(),
        Events::Transient => s.consumer.events_persistent = false,
        Events::Persistent => s.consumer.events_persistent = true,
    })
    .await?;
    Ok((report.rate(), cpu.stop().per_job(p.count)))
}

/// "CPU/job 0.61 ms: fleet and load generator 0.35, broker 0.26" (the fleet runs in this process).
fn describe(c: &CpuUsed) -> String {
    format!(
        "CPU/job {:.3} ms: fleet and load generator {:.3}, broker {:.3}",
        (c.own + c.broker) * 1e3,
        c.own * 1e3,
        c.broker * 1e3
    )
}

/// A durable queue `bench.events` bound to the events exchange with `#`, nobody reading it.
pub async fn bind_every_event(settings: &warren_infra::Settings) -> anyhow::Result<()> {
    let (conn, _) = warren_e2e::listen_to_every_event(settings, "bench.events").await;
    let _ = conn.close(200, "bound".into()).await;
    Ok(())
}
