//! `warren-bench`: how much does the fleet cost over doing the work directly? Each scenario runs
//! a baseline and the fleet alternately (`--pairs` times, fresh vhost each run), on the local
//! broker, and reports medians and the fleet/baseline ratio; `--out` writes a JSON report.
//!
//! Scenarios: `relay` (a raw lapin relay with the same prefetch, confirm-then-ack pattern and
//! message size vs the fleet running the trivial `checksum` kind), `image` (decode-resize-encode
//! in-process on all cores vs the fleet's `image.resize`), `ml` (ONNX Runtime in-process at batch
//! sizes 1..32 vs the fleet's `ml.classify`), `latency` (p50/p95/p99 at 50% of the relay's
//! maximum rate, fleet vs relay), `prefetch` (the fleet's throughput by prefetch per pool slot)
//! and `memory` (a worker's RSS under, after and across image loads, with either allocator),
//! `publish` (the channel-pool publisher vs all publishes on one confirm channel).

mod procfs;
mod publish;
mod relay;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, Pipeline, ResizeJob, ResizeMode, resize, resize_with};
use warren_common::{Job, Limits};
use warren_consumer::onnx::OrtClassifier;
use warren_e2e::{ConsumerProcess, Fleet, Vhost, repo_root, settings_for};
use warren_infra::Settings;
use warren_producer::load::{self, LoadPlan, LoadReport};
use warren_producer::{Producer, PublishOptions};

use crate::procfs::{CpuMeter, CpuUsed};

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

#[derive(Parser, Debug)]
#[command(about = "Side-by-side benchmarks of the Warren fleet against its baselines")]
struct Cli {
    /// Baseline/fleet pairs per scenario.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Comma-separated: relay, prefetch, image, ml, latency, memory, publish.
    #[arg(long, default_value = "relay,prefetch,image,ml,latency,memory,publish")]
    scenarios: String,
    /// Jobs per run of the relay and latency scenarios.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Jobs per run of the image and ml scenarios.
    #[arg(long, default_value_t = 1000)]
    heavy_messages: u64,
    /// Jobs in flight from the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long the memory scenario waits after a load before reading RSS.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// Shortest measurement of each in-process rate (pipelines, ML batch sizes), in ms.
    #[arg(long, default_value_t = 1500)]
    measure_ms: u64,
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

/// A run of the fleet in this process (the consumer library serving `kinds`), its settings
/// adjusted by `tune` first.
async fn fleet_run(
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

/// One confirm channel for all publishes (baseline) vs one publish per channel (the publisher).
async fn scenario_publish(cli: &Cli) -> anyhow::Result<Value> {
    let (mut shared, mut pooled) = (Vec::new(), Vec::new());
    for pair in 1..=cli.pairs {
        let v = vhost("bench-publish");
        let one = publish::run(&v, cli.messages, cli.concurrency, false).await?;
        let many = publish::run(&v, cli.messages, cli.concurrency, true).await?;
        println!("publish pair {pair}: one confirm channel {one:.0} msg/s, one publish per channel {many:.0} msg/s");
        shared.push(one);
        pooled.push(many);
    }
    let (one, many) = (median(shared.clone()), median(pooled.clone()));
    println!(
        "publish: {} persistent 1 KiB messages, {} in flight: one confirm channel {one:.0} msg/s, \
         one publish per channel {many:.0} msg/s, ratio {:.2}",
        cli.messages,
        cli.concurrency,
        many / one
    );
    Ok(
        json!({"shared_channel": shared, "channel_per_publish": pooled, "median_shared": one, "median_pooled": many, "ratio": many / one}),
    )
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
                let r = fleet_run("bench-prefetch", &[kind], &job, &p, |s| s.consumer.prefetch = prefetch).await?;
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

/// `job` run on every core in-process, as fast as it goes: (jobs/s, CPU seconds per job).
fn in_process_resize(job: &Job, n: u64) -> anyhow::Result<(f64, f64)> {
    let Job::Resize(job) = job else { anyhow::bail!("not a resize job") };
    let threads = cores();
    let limits = Limits::default();
    let cpu = CpuMeter::start();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (job, limits) = (job, &limits);
            s.spawn(move || {
                let mine = n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                for _ in 0..mine {
                    let _ = resize(job, limits);
                }
            });
        }
    });
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok((rate, cpu.stop().own / n as f64))
}

