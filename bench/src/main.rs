//! `warren-bench`: how much does the fleet cost over doing the work directly? Each scenario runs
//! a baseline and the fleet alternately (`--pairs` times, fresh vhost each run), on the local
//! broker, and reports medians and the fleet/baseline ratio; `--out` writes a JSON report.
//!
//! Scenarios: `relay` (a raw lapin relay with the same prefetch, confirm-then-ack pattern and
//! message size vs the fleet running the trivial `checksum` kind), `image` (decode-resize-encode
//! in-process on all cores vs the fleet's `image.resize`), `ml` (ONNX Runtime in-process at batch
//! sizes 1..32 vs the fleet's `ml.classify`), `latency` (p50/p95/p99 at 50% of the relay's
//! maximum rate, fleet vs relay).

mod relay;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Job, Limits};
use warren_e2e::{Fleet, Vhost, repo_root, settings_for};
use warren_infra::Settings;
use warren_producer::load::{self, LoadPlan, LoadReport};
use warren_producer::{Producer, PublishOptions};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(about = "Side-by-side benchmarks of the Warren fleet against its baselines")]
struct Cli {
    /// Baseline/fleet pairs per scenario.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Comma-separated: relay, prefetch, image, ml, latency.
    #[arg(long, default_value = "relay,prefetch,image,ml,latency")]
    scenarios: String,
    /// Jobs per run of the relay and latency scenarios.
    #[arg(long, default_value_t = 3000)]
    messages: u64,
    /// Jobs per run of the image and ml scenarios.
    #[arg(long, default_value_t = 300)]
    heavy_messages: u64,
    /// Jobs in flight from the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Write the JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn vhost(label: &str) -> Vhost {
    tokio::task::block_in_place(|| Vhost::create(label))
}

fn plan(count: u64, concurrency: usize, rate: f64) -> LoadPlan {
    LoadPlan { count, rate, concurrency, wait: true, result_timeout: Duration::from_secs(300) }
}

async fn drive(settings: &Settings, job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    let mut producer = Producer::connect(settings.clone()).await?;
    producer.enable_replies().await?;
    let report = load::run(&producer, job.clone(), PublishOptions::default(), plan).await;
    producer.close().await;
    anyhow::ensure!(report.ok == plan.count, "only {} of {} jobs succeeded", report.ok, plan.count);
    Ok(report)
}

async fn fleet_run(label: &str, kinds: &[&str], job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    fleet_run_with(label, kinds, job, plan, |_| ()).await
}

/// A fleet run whose settings `tune` adjusts first.
async fn fleet_run_with(
    label: &str,
    kinds: &[&str],
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
) -> anyhow::Result<LoadReport> {
    let v = vhost(label);
    let mut settings = settings_for(&v);
    settings.consumer.kinds = kinds.iter().map(|k| (*k).to_owned()).collect();
    tune(&mut settings);
    let fleet = Fleet::start(settings.clone()).await;
    let report = drive(&settings, job, plan).await;
    fleet.stop().await;
    report
}

async fn relay_run(job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    let v = vhost("bench-relay");
    let settings = settings_for(&v);
    let producer = Producer::connect(settings.clone()).await?;
    producer.declare_topology().await?;
    producer.close().await;
    // The same prefetch the fleet uses by default (its pool has one slot per core).
    let prefetch = warren_consumer::app::default_prefetch(&settings, cores());
    let relay = relay::Relay::start(&settings, "warren.checksum", prefetch).await?;
    let report = drive(&settings, job, plan).await;
    relay.stop().await;
    report
}

fn checksum_job() -> Job {
    Job::Checksum(ChecksumJob { data: vec![7; 1024], rounds: 1 })
}

fn resize_job() -> anyhow::Result<Job> {
    let image = std::fs::read(repo_root().join("samples/images/china.jpg")).context("sample photo")?;
    Ok(Job::Resize(ResizeJob {
        image,
        width: 256,
        height: 256,
        mode: ResizeMode::Fit,
        filter: Filter::Triangle,
        format: None,
        quality: Some(85),
    }))
}

