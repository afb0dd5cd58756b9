//! The `ml` scenario: ONNX Runtime in-process at batch sizes 1..32 vs the fleet's `ml.classify`
//! (worker as its own process), for SqueezeNet and the digits model; for SqueezeNet also
//! in-process on a 1920x1080 photo, its JPEG decoded scaled (what workers do) and at full size.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use warren_common::JobError;
use warren_common::classify::{Classifier, ClassifyJob, ClassifyOutput, classify_batch, classify_batch_full_decode};
use warren_common::resize::Filter;
use warren_common::{Job, Limits};
use warren_consumer::onnx::OrtClassifier;
use warren_e2e::{ConfigDir, repo_root};
use warren_infra::Settings;

use crate::Cli;
use crate::fleet::{RESIZE_PHOTO, cores, median, plan, process_run};
use crate::procfs::{CpuMeter, CpuUsed};

/// The models of the ML scenarios (here and `triton`): SqueezeNet on a photo, the digits MLP.
pub(crate) fn models(cli: &Cli) -> [MlModel; 2] {
    [
        MlModel {
            name: "squeezenet",
            tune: squeezenet,
            image: "samples/images/china.jpg",
            photo: Some(RESIZE_PHOTO),
            jobs: cli.heavy_messages,
        },
        MlModel {
            name: "digits",
            tune: digits,
            image: "models/digits/samples/001_label4.png",
            photo: None,
            jobs: cli.messages,
        },
    ]
}

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for m in &models(cli) {
        out.insert(m.name.to_owned(), run_model(cli, m).await?);
    }
    Ok(Value::Object(out))
}

/// A model for the ML scenario: the settings that select it, the image its jobs carry, and a
/// photo large enough for a scaled decode to shrink, for the in-process scaled/full comparison.
pub(crate) struct MlModel {
    pub name: &'static str,
    pub tune: fn(&mut Settings),
    pub image: &'static str,
    pub photo: Option<&'static str>,
    pub jobs: u64,
}

/// `classify_batch` or its full-decode variant.
type ClassifyBatch = fn(&[&ClassifyJob], &dyn Classifier, &Limits) -> Vec<Result<ClassifyOutput, JobError>>;

pub(crate) fn digits(_: &mut Settings) {}

