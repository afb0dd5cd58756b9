//! The `console` scenario: does the status store keep up with the fleet at its highest rate on
//! this machine (the trivial `checksum` fleet)? Each pair runs the fleet with events on and a
//! plain queue bound to them (no console: the baseline) against the same fleet with
//! `warren-console` reading them, in this process, on SQLite and on PostgreSQL. Reported: both
//! rates and their ratio, how long after the last result every job was queryable (catch-up),
//! the event-to-queryable latency's p99 (from the console's histogram: the bucket it falls in),
//! the largest backlog seen, and the bytes the store takes per job.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warren_console::Console;
use warren_console::store::Store;
use warren_e2e::console::PgDatabase;
use warren_e2e::scrape::Scrape;
use warren_e2e::{TempDir, Vhost};

use crate::Cli;
use crate::fleet::{checksum_job, fleet_run_in, median, plan, vhost};

/// The console's lag histogram buckets, in seconds (console/src/metrics.rs).
const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let p = plan(cli.messages, cli.concurrency, 0.0);
    let mut out = json!({"jobs_per_run": cli.messages});
    for backend in ["sqlite", "postgres"] {
        let (mut base, mut with) = (Vec::new(), Vec::new());
        let mut runs = Vec::new();
        for i in 0..cli.pairs {
            let baseline = async {
                let v = vhost("bench-console-off");
                crate::scenarios::events::bind_every_event(&warren_e2e::settings_for(&v)).await?;
                fleet_run_in(&v, &["checksum"], &checksum_job(), &p, |_| ()).await
            };
            let (b, run) = if i % 2 == 0 {
                let b = baseline.await?;
                (b, with_console(backend, cli.messages, &p).await?)
            } else {
                let r = with_console(backend, cli.messages, &p).await?;
                (baseline.await?, r)
            };
            println!(
                "console {backend} pair {}: fleet {:.0} jobs/s without a console, {:.0} with; every job queryable {:.2} s after the last result, lag p99 <= {} s, backlog peak {}, {:.0} bytes/job",
                i + 1,
                b.rate(),
                run["rate"].as_f64().unwrap_or(0.0),
                run["catch_up_s"].as_f64().unwrap_or(f64::NAN),
                run["lag_p99_s_at_most"],
                run["backlog_peak"],
                run["bytes_per_job"].as_f64().unwrap_or(0.0),
            );
            base.push(b.rate());
            with.push(run["rate"].as_f64().unwrap_or(0.0));
            runs.push(run);
        }
        let (b, w) = (median(base.clone()), median(with.clone()));
        let catch_up = median(runs.iter().filter_map(|r| r["catch_up_s"].as_f64()).collect());
        let lag = median(runs.iter().filter_map(|r| r["lag_p99_s_at_most"].as_f64()).collect());
        println!(
            "console {backend}: median {b:.0} jobs/s without, {w:.0} with (ratio {:.3}); catch-up {catch_up:.2} s; lag p99 <= {lag} s (target < 1 s)",
            w / b
        );
        out[backend] = json!({"without_console_jobs_per_s": base, "with_console_jobs_per_s": with, "ratio": w / b,
                              "median_catch_up_s": catch_up, "median_lag_p99_s_at_most": lag, "runs": runs});
    }
    Ok(out)
}

/// One fleet run with a console reading its events on `backend`; returns its figures.
async fn with_console(backend: &str, jobs: u64, p: &warren_producer::load::LoadPlan) -> anyhow::Result<Value> {
    let v: Vhost = vhost("bench-console-on");
    let dir = TempDir::new("warren-bench-console")?;
    let pg = (backend == "postgres").then(|| PgDatabase::create("bench"));
    let mut settings = warren_e2e::settings_for(&v);
    settings.console.addr = "127.0.0.1:0".into();
    settings.console.database_url = match &pg {
        Some(db) => db.url(),
        None => format!("sqlite://{}", dir.path().join("console.db").display()),
    };
    let console = Console::start(settings.clone()).await?;
    let addr = console.addr;
    let scrape = move || tokio::task::block_in_place(|| Scrape::take(addr));
    let started = Instant::now();
    while scrape().value("warren_console_connected", &[]) < 1.0 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the console did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The backlog gauge (the console refreshes it every 5 s), read every second while it runs.
    let peak = std::sync::Arc::new(std::sync::Mutex::new(0.0f64));
    let watching = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now =
                    tokio::task::block_in_place(|| Scrape::take(addr)).value("warren_console_backlog_messages", &[]);
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(now);
                }
            }
        }
    });
    let report = fleet_run_in(&v, &["checksum"], &checksum_job(), p, |_| ()).await?;
    let done = Instant::now();
    let want = 3.0 * jobs as f64;
    while scrape().value("warren_console_events_total", &[("outcome", "stored")]) < want {
        anyhow::ensure!(done.elapsed() < Duration::from_secs(300), "the console did not store every event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let catch_up = done.elapsed().as_secs_f64();
    watching.abort();
    let m = scrape();
    let count = m.value("warren_console_event_lag_seconds_count", &[]);
    let p99 = BUCKETS
        .iter()
        .find(|b| m.value("warren_console_event_lag_seconds_bucket", &[("le", &b.to_string())]) >= 0.99 * count)
        .copied();
    let backlog_peak = peak.lock().map(|p| *p).unwrap_or(f64::NAN);
    console.shutdown().await;
    let store = Store::open(&settings.console.database_url).await?;
    let (stored_jobs, events) = store.size().await?;
    let bytes = store.bytes().await?;
    store.close().await;
    anyhow::ensure!(stored_jobs == jobs as i64, "{stored_jobs} of {jobs} jobs in the store");
    Ok(json!({
        "rate": report.rate(),
        "catch_up_s": catch_up,
        "lag_p99_s_at_most": p99,
        "lag_events": count,
        "backlog_peak": backlog_peak,
        "events": events,
        "bytes": bytes,
        "bytes_per_job": bytes as f64 / jobs as f64,
    }))
}