/// One thread's rate of a resize pipeline, measured for at least `min`.
fn pipeline_rate(job: &ResizeJob, pipeline: Pipeline, min: Duration) -> f64 {
    let limits = Limits::default();
    let (start, mut n) = (Instant::now(), 0u32);
    while start.elapsed() < min || n < 3 {
        let _ = resize_with(job, &limits, pipeline);
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// A camera-sized JPEG (the sample photo enlarged 4x with Lanczos3, quality 90), for the
/// decoders: thumbnails of large photos are where a scaled decode pays.
fn large_photo() -> anyhow::Result<Vec<u8>> {
    let photo = std::fs::read(repo_root().join("samples/images/china.jpg")).context("sample photo")?;
    let img = image::load_from_memory(&photo)?;
    let big = img.resize_exact(img.width() * 4, img.height() * 4, image::imageops::FilterType::Lanczos3);
    Ok(warren_common::image_io::encode(&big, Format::Jpeg, Some(90))?)
}

/// The resize pipelines side by side, one thread each: the `image` crate's resampling against
/// `fast_image_resize`, and full against scaled JPEG decoding.
fn resize_pipelines(min: Duration) -> anyhow::Result<Value> {
    let Job::Resize(small) = resize_job()? else { anyhow::bail!("not a resize job") };
    let large = ResizeJob { image: large_photo()?, ..small.clone() };
    // Each step's alternative against the `image` crate throughout: resampling, then the JPEG
    // encoder, then a scaled decode.
    let variants = [
        ("image_crate", Pipeline::REFERENCE),
        ("fast_image_resize", Pipeline::IMAGE_JPEG_ENCODER),
        ("fast_image_resize_jpeg_encoder", Pipeline::WORKER),
        ("fast_image_resize_jpeg_encoder_scaled_decode", Pipeline::SCALED),
    ];
    let mut out = serde_json::Map::new();
    for (photo, job) in [("640x427", &small), ("2560x1708", &large)] {
        let mut row = serde_json::Map::new();
        let base = pipeline_rate(job, Pipeline::REFERENCE, min);
        for (name, pipeline) in variants {
            let rate = if pipeline == Pipeline::REFERENCE { base } else { pipeline_rate(job, pipeline, min) };
            println!(
                "image pipeline, {photo} JPEG to 256 px, one thread: {name} {rate:.1} jobs/s ({:.2}x)",
                rate / base
            );
            row.insert(name.to_owned(), json!({"jobs_per_s": rate, "vs_image_crate": rate / base}));
        }
        out.insert(photo.to_owned(), Value::Object(row));
    }
    Ok(Value::Object(out))
}

/// A fleet run with the worker as its own process (the release binary), so that its CPU time
/// is measured apart from the load generator's and the broker's.
async fn process_run(
    label: &str,
    kind: &str,
    env: &[(String, String)],
    expect_log: Option<&str>,
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
) -> anyhow::Result<(LoadReport, CpuUsed)> {
    let v = vhost(label);
    let mut settings = settings_for(&v);
    tune(&mut settings);
    let mut vars = vec![("WARREN__CONSUMER__KINDS", kind)];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let worker = ConsumerProcess::start(&v, &vars).await;
    if let Some(needle) = expect_log {
        worker.wait_for_log(needle).await;
    }
    let cpu = CpuMeter::with_worker(worker.pid().parse().ok());
    let report = drive(&settings, job, plan).await;
    let cpu = cpu.stop();
    drop(worker);
    Ok((report?, cpu))
}

async fn scenario_image(cli: &Cli) -> anyhow::Result<Value> {
    let pipelines = tokio::task::block_in_place(|| resize_pipelines(Duration::from_millis(cli.measure_ms)))?;
    let job = resize_job()?;
    let (mut local, mut fleet, mut fleet_bincode) = (Vec::new(), Vec::new(), Vec::new());
    let (mut local_cpu, mut fleet_cpu) = (Vec::new(), Vec::new());
    let p = plan(cli.heavy_messages, cli.concurrency.min(32), 0.0);
    for i in 0..cli.pairs {
        let (l, l_cpu) = tokio::task::block_in_place(|| in_process_resize(&job, cli.heavy_messages))?;
        let (f, f_cpu) = process_run("bench-image", "image.resize", &[], None, &job, &p, |_| ()).await?;
        let (b, _) = process_run("bench-image", "image.resize", &[], None, &job, &p, |s| {
            s.producer.encoding = warren_common::Encoding::Bincode;
        })
        .await?;
        let f_cpu = f_cpu.per_job(cli.heavy_messages);
        println!(
            "image pair {}: in-process {l:.1} jobs/s ({:.2} ms CPU/job); fleet {:.1} jobs/s (bincode jobs: {:.1}), {}",
            i + 1,
            l_cpu * 1e3,
            f.rate(),
            b.rate(),
            f_cpu.describe()
        );
        local.push(l);
        fleet.push(f.rate());
        fleet_bincode.push(b.rate());
        local_cpu.push(l_cpu);
        fleet_cpu.push(f_cpu);
    }
    let (l, f) = (median(local.clone()), median(fleet.clone()));
    println!(
        "image: median in-process {l:.1} jobs/s, fleet {f:.1} jobs/s, ratio {:.2} (target >= 0.85); bincode jobs \
         {:.1} jobs/s, ratio {:.2}",
        f / l,
        median(fleet_bincode.clone()),
        median(fleet_bincode.clone()) / l
    );
    Ok(json!({
        "pipelines_one_thread": pipelines,
        "in_process_jobs_per_s": local, "fleet_jobs_per_s": fleet, "fleet_bincode_jobs_per_s": fleet_bincode,
        "median_in_process": l, "median_fleet": f, "ratio": f / l,
        "median_fleet_bincode": median(fleet_bincode.clone()), "ratio_bincode": median(fleet_bincode) / l,
        "cpu_s_per_job": CpuUsed::median(&fleet_cpu).json(median(local_cpu)),
    }))
}

/// A model for the ML scenario: the settings that select it, and the image its jobs carry.
struct MlModel {
    name: &'static str,
    tune: fn(&mut Settings),
    image: &'static str,
    jobs: u64,
}

fn digits(_: &mut Settings) {}

/// SqueezeNet 1.1 (models/squeezenet, random weights): a real CNN; a whole job from a 640x427
/// JPEG takes ~6.6 ms of CPU in-process (docs/benchmarks.md).
fn squeezenet(s: &mut Settings) {
    let dir = repo_root().join("models/squeezenet");
    let m = &mut s.model;
    m.name = "squeezenet".into();
    m.path = dir.join("squeezenet1_1_f32.onnx");
    m.labels_path = dir.join("labels.txt");
    m.mean = vec![0.485, 0.456, 0.406];
    m.std = vec![0.229, 0.224, 0.225];
    m.resize_filter = Filter::Triangle;
}

/// In-process on every core: `cores()` threads, each running whole jobs (decode, preprocess,
/// infer, top-k) in batches of `batch` on its own session, for at least `min`. Jobs per second
/// and CPU seconds per job.
fn in_process_classify(model: &OrtClassifier, png: &[u8], batch: usize, min: Duration) -> (f64, f64) {
    use warren_common::classify::classify_batch;
    let limits = Limits::default();
    let jobs: Vec<ClassifyJob> = (0..batch).map(|_| ClassifyJob { image: png.to_vec(), top_k: Some(1) }).collect();
    let refs: Vec<&ClassifyJob> = jobs.iter().collect();
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..cores())
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while start.elapsed() < min || n < 2 * batch {
                        let _ = classify_batch(&refs, model, &limits);
                        n += batch;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
    });
    let rate = done as f64 / start.elapsed().as_secs_f64();
    (rate, cpu.stop().own / done.max(1) as f64)
}

