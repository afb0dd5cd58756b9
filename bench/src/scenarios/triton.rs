//! The `triton` scenario: the same model file run by ONNX Runtime in-process and by a Triton
//! server (2.51, CPU, its Python backend running the file with ONNX Runtime) on this machine,
//! for SqueezeNet and the digits model: the gRPC hop alone (one model run, batch 1 and 8),
//! whole jobs in-process, and the fleet through RabbitMQ with either backend, with CPU per job
//! split by worker, Triton, broker and load generator.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warren_common::classify::{Classifier, ClassifyJob, InputTensor, classify_batch, preprocess_batch};
use warren_common::{Job, Limits};
use warren_consumer::metrics::Metrics;
use warren_consumer::onnx::OrtClassifier;
use warren_consumer::triton::{TritonClassifier, TritonMetrics};
use warren_e2e::repo_root;
use warren_e2e::triton::{Served, Triton};
use warren_infra::Settings;
use warren_infra::settings::ModelBackend;

use crate::Cli;
use crate::fleet::{Beside, cores, median, plan, process_run_beside};
use crate::procfs::{self, CpuUsed};
use crate::scenarios::ml::{MlModel, in_process_classify_beside, model_env, models};

/// Images per request where a batch is measured: the default `max_batch` of the ml.classify route.
const BATCH: usize = 8;

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for m in &models(cli) {
        out.insert(m.name.to_owned(), run_model(cli, m).await?);
    }
    Ok(Value::Object(out))
}

/// One way of running the fleet: its label in the report, the worker's environment, and the
/// log line that says its model is ready.
struct Variant {
    label: &'static str,
    env: Vec<(String, String)>,
    ready: &'static str,
}

