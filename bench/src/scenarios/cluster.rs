//! The `cluster` scenario: the fleet's trivial `checksum` jobs on classic queues on the one
//! default node against quorum queues on the three-node cluster of `scripts/cluster.sh`, run on
//! this same machine (so the three nodes share its cores with the default node, the worker and
//! the load generator: the figures show what replication costs in CPU and round trips here,
//! not what three hosts would do).

use serde_json::{Value, json};
use warren_e2e::cluster::Cluster;
use warren_infra::settings::QueueType;

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run, fleet_run_in, median, plan};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let cluster = tokio::task::block_in_place(Cluster::get);
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let (mut classic, mut quorum) = (Vec::new(), Vec::new());
    for i in 0..cli.pairs {
        let c = fleet_run("bench-classic", &["checksum"], &checksum_job(), &p, |_| ()).await?;
        let v = tokio::task::block_in_place(|| cluster.vhost("bench-quorum"));
        let q = fleet_run_in(&v, &["checksum"], &checksum_job(), &p, |s| {
            // Worker and load generator on different nodes, as a fleet spread over a cluster is.
            s.broker.url = cluster.urls(&v, &[0, 1, 2]);
            s.topology.queue_type = QueueType::Quorum;
        })
        .await?;
        let figures = |r: &warren_producer::load::LoadReport| {
            (r.rate(), r.latency_ms(0.5).unwrap_or(f64::NAN), r.latency_ms(0.99).unwrap_or(f64::NAN))
        };
        let (c, q) = (figures(&c), figures(&q));
        println!(
            "cluster pair {}: classic on one node {:.0} jobs/s p50 {:.1} p99 {:.1} ms; quorum on 3 nodes {:.0} jobs/s p50 \
             {:.1} p99 {:.1} ms",
            i + 1,
            c.0,
            c.1,
            c.2,
            q.0,
            q.1,
            q.2
        );
        classic.push(c);
        quorum.push(q);
    }
    let m = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (cr, qr) = (m(&classic, |x| x.0), m(&quorum, |x| x.0));
    println!(
        "cluster: median classic {cr:.0} jobs/s (p99 {:.1} ms), quorum on 3 nodes {qr:.0} jobs/s (p99 {:.1} ms), ratio {:.2}",
        m(&classic, |x| x.2),
        m(&quorum, |x| x.2),
        qr / cr
    );
    let side = |v: &[(f64, f64, f64)]| {
        json!({"jobs_per_s": v.iter().map(|x| x.0).collect::<Vec<_>>(), "median_jobs_per_s": m(v, |x| x.0),
               "median_p50_ms": m(v, |x| x.1), "median_p99_ms": m(v, |x| x.2)})
    };
    Ok(json!({"classic_one_node": side(&classic), "quorum_three_nodes": side(&quorum), "ratio": qr / cr}))
}