async fn scenario_relay(cli: &Cli) -> anyhow::Result<Value> {
    let (mut relay, mut fleet) = (Vec::new(), Vec::new());
    let p = plan(cli.messages, cli.concurrency, 0.0);
    for i in 0..cli.pairs {
        let r = relay_run(&checksum_job(), &p).await?;
        let f = fleet_run("bench-fleet", &["checksum"], &checksum_job(), &p).await?;
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

/// Throughput by prefetch, per pool slot: for trivial `checksum` jobs, whose delivery is held
/// mostly while the result's confirm comes back, and for `image.resize` jobs, which hold a slot
/// for milliseconds. Shows what [`warren_consumer::app::PREFETCH_PER_SLOT`] buys and costs.
async fn scenario_prefetch(cli: &Cli) -> anyhow::Result<Value> {
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
                let r = fleet_run_with("bench-prefetch", &[kind], &job, &p, |s| s.consumer.prefetch = prefetch).await?;
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

fn in_process_resize(job: &Job, n: u64) -> anyhow::Result<f64> {
    let Job::Resize(job) = job else { anyhow::bail!("not a resize job") };
    let threads = cores();
    let limits = Limits::default();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (job, limits) = (job, &limits);
            s.spawn(move || {
                let mine = n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                for _ in 0..mine {
                    let _ = warren_common::resize::resize(job, limits);
                }
            });
        }
    });
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn scenario_image(cli: &Cli) -> anyhow::Result<Value> {
    let job = resize_job()?;
    let (mut local, mut fleet) = (Vec::new(), Vec::new());
    let p = plan(cli.heavy_messages, cli.concurrency.min(32), 0.0);
    for i in 0..cli.pairs {
        let l = tokio::task::block_in_place(|| in_process_resize(&job, cli.heavy_messages))?;
        let f = fleet_run("bench-image", &["image.resize"], &job, &p).await?;
        println!("image pair {}: in-process {l:.1} jobs/s, fleet {:.1} jobs/s", i + 1, f.rate());
        local.push(l);
        fleet.push(f.rate());
    }
    let (l, f) = (median(local.clone()), median(fleet.clone()));
    println!("image: median in-process {l:.1} jobs/s, fleet {f:.1} jobs/s, ratio {:.2} (target >= 0.85)", f / l);
    Ok(
        json!({"in_process_jobs_per_s": local, "fleet_jobs_per_s": fleet, "median_in_process": l, "median_fleet": f, "ratio": f / l}),
    )
}

async fn scenario_ml(cli: &Cli) -> anyhow::Result<Value> {
    use warren_common::classify::{Classifier as _, preprocess_batch};
    let settings = Settings::load(&repo_root().join("config"))?;
    let model = tokio::task::block_in_place(|| warren_consumer::onnx::OrtClassifier::load(&settings.model, None))?;
    let png = std::fs::read(repo_root().join("models/digits/samples/001_label4.png"))?;
    let img = warren_common::image_io::decode(&png, &Limits::default())?.0;
    let mut by_batch = serde_json::Map::new();
    let mut full_by_batch = serde_json::Map::new();
    let mut best = 0.0f64;
    let limits = Limits::default();
    for batch in [1usize, 2, 4, 8, 16, 32] {
        // Inference alone.
        let images = vec![img.clone(); batch];
        let input = preprocess_batch(&images, model.spec())?;
        let rounds = (4000 / batch).max(50);
        let start = Instant::now();
        for _ in 0..rounds {
            model.infer(input.clone())?;
        }
        let infer_rate = (rounds * batch) as f64 / start.elapsed().as_secs_f64();
        // The whole job as the fleet does it: decode, check, preprocess, infer, softmax, top-k.
        let jobs: Vec<ClassifyJob> = (0..batch).map(|_| ClassifyJob { image: png.clone(), top_k: Some(1) }).collect();
        let refs: Vec<&ClassifyJob> = jobs.iter().collect();
        let start = Instant::now();
        for _ in 0..rounds {
            let _ = warren_common::classify::classify_batch(&refs, &model, &limits);
        }
        let full_rate = (rounds * batch) as f64 / start.elapsed().as_secs_f64();
        println!(
            "ml in-process: batch {batch:>2}: inference {infer_rate:.0} images/s, whole job {full_rate:.0} jobs/s"
        );
        best = best.max(full_rate);
        by_batch.insert(batch.to_string(), json!(infer_rate));
        full_by_batch.insert(batch.to_string(), json!(full_rate));
    }
    let job = Job::Classify(ClassifyJob { image: png, top_k: Some(1) });
    let mut fleet = Vec::new();
    for _ in 0..cli.pairs {
        let f =
            fleet_run("bench-ml", &["ml.classify"], &job, &plan(cli.messages.min(2000), cli.concurrency, 0.0)).await?;
        println!("ml fleet: {:.0} jobs/s, p99 {:.1} ms", f.rate(), f.latency_ms(0.99).unwrap_or(f64::NAN));
        fleet.push(f.rate());
    }
    let f = median(fleet.clone());
    println!(
        "ml: best in-process {best:.0} jobs/s (whole job, one thread), fleet {f:.0} jobs/s, ratio {:.2} (target >= 0.8)",
        f / best
    );
    Ok(
        json!({"in_process_inference_images_per_s_by_batch": by_batch, "in_process_whole_job_per_s_by_batch": full_by_batch,
              "best_in_process": best, "fleet_jobs_per_s": fleet, "median_fleet": f, "ratio": f / best}),
    )
}

async fn scenario_latency(cli: &Cli, relay_max: Option<f64>) -> anyhow::Result<Value> {
    let max = match relay_max {
        Some(m) => m,
        None => relay_run(&checksum_job(), &plan(cli.messages, cli.concurrency, 0.0)).await?.rate(),
    };
    let rate = max / 2.0;
    let count = ((rate * 10.0) as u64).clamp(200, cli.messages);
    let p = plan(count, cli.concurrency, rate);
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    for i in 0..cli.pairs {
        let r = relay_run(&checksum_job(), &p).await?;
        let f = fleet_run("bench-latency", &["checksum"], &checksum_job(), &p).await?;
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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let wanted: Vec<&str> = cli.scenarios.split(',').map(str::trim).collect();
    let mut report = json!({
        "machine": {"cores": cores()},
        "pairs": cli.pairs,
    });
    let mut relay_max = None;
    if wanted.contains(&"relay") {
        let r = scenario_relay(&cli).await?;
        relay_max = r["median_relay"].as_f64();
        report["relay"] = r;
    }
    if wanted.contains(&"prefetch") {
        report["prefetch"] = scenario_prefetch(&cli).await?;
    }
    if wanted.contains(&"image") {
        report["image"] = scenario_image(&cli).await?;
    }
    if wanted.contains(&"ml") {
        report["ml"] = scenario_ml(&cli).await?;
    }
    if wanted.contains(&"latency") {
        report["latency"] = scenario_latency(&cli, relay_max).await?;
    }
    if let Some(out) = &cli.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("report written to {}", out.display());
    }
    Ok(())
}
