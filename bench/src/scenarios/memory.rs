//! The `memory` scenario: a worker process's RSS under, after and across image loads, with
//! either allocator.

use std::time::Duration;

use serde_json::{Value, json};
use warren_e2e::{ConsumerProcess, settings_for};

use crate::Cli;
use crate::fleet::{drive, plan, resize_job, vhost};
use crate::procfs;

/// Peak RSS of a worker process under sustained image load, its RSS 30 s after the load, and
/// across ten load cycles, with each allocator (one binary, `WARREN_ALLOCATOR`).
pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let job = resize_job()?;
    let mut out = serde_json::Map::new();
    for allocator in ["jemalloc", "system"] {
        let v = vhost("bench-memory");
        let settings = settings_for(&v);
        let worker =
            ConsumerProcess::start(&v, &[("WARREN__CONSUMER__KINDS", "image.resize"), ("WARREN_ALLOCATOR", allocator)])
                .await;
        let pid: u32 = worker.pid().parse()?;
        let rss = || procfs::rss_mib(pid).unwrap_or(f64::NAN);
        let idle = rss();
        let peak = procfs::PeakRss::start(pid);
        let p = plan(cli.heavy_messages, cli.concurrency.min(32), 0.0);
        let settle = Duration::from_secs(cli.settle_secs);
        drive(&settings, &job, &p).await?;
        let first_peak = peak.peak_mib();
        tokio::time::sleep(settle).await;
        let after_first = rss();
        let mut after_each = vec![after_first];
        for _ in 1..10 {
            drive(&settings, &job, &p).await?;
            after_each.push(rss());
        }
        tokio::time::sleep(settle).await;
        let after_ten = rss();
        let all_peak = peak.peak_mib();
        drop(peak);
        drop(worker);
        let back = after_first / first_peak;
        // What the load added and did not give back; what the idle process held is not the load's.
        let back_above_idle = (after_first - idle) / (first_peak - idle);
        let growth = after_ten / after_first - 1.0;
        println!(
            "memory, {allocator}: idle {idle:.1} MiB, peak {first_peak:.1} MiB under load, {after_first:.1} MiB {}s \
             after ({:.0} % of peak; of what the load added, {:.0} % kept; target <= 25 %); after 10 cycles \
             {after_ten:.1} MiB ({:+.1} %, target <= +10 %), peak over all cycles {all_peak:.1} MiB; right after \
             each cycle {:.1?}",
            cli.settle_secs,
            back * 100.0,
            back_above_idle * 100.0,
            growth * 100.0,
            after_each
        );
        out.insert(
            allocator.to_owned(),
            json!({"idle_mib": idle, "peak_mib": first_peak, "after_settle_mib": after_first, "after_settle_of_peak": back,
                   "after_settle_of_load_added": back_above_idle, "settle_s": cli.settle_secs,
                   "after_ten_cycles_settled_mib": after_ten, "growth_over_ten_cycles": growth,
                   "peak_all_cycles_mib": all_peak, "right_after_each_cycle_mib": after_each,
                   "jobs_per_cycle": cli.heavy_messages}),
        );
    }
    Ok(Value::Object(out))
}