/// SqueezeNet 1.1 (models/squeezenet, random weights): a real CNN; a whole job from a 640x427
/// JPEG takes ~6.6 ms of CPU in-process (docs/benchmarks.md).
pub(crate) fn squeezenet(s: &mut Settings) {
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
/// infer, top-k) through `run` in batches of `batch`, for at least `min`. Jobs per second and
/// CPU seconds per job ([`in_process_cpu`] of this process, and of `model_server`'s processes
/// when the model runs there); an error if a job fails (a failed job is not a measurement).
pub(crate) fn in_process_classify_beside(
    model: &dyn Classifier,
    png: &[u8],
    batch: usize,
    min: Duration,
    run: ClassifyBatch,
    model_server: &[u32],
) -> anyhow::Result<(f64, CpuUsed)> {
    let limits = Limits::default();
    let jobs: Vec<ClassifyJob> = (0..batch).map(|_| ClassifyJob { image: png.to_vec(), top_k: Some(1) }).collect();
    let refs: Vec<&ClassifyJob> = jobs.iter().collect();
    let cpu = CpuMeter::with_processes(None, model_server);
    let start = Instant::now();
    let done = std::thread::scope(|s| -> anyhow::Result<usize> {
        let threads: Vec<_> = (0..cores())
            .map(|_| {
                s.spawn(|| -> anyhow::Result<usize> {
                    let mut n = 0;
                    while start.elapsed() < min || n < 2 * batch {
                        for outcome in run(&refs, model, &limits) {
                            outcome.context("an in-process classify job failed")?;
                        }
                        n += batch;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut done = 0;
        for t in threads {
            done += t.join().map_err(|_| anyhow::anyhow!("an in-process classify thread panicked"))??;
        }
        Ok(done)
    })?;
    let rate = done as f64 / start.elapsed().as_secs_f64();
    Ok((rate, cpu.stop().per_job(done as u64)))
}

/// [`in_process_classify_beside`] of a model in this process: jobs per second and this
/// process's CPU seconds per job.
fn in_process_classify(
    model: &dyn Classifier,
    png: &[u8],
    batch: usize,
    min: Duration,
    run: ClassifyBatch,
) -> anyhow::Result<(f64, f64)> {
    let (rate, cpu) = in_process_classify_beside(model, png, batch, min, run, &[])?;
    Ok((rate, cpu.own))
}

/// `photo` classified in-process on every core, one job a batch, its JPEG decoded scaled (the
/// workers' path) and at full size, alternately `pairs` times: the rates, CPU per job and the
/// median of the pairs' ratios.
fn scaled_against_full_decode(
    model: &OrtClassifier,
    name: &str,
    photo: &str,
    pairs: usize,
    min: Duration,
) -> anyhow::Result<Value> {
    let bytes = std::fs::read(repo_root().join(photo)).with_context(|| format!("reading {photo}"))?;
    let (mut scaled, mut full, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs.max(1) {
        let s = in_process_classify(model, &bytes, 1, min, classify_batch)?;
        let f = in_process_classify(model, &bytes, 1, min, classify_batch_full_decode)?;
        ratios.push(s.0 / f.0);
        scaled.push(s);
        full.push(f);
    }
    let rates = |v: &[(f64, f64)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|r| r.1).collect());
    let (s, f, ratio) = (median(rates(&scaled)), median(rates(&full)), median(ratios));
    println!(
        "ml {name} in-process, {} threads, {photo}: scaled decode {s:.0} jobs/s ({:.2} ms CPU/job), full decode \
         {f:.0} jobs/s ({:.2} ms), scaled / full {ratio:.2}",
        cores(),
        cpu(&scaled) * 1e3,
        cpu(&full) * 1e3
    );
    Ok(json!({
        "photo": photo, "batch": 1,
        "scaled_decode_jobs_per_s": rates(&scaled), "median_scaled_decode": s, "cpu_s_per_job_scaled": cpu(&scaled),
        "full_decode_jobs_per_s": rates(&full), "median_full_decode": f, "cpu_s_per_job_full": cpu(&full),
        "scaled_vs_full_decode": ratio,
    }))
}

/// The `WARREN__MODEL__*` variables that give a worker process these model settings.
pub(crate) fn model_env(m: &warren_infra::settings::ModelSettings) -> anyhow::Result<Vec<(String, String)>> {
    let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    let filter = m.resize_filter.as_str().to_owned();
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

async fn run_model(cli: &Cli, m: &MlModel) -> anyhow::Result<Value> {
    let mut settings = Settings::load(&repo_root().join("config"))?;
    (m.tune)(&mut settings);
    settings.model.sessions = cores();
    settings.model.intra_threads = 1;
    let model = tokio::task::block_in_place(|| OrtClassifier::load(&settings.model, None))?;
    let png = std::fs::read(repo_root().join(m.image))?;
    let min = Duration::from_millis(cli.measure_ms);
    let (mut by_batch, mut best, mut best_batch, mut best_cpu) = (serde_json::Map::new(), 0.0f64, 0, 0.0);
    for batch in [1usize, 2, 4, 8, 16, 32] {
        let (rate, cpu) =
            tokio::task::block_in_place(|| in_process_classify(&model, &png, batch, min, classify_batch))?;
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
    let photo = match m.photo {
        Some(photo) => {
            Some(tokio::task::block_in_place(|| scaled_against_full_decode(&model, m.name, photo, cli.pairs, min))?)
        }
        None => None,
    };
    drop(model);
    let job = Job::from(ClassifyJob { image: png, top_k: Some(1) });
    // The worker is the release binary with the same model settings, as its own process.
    let env = model_env(&settings.model)?;
    let loaded = format!("model={}", m.name);
    // Batching is the route's: an overlay (config/test.toml with max_batch = 1 on ml.classify).
    let test_overlay = std::fs::read_to_string(repo_root().join("config/test.toml")).context("config/test.toml")?;
    let classify_route = "kind = \"ml.classify\"\n";
    anyhow::ensure!(test_overlay.contains(classify_route), "config/test.toml has no ml.classify route");
    let unbatched_dir =
        ConfigDir::with_overlay(&test_overlay.replace(classify_route, "kind = \"ml.classify\"\nmax_batch = 1\n"));
    let mut unbatched_env = env.clone();
    unbatched_env.push(("WARREN_CONFIG_DIR".into(), unbatched_dir.path().to_owned()));
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
    let mut report = json!({
        "in_process_jobs_per_s_by_batch": by_batch, "best_in_process": best, "best_batch": best_batch,
        "fleet_jobs_per_s": fleet, "median_fleet": f, "ratio": f / best,
        "fleet_p99_ms": p99, "median_p99_ms": median(p99),
        "fleet_max_batch_1_jobs_per_s": unbatched.clone(), "median_fleet_max_batch_1": median(unbatched),
        "cpu_s_per_job": CpuUsed::median(&cpu).json(best_cpu),
        "max_batch": settings.route("ml.classify").map(|r| r.max_batch),
        "max_batch_wait_ms": settings.route("ml.classify").map(|r| r.max_batch_wait_ms),
    });
    if let Some(photo) = photo {
        report["photo_1920x1080"] = photo;
    }
    Ok(report)
}
