//! The `image` scenario: decode-resize-encode in-process on all cores vs the fleet's
//! `image.resize` (worker as its own process), and the resize pipelines side by side.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use warren_common::image_io::Format;
use warren_common::resize::{Pipeline, ResizeJob, resize, resize_with};
use warren_common::{Job, Limits};
use warren_e2e::repo_root;

use crate::Cli;
use crate::fleet::{cores, median, plan, process_run, resize_job};
use crate::procfs::{CpuMeter, CpuUsed};

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
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
        ("fast_image_resize_jpeg_encoder", Pipeline::FULL_DECODE),
        ("fast_image_resize_jpeg_encoder_scaled_decode", Pipeline::WORKER),
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
