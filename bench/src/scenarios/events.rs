//! The `events` scenario: what lifecycle events cost. The trivial `checksum` fleet with events
//! off (`topology.events_exchange = ""`) against events on, with a queue bound to every event
//! (`#`, as a status store would bind one) so that the broker routes and stores each of them;
//! in pairs, alternating which runs first.

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run_in, median, plan, vhost};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..cli.pairs {
        let run_off = async {
            let v = vhost("bench-events-off");
            fleet_run_in(&v, &["checksum"], &checksum_job(), &p, |s| s.topology.events_exchange = String::new()).await
        };
        let run_on = async {
            let v = vhost("bench-events-on");
            bind_every_event(&warren_e2e::settings_for(&v)).await?;
            fleet_run_in(&v, &["checksum"], &checksum_job(), &p, |_| ()).await
        };
        let (o, n) = if i % 2 == 0 {
            let o = run_off.await?;
            (o, run_on.await?)
        } else {
            let n = run_on.await?;
            (run_off.await?, n)
        };
        println!(
            "events pair {}: off {:.0} jobs/s, on {:.0} jobs/s (3 events a job, routed to a queue)",
            i + 1,
            o.rate(),
            n.rate()
        );
        off.push(o.rate());
        on.push(n.rate());
    }
    let (o, n) = (median(off.clone()), median(on.clone()));
    println!("events: median off {o:.0} jobs/s, on {n:.0} jobs/s, ratio {:.3} (target >= 0.97)", n / o);
    Ok(json!({"off_jobs_per_s": off, "on_jobs_per_s": on, "median_off": o, "median_on": n, "ratio": n / o}))
}

/// A durable queue bound to the events exchange with `#`.
pub async fn bind_every_event(settings: &warren_infra::Settings) -> anyhow::Result<()> {
    let conn = warren_infra::connect(&settings.broker, "bench-events").await?;
    let ch = conn.create_channel().await?;
    warren_infra::topology::declare(&ch, settings).await?;
    let exchange = settings.topology.events_exchange.as_str();
    ch.queue_declare(
        "bench.events".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        "bench.events".into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = conn.close(200, "bound".into()).await;
    Ok(())
}
