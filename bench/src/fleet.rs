//! What the scenarios share: a fresh vhost per run, the load generator, a run of the fleet (in
//! this process or as a worker process) or of the relay baseline, the jobs they send, medians.

use std::time::Duration;

use anyhow::Context as _;
use warren_common::Job;
use warren_common::checksum::ChecksumJob;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_e2e::{ConsumerProcess, Fleet, Vhost, repo_root, settings_for};
use warren_infra::Settings;
use warren_producer::load::{self, LoadPlan, LoadReport};
use warren_producer::{Producer, PublishOptions};

use crate::procfs::{CpuMeter, CpuUsed};
use crate::relay::Relay;
pub use crate::stats::median;

pub fn cores() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

pub fn vhost(label: &str) -> Vhost {
    tokio::task::block_in_place(|| Vhost::create(label))
}

pub fn plan(count: u64, concurrency: usize, rate: f64) -> LoadPlan {
    LoadPlan { count, rate, concurrency, wait: true, result_timeout: Duration::from_secs(300) }
}

pub fn checksum_job() -> Job {
    Job::from(ChecksumJob { data: vec![7; 1024], rounds: 1 })
}

/// The photo of the bench's image job (1920x1080, JPEG q90 4:2:0).
pub const RESIZE_PHOTO: &str = "samples/photos/photo_1920x1080.jpg";

/// The bench's image job: [`RESIZE_PHOTO`] fit into 256x256, bilinear, JPEG quality 85.
pub fn resize_job() -> anyhow::Result<Job> {
    Ok(Job::from(resize_of(RESIZE_PHOTO)?))
}

/// The same job on another photo (a path from the repository's root).
pub fn resize_of(photo: &str) -> anyhow::Result<ResizeJob> {
    let image = std::fs::read(repo_root().join(photo)).with_context(|| format!("reading {photo}"))?;
    Ok(ResizeJob {
        image,
        width: 256,
        height: 256,
        mode: ResizeMode::Fit,
        filter: Filter::Triangle,
        format: None,
        quality: Some(85),
    })
}

/// Where the jobs of a run are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerTo {
    /// The producer's reply queue (`reply_to`); the load generator awaits each result.
    ReplyTo,
    /// The results exchange (jobs without `reply_to`), into a queue bound to it; the run ends
    /// when that queue holds a result per job.
    ResultsExchange,
}

/// Where a run's results land when they go to the results exchange.
const RESULTS_QUEUE: &str = "bench.results";

/// Runs `plan` against whatever serves the queue, its results answered to `to`.
pub async fn drive_to(settings: &Settings, job: &Job, plan: &LoadPlan, to: AnswerTo) -> anyhow::Result<LoadReport> {
    match to {
        AnswerTo::ReplyTo => drive(settings, job, plan).await,
        AnswerTo::ResultsExchange => drive_to_results(settings, job, plan).await,
    }
}