async fn run_model(cli: &Cli, m: &MlModel) -> anyhow::Result<Value> {
    let (name, jobs) = (m.name, m.jobs);
    let mut settings = Settings::load(&repo_root().join("config"))?;
    (m.tune)(&mut settings);
    settings.model.sessions = cores();
    settings.model.intra_threads = 1;
    let image = std::fs::read(repo_root().join(m.image))?;
    let served = Served { max_batch_size: BATCH as u32, ..Served::digits(name, "f32") };
    let mut triton = Triton::start(&[Served { onnx: settings.model.path.clone(), ..served }]).await;
    let group = procfs::group(triton.pid().unwrap_or(0));
    let mut on_triton = settings.clone();
    on_triton.model.backend = ModelBackend::Triton;
    on_triton.model.triton_url = triton.url();
    on_triton.model.triton_model = name.into();

    let ort = tokio::task::block_in_place(|| OrtClassifier::load(&settings.model, None))?;
    let metrics = Metrics::new();
    let remote = TritonClassifier::connect(
        &on_triton.model,
        BATCH,
        TritonMetrics {
            inference_seconds: metrics.inference_histogram(name, "triton"),
            errors: metrics.triton_errors(),
        },
    )
    .await?;

    // The hop: one model run on a ready tensor, one at a time, in-process vs over gRPC.
    let mut hop = serde_json::Map::new();
    for batch in [1, BATCH] {
        let input = tokio::task::block_in_place(|| tensor(&ort, &image, batch))?;
        let (o50, o99) = tokio::task::block_in_place(|| run_latency(&ort, &input, cli.measure_ms))?;
        let (t50, t99) = tokio::task::block_in_place(|| run_latency(&remote, &input, cli.measure_ms))?;
        println!(
            "triton {name}: one model run of batch {batch}: ONNX Runtime in-process p50 {o50:.2} ms p99 {o99:.2}; \
             Triton over gRPC p50 {t50:.2} ms p99 {t99:.2}; the hop adds {:.2} ms at p50",
            t50 - o50
        );
        hop.insert(
            format!("batch_{batch}"),
            json!({"ort_p50_ms": o50, "ort_p99_ms": o99, "triton_p50_ms": t50, "triton_p99_ms": t99}),
        );
    }

    // Whole jobs (decode, preprocess, infer, top-k) on every core, batches of 8.
    let min = Duration::from_millis(cli.measure_ms);
    let whole_jobs = |model: &dyn Classifier, server: &[u32]| {
        tokio::task::block_in_place(|| in_process_classify_beside(model, &image, BATCH, min, classify_batch, server))
    };
    let (ort_rate, ort_cpu) = whole_jobs(&ort, &[])?;
    let (tri_rate, tri_cpu) = whole_jobs(&remote, &group)?;
    println!(
        "triton {name}: whole jobs in-process on {} threads, batch {BATCH}: ONNX Runtime {ort_rate:.0} jobs/s \
         ({:.2} ms CPU/job), through Triton {tri_rate:.0} jobs/s ({:.2} ms CPU/job, {:.2} of it in Triton); \
         ratio {:.2}",
        cores(),
        ort_cpu.own * 1e3,
        (tri_cpu.own + tri_cpu.model_server) * 1e3,
        tri_cpu.model_server * 1e3,
        tri_rate / ort_rate
    );
    drop((ort, remote));

    // The fleet through RabbitMQ: the worker binary with either backend.
    let job = Job::from(ClassifyJob { image, top_k: Some(1) });
    let base = model_env(&settings.model)?;
    let triton_env = |pool: usize| {
        let mut env = base.clone();
        env.extend([
            ("WARREN__MODEL__BACKEND".to_owned(), "triton".to_owned()),
            ("WARREN__MODEL__TRITON_URL".to_owned(), triton.url()),
            ("WARREN__MODEL__TRITON_MODEL".to_owned(), name.to_owned()),
            ("WARREN__CONSUMER__POOL_SIZE".to_owned(), pool.to_string()),
        ]);
        env
    };
    let variants = [
        Variant { label: "ort", env: base.clone(), ready: "model loaded" },
        Variant { label: "triton", env: triton_env(cores()), ready: "Triton model ready" },
        Variant { label: "triton_pool_2x", env: triton_env(2 * cores()), ready: "Triton model ready" },
    ];
    let mut runs: Vec<Vec<(f64, f64, f64, CpuUsed)>> = vec![Vec::new(); variants.len()];
    for _ in 0..cli.pairs {
        for (i, Variant { label, env, ready }) in variants.iter().enumerate() {
            let p = plan(jobs, cli.concurrency, 0.0);
            let (f, c) = process_run_beside(
                "bench-triton",
                "ml.classify",
                env,
                Some(ready),
                &job,
                &p,
                |_| (),
                Beside { model_server: &group, ..Beside::default() },
            )
            .await?;
            let (p50, p99) = (f.latency_ms(0.5).unwrap_or(f64::NAN), f.latency_ms(0.99).unwrap_or(f64::NAN));
            let c = c.per_job(jobs);
            println!(
                "triton {name} fleet, {label}: {:.0} jobs/s, p50 {p50:.1} ms p99 {p99:.1} ms, {}",
                f.rate(),
                c.describe()
            );
            runs[i].push((f.rate(), p50, p99, c));
        }
    }
    triton.kill().await;
    let mut fleet = serde_json::Map::new();
    for (Variant { label, .. }, r) in variants.iter().zip(&runs) {
        let m = |f: fn(&(f64, f64, f64, CpuUsed)) -> f64| median(r.iter().map(f).collect());
        let cpu = CpuUsed::median(&r.iter().map(|x| x.3).collect::<Vec<_>>());
        fleet.insert(
            (*label).to_owned(),
            json!({"jobs_per_s": r.iter().map(|x| x.0).collect::<Vec<_>>(), "median_jobs_per_s": m(|x| x.0),
                   "median_p50_ms": m(|x| x.1), "median_p99_ms": m(|x| x.2), "cpu_s_per_job": cpu.json(ort_cpu.own)}),
        );
    }
    let ratio = |k: &str| fleet[k]["median_jobs_per_s"].as_f64().unwrap_or(f64::NAN);
    let fleet_ratio = ratio("triton") / ratio("ort");
    println!(
        "triton {name}: fleet through Triton / fleet with ONNX Runtime in the worker: {fleet_ratio:.2} (pool {}: {:.2})",
        2 * cores(),
        ratio("triton_pool_2x") / ratio("ort")
    );
    Ok(json!({
        "hop": hop,
        "in_process": {"ort_jobs_per_s": ort_rate, "ort_cpu_s_per_job": ort_cpu.own,
                       "triton_jobs_per_s": tri_rate, "triton_cpu_s_per_job": tri_cpu.own + tri_cpu.model_server,
                       "triton_cpu_s_per_job_in_triton": tri_cpu.model_server, "ratio": tri_rate / ort_rate},
        "fleet": fleet, "fleet_ratio": fleet_ratio, "batch": BATCH,
    }))
}

/// A preprocessed batch of `batch` copies of `image`, as the model takes it.
fn tensor(model: &dyn Classifier, image: &[u8], batch: usize) -> anyhow::Result<InputTensor> {
    let spec = model.spec();
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let decoded = (0..batch)
        .map(|_| {
            warren_common::image_io::decode_for(image, &Limits::default(), |_, _| (size(spec.width), size(spec.height)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(preprocess_batch(&decoded, spec)?)
}

/// p50 and p99 in ms of one model run on `input`, one at a time, for at least `measure_ms`.
fn run_latency(model: &dyn Classifier, input: &InputTensor, measure_ms: u64) -> anyhow::Result<(f64, f64)> {
    let (start, mut ms) = (Instant::now(), Vec::new());
    while start.elapsed() < Duration::from_millis(measure_ms) || ms.len() < 50 {
        let t = Instant::now();
        model.infer(input.clone())?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}