/// The `WARREN__MODEL__*` variables that give a worker process these model settings.
fn model_env(m: &warren_infra::settings::ModelSettings) -> anyhow::Result<Vec<(String, String)>> {
    let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    let filter = serde_json::to_value(m.resize_filter)?.as_str().context("a filter serialises as its name")?.to_owned();
    Ok([
        ("NAME", m.name.clone()),
        ("PATH", m.path.display().to_string()),
        ("LABELS_PATH", m.labels_path.display().to_string()),
        ("MEAN", list(&m.mean)),
        ("STD", list(&m.std)),
        ("RESIZE_FILTER", filter),
    ]
    .into_iter()
    .map(|(k, v)| (format!("WARREN__MODEL__{k}"), v))
    .collect())
}

async fn scenario_ml_model(cli: &Cli, m: &MlModel) -> anyhow::Result<Value> {
    let mut settings = Settings::load(&repo_root().join("config"))?;
    (m.tune)(&mut settings);
    settings.model.sessions = cores();
    settings.model.intra_threads = 1;
    let model = tokio::task::block_in_place(|| OrtClassifier::load(&settings.model, None))?;
    let png = std::fs::read(repo_root().join(m.image))?;
    let min = Duration::from_millis(cli.measure_ms);
    let (mut by_batch, mut best, mut best_batch, mut best_cpu) = (serde_json::Map::new(), 0.0f64, 0, 0.0);
    for batch in [1usize, 2, 4, 8, 16, 32] {
        let (rate, cpu) = tokio::task::block_in_place(|| in_process_classify(&model, &png, batch, min));
        println!(
            "ml {} in-process, {} threads: batch {batch:>2}: {rate:.0} jobs/s, {:.2} ms CPU/job",
            m.name,
            cores(),
            cpu * 1e3
        );
        if rate > best {
            (best, best_batch, best_cpu) = (rate, batch, cpu);
        }
        by_batch.insert(batch.to_string(), json!(rate));
    }
    drop(model);
    let job = Job::Classify(ClassifyJob { image: png, top_k: Some(1) });
    // The worker is the release binary with the same model settings, as its own process.
    let env = model_env(&settings.model)?;
    let loaded = format!("model={}", m.name);
    let mut unbatched_env = env.clone();
    unbatched_env.push(("WARREN__MODEL__MAX_BATCH".into(), "1".into()));
    let (mut fleet, mut p99, mut cpu, mut unbatched) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cli.pairs {
        let p = plan(m.jobs, cli.concurrency, 0.0);
        let (f, c) = process_run("bench-ml", "ml.classify", &env, Some(&loaded), &job, &p, |_| ()).await?;
        let (u, _) = process_run("bench-ml", "ml.classify", &unbatched_env, Some(&loaded), &job, &p, |_| ()).await?;
        unbatched.push(u.rate());
        let q = f.latency_ms(0.99).unwrap_or(f64::NAN);
        let c = c.per_job(m.jobs);
        println!(
            "ml {} fleet: {:.0} jobs/s (max batch 1: {:.0}), p99 {q:.1} ms, {}",
            m.name,
            f.rate(),
            u.rate(),
            c.describe()
        );
        fleet.push(f.rate());
        p99.push(q);
        cpu.push(c);
    }
    let f = median(fleet.clone());
    println!(
        "ml {}: best in-process {best:.0} jobs/s (batch {best_batch}, {:.2} ms CPU/job), fleet {f:.0} jobs/s, ratio \
         {:.2} (target >= 0.8), p99 {:.1} ms; fleet without micro-batching {:.0} jobs/s",
        m.name,
        best_cpu * 1e3,
        f / best,
        median(p99.clone()),
        median(unbatched.clone())
    );
    Ok(json!({
        "in_process_jobs_per_s_by_batch": by_batch, "best_in_process": best, "best_batch": best_batch,
        "fleet_jobs_per_s": fleet, "median_fleet": f, "ratio": f / best,
        "fleet_p99_ms": p99, "median_p99_ms": median(p99),
        "fleet_max_batch_1_jobs_per_s": unbatched.clone(), "median_fleet_max_batch_1": median(unbatched),
        "cpu_s_per_job": CpuUsed::median(&cpu).json(best_cpu),
        "max_batch": settings.model.max_batch, "max_batch_wait_ms": settings.model.max_batch_wait_ms,
    }))
}

async fn scenario_ml(cli: &Cli) -> anyhow::Result<Value> {
    let models = [
        MlModel { name: "squeezenet", tune: squeezenet, image: "samples/images/china.jpg", jobs: cli.heavy_messages },
        MlModel { name: "digits", tune: digits, image: "models/digits/samples/001_label4.png", jobs: cli.messages },
    ];
    let mut out = serde_json::Map::new();
    for m in &models {
        out.insert(m.name.to_owned(), scenario_ml_model(cli, m).await?);
    }
    Ok(Value::Object(out))
}

/// Peak RSS of a worker process under sustained image load, its RSS 30 s after the load, and
/// across ten load cycles, with each allocator (one binary, `WARREN_ALLOCATOR`).
async fn scenario_memory(cli: &Cli) -> anyhow::Result<Value> {
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

async fn scenario_latency(cli: &Cli, relay_max: Option<f64>) -> anyhow::Result<Value> {
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
    if wanted.contains(&"memory") {
        report["memory"] = scenario_memory(&cli).await?;
    }
    if wanted.contains(&"publish") {
        report["publish"] = scenario_publish(&cli).await?;
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