async fn drive_to_results(settings: &Settings, job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    let producer = Producer::connect(settings.clone()).await?;
    producer.declare_topology().await?;
    let conn = warren_infra::connect(&settings.broker, "bench-results").await?;
    let ch = conn.create_channel().await?;
    let exchange = settings.topology.results_exchange.as_str();
    ch.queue_declare(RESULTS_QUEUE.into(), QueueDeclareOptions::durable(), Default::default()).await?;
    ch.queue_bind(RESULTS_QUEUE.into(), exchange.into(), "#".into(), QueueBindOptions::default(), Default::default())
        .await?;
    let started = std::time::Instant::now();
    let mut report =
        load::run(&producer, job.clone(), PublishOptions::default(), &LoadPlan { wait: false, ..*plan }).await;
    anyhow::ensure!(report.published == plan.count, "only {} of {} jobs published", report.published, plan.count);
    let deadline = started + plan.result_timeout;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    loop {
        let depth = ch.queue_declare(RESULTS_QUEUE.into(), passive, Default::default()).await?.message_count();
        if u64::from(depth) >= plan.count {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "only {depth} of {} results came", plan.count);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report.elapsed = started.elapsed();
    report.ok = plan.count;
    let _ = ch.queue_delete(RESULTS_QUEUE.into(), Default::default()).await;
    let _ = conn.close(200, "done".into()).await;
    producer.close().await;
    Ok(report)
}

pub async fn drive(settings: &Settings, job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    drive_with(settings, job, plan, PublishOptions::default()).await
}

/// [`drive`], each job published with `opts` (`output_to`, say).
pub async fn drive_with(
    settings: &Settings,
    job: &Job,
    plan: &LoadPlan,
    opts: PublishOptions,
) -> anyhow::Result<LoadReport> {
    let mut producer = Producer::connect(settings.clone()).await?;
    producer.enable_replies().await?;
    let report = load::run(&producer, job.clone(), opts, plan).await;
    producer.close().await;
    anyhow::ensure!(report.ok == plan.count, "only {} of {} jobs succeeded", report.ok, plan.count);
    Ok(report)
}

/// A run of the fleet in this process (the consumer library serving `kinds`), its settings
/// adjusted by `tune` first.
pub async fn fleet_run(
    label: &str,
    kinds: &[&str],
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
) -> anyhow::Result<LoadReport> {
    fleet_run_in(&vhost(label), kinds, job, plan, tune).await
}

/// [`fleet_run`] in a vhost of the caller's (on a cluster, say; `tune` sets the broker list).
pub async fn fleet_run_in(
    v: &Vhost,
    kinds: &[&str],
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
) -> anyhow::Result<LoadReport> {
    fleet_run_answering(v, kinds, job, plan, tune, AnswerTo::ReplyTo).await
}

/// [`fleet_run`] of `kinds` with default settings, its results answered to `to`.
pub async fn fleet_run_to(
    label: &str,
    kinds: &[&str],
    job: &Job,
    plan: &LoadPlan,
    to: AnswerTo,
) -> anyhow::Result<LoadReport> {
    fleet_run_answering(&vhost(label), kinds, job, plan, |_| (), to).await
}

async fn fleet_run_answering(
    v: &Vhost,
    kinds: &[&str],
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
    to: AnswerTo,
) -> anyhow::Result<LoadReport> {
    let mut settings = settings_for(v);
    settings.consumer.kinds = kinds.iter().map(|k| (*k).to_owned()).collect();
    tune(&mut settings);
    let fleet = Fleet::start(settings.clone()).await;
    let report = drive_to(&settings, job, plan, to).await;
    fleet.stop().await;
    report
}

pub async fn relay_run(job: &Job, plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    relay_run_to(job, plan, AnswerTo::ReplyTo).await
}

/// [`relay_run`], its results answered to `to`.
pub async fn relay_run_to(job: &Job, plan: &LoadPlan, to: AnswerTo) -> anyhow::Result<LoadReport> {
    let v = vhost("bench-relay");
    let settings = settings_for(&v);
    let producer = Producer::connect(settings.clone()).await?;
    producer.declare_topology().await?;
    producer.close().await;
    // The same prefetch the fleet uses by default (its pool has one slot per core).
    let prefetch = warren_consumer::routes::default_prefetch(&settings, cores());
    let relay = Relay::start(&settings, "warren.checksum", prefetch).await?;
    let report = drive_to(&settings, job, plan, to).await;
    relay.stop().await;
    report
}

/// A fleet run with the worker as its own process (the release binary), so that its CPU time
/// is measured apart from the load generator's and the broker's.
pub async fn process_run(
    label: &str,
    kind: &str,
    env: &[(String, String)],
    expect_log: Option<&str>,
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
) -> anyhow::Result<(LoadReport, CpuUsed)> {
    process_run_beside(label, kind, env, expect_log, job, plan, tune, Beside::default()).await
}

/// What runs beside a process run's worker, and how its jobs are published.
#[derive(Debug, Default)]
pub struct Beside<'a> {
    /// A model server's processes (Triton and its stubs), their CPU measured together.
    pub model_server: &'a [u32],
    /// An object store's process (s3s-fs) that the jobs' references point into, measured apart.
    pub store: Option<u32>,
    /// The options every job is published with (`output_to`, say).
    pub publish: PublishOptions,
}

/// [`process_run`], measuring the CPU of what runs `beside` the worker too.
#[allow(clippy::too_many_arguments)]
pub async fn process_run_beside(
    label: &str,
    kind: &str,
    env: &[(String, String)],
    expect_log: Option<&str>,
    job: &Job,
    plan: &LoadPlan,
    tune: impl FnOnce(&mut Settings),
    beside: Beside<'_>,
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
    let cpu = CpuMeter::with_store(worker.pid().parse().ok(), beside.model_server, beside.store);
    let report = drive_with(&settings, job, plan, beside.publish).await;
    let cpu = cpu.stop();
    drop(worker);
    Ok((report?, cpu))
}
