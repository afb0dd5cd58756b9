//! The `ml` scenario: ONNX Runtime in-process at batch sizes 1..32 vs the fleet's `ml.classify`
//! (worker as its own process), for SqueezeNet and the digits model.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use warren_common::classify::ClassifyJob;
use warren_common::resize::Filter;
use warren_common::{Job, Limits};
use warren_consumer::onnx::OrtClassifier;
use warren_e2e::repo_root;
use warren_infra::Settings;

use crate::Cli;
use crate::fleet::{cores, median, plan, process_run};
use crate::procfs::{CpuMeter, CpuUsed};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let models = [
        MlModel { name: "squeezenet", tune: squeezenet, image: "samples/images/china.jpg", jobs: cli.heavy_messages },
        MlModel { name: "digits", tune: digits, image: "models/digits/samples/001_label4.png", jobs: cli.messages },
    ];
    let mut out = serde_json::Map::new();
    for m in &models {
        out.insert(m.name.to_owned(), run_model(cli, m).await?);
    }
    Ok(Value::Object(out))
}

/// A model for the ML scenario: the settings that select it, and the image its jobs carry.
pub(crate) struct MlModel {
    pub name: &'static str,
    pub tune: fn(&mut Settings),
    pub image: &'static str,
    pub jobs: u64,
}

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
pub(crate) fn model_env(m: &warren_infra::settings::ModelSettings) -> anyhow::Result<Vec<(String, String)>> {
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
