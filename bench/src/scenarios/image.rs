//! The `image` scenario: the bench's image job ([`resize_job`]: the 1920x1080 photo fit into
//! 256x256, bilinear, JPEG quality 85) done by Pillow (bench/pillow_baseline.py: full and draft
//! decode, one process and one per core), by Warren in-process (one thread, every core) and by
//! the fleet end to end through the broker (worker as its own process; JSON and bincode jobs,
//! and JSON jobs by reference: the photo in an s3s-fs store beside the broker, read by the
//! worker, the output written back under `output_to`; and the same with `file://` references on
//! a directory, as on a shared mount, with no store process). Reports the rates, the ratios
//! between them, CPU per job by process (the store's too), the message sizes, the outputs' PSNR,
//! and the resize pipelines side by side on one thread.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::task::block_in_place;
use warren_common::image_io::Format;
use warren_common::quality;
use warren_common::resize::{Filter, Pipeline, ResizeJob, ResizeMode, resize, resize_with};
use warren_common::{Control, Encoding, Job, JobEnvelope, Limits, Ref};
use warren_e2e::{TempDir, repo_root};
use warren_producer::PublishOptions;
use warren_producer::load::{LoadPlan, LoadReport};

use crate::Cli;
use crate::fleet::{Beside, RESIZE_PHOTO, cores, median, plan, process_run, process_run_beside, resize_of};
use crate::procfs::{CpuMeter, CpuUsed};
use crate::store::Store;

/// The rates measured in each pair, by these names (also their keys in the report).
const PILLOW_FULL_1: &str = "pillow_full_1core";
const PILLOW_FULL_ALL: &str = "pillow_full_all_cores";
const PILLOW_DRAFT_1: &str = "pillow_draft_1core";
const PILLOW_DRAFT_ALL: &str = "pillow_draft_all_cores";
const WARREN_1: &str = "warren_in_process_1core";
const WARREN_ALL: &str = "warren_in_process_all_cores";
const FLEET: &str = "fleet";
const FLEET_BINCODE: &str = "fleet_bincode";
const FLEET_REF: &str = "fleet_by_reference";
const FLEET_FILE: &str = "fleet_by_file_reference";

/// Goals (the issue's): Warren in-process per core against Pillow-draft, and the fleet end to
/// end against Pillow-draft in-process on every core.
const GOAL_PER_CORE: f64 = 2.0;
const GOAL_FLEET: f64 = 1.0;
/// Issue 28's: the fleet with the photo by reference, against Pillow-draft on every core.
const GOAL_FLEET_REF: f64 = 0.9;

/// Where the job's photo is kept in the store: one object, which every job of the runs by
/// reference names (s3s-fs reads the file anew for each GET, keeping no cache of its own).
const STORED_PHOTO: &str = "photos/photo_1920x1080.jpg";

/// Where a run by reference keeps the photo and its outputs: an S3 store (s3s-fs, measured
/// apart), or a directory given as the workers' `store.file_roots`, as a shared mount would be.
enum Kept {
    S3(Box<Store>),
    Dir(TempDir),
}

impl Kept {
    /// The `output_to` prefix of run `run`.
    fn output_to(&self, run: &str) -> String {
        match self {
            Self::S3(_) => Store::output_to(run),
            Self::Dir(dir) => format!("file://{}/outputs/{run}/", dir.path().display()),
        }
    }

    /// How many outputs run `run` wrote.
    fn outputs_of(&self, run: &str) -> usize {
        match self {
            Self::S3(store) => store.outputs_of(run),
            // A directory per job.
            Self::Dir(dir) => std::fs::read_dir(dir.path().join("outputs").join(run)).map_or(0, Iterator::count),
        }
    }

    /// The worker's `[store]`, as `WARREN__STORE__*` variables.
    fn worker_env(&self) -> Vec<(String, String)> {
        match self {
            Self::S3(store) => store.worker_env(),
            Self::Dir(dir) => vec![("WARREN__STORE__FILE_ROOTS".to_owned(), dir.path().display().to_string())],
        }
    }

    /// The store's process, whose CPU is measured beside the fleet's.
    fn pid(&self) -> Option<u32> {
        match self {
            Self::S3(store) => store.pid,
            Self::Dir(_) => None,
        }
    }
}

/// A run by reference: where the photo is kept, the job naming it, the message's size.
struct ByReference {
    kept: Kept,
    job: Job,
    url: String,
    message_bytes: usize,
}

impl ByReference {
    /// The photo in an s3s-fs store, uploaded with an S3 PUT.
    async fn s3(resize_job: &ResizeJob) -> anyhow::Result<Self> {
        let store = Store::start().await?;
        let url = store.upload(STORED_PHOTO, &resize_job.image).await?;
        Self::naming(Kept::S3(Box::new(store)), url, resize_job)
    }

    /// The photo in a directory of its own.
    fn dir(resize_job: &ResizeJob) -> anyhow::Result<Self> {
        let dir = TempDir::new("warren-bench-files").context("a directory for file references")?;
        let path = dir.path().join("photo_1920x1080.jpg");
        std::fs::write(&path, &resize_job.image).with_context(|| format!("writing {}", path.display()))?;
        let url = format!("file://{}", path.display());
        Self::naming(Kept::Dir(dir), url, resize_job)
    }

    fn naming(kept: Kept, url: String, resize_job: &ResizeJob) -> anyhow::Result<Self> {
        let r = Ref::new(url.clone()).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let job = Job::from(ResizeJob { image: r.to_bytes(), ..resize_job.clone() });
        // As published: JSON, `output_to` beside the kind.
        let message_bytes =
            JobEnvelope::encode_full(&job, Encoding::Json, Control::default(), Some(&kept.output_to("pair-1")))
                .map(|b| b.len())
                .context("encoding the job by reference")?;
        Ok(Self { kept, job, url, message_bytes })
    }
}

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let min = Duration::from_millis(cli.measure_ms);
    let pipelines = block_in_place(|| resize_pipelines(min))?;
    let resize_job = &resize_of(RESIZE_PHOTO)?;
    let job = Job::from(resize_job.clone());
    let photo = repo_root().join(RESIZE_PHOTO);
    let quality = block_in_place(|| output_quality(&photo, resize_job))?;
    let message_bytes = |e| JobEnvelope::encode(&job, e).map(|b| b.len()).context("encoding the job's envelope");
    let (json_bytes, bincode_bytes) = (message_bytes(Encoding::Json)?, message_bytes(Encoding::Bincode)?);
    let by_ref = ByReference::s3(resize_job).await?;
    let by_file = block_in_place(|| ByReference::dir(resize_job))?;

    let mut runs = Runs::default();
    let (mut fleet_cpu, mut bincode_cpu, mut ref_cpu, mut file_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..cli.pairs {
        let [f, b, r, fr] = pair(cli, i + 1, &photo, &job, resize_job, (&by_ref, &by_file), &mut runs).await?;
        println!(
            "image pair {}: Pillow full {:.1} / {:.1} jobs/s (1 / {c} processes), draft {:.1} / {:.1}; Warren \
             in-process {:.1} / {:.1} (1 / {c} threads); fleet {:.1} jobs/s ({}), bincode jobs {:.1} ({}), by \
             reference {:.1} ({}), by file reference {:.1} ({})",
            i + 1,
            runs.last(PILLOW_FULL_1),
            runs.last(PILLOW_FULL_ALL),
            runs.last(PILLOW_DRAFT_1),
            runs.last(PILLOW_DRAFT_ALL),
            runs.last(WARREN_1),
            runs.last(WARREN_ALL),
            runs.last(FLEET),
            f.describe(),
            runs.last(FLEET_BINCODE),
            b.describe(),
            runs.last(FLEET_REF),
            r.describe(),
            runs.last(FLEET_FILE),
            fr.describe(),
            c = cores(),
        );
        fleet_cpu.push(f);
        bincode_cpu.push(b);
        ref_cpu.push(r);
        file_cpu.push(fr);
    }

    let (fleet_cpu, bincode_cpu) = (CpuUsed::median(&fleet_cpu), CpuUsed::median(&bincode_cpu));
    let (ref_cpu, file_cpu) = (CpuUsed::median(&ref_cpu), CpuUsed::median(&file_cpu));
    let in_process_cpu = runs.median_cpu(WARREN_ALL);
    runs.print_medians(cli.pairs, [&fleet_cpu, &bincode_cpu, &ref_cpu, &file_cpu]);
    let (ratios, goals) = ratios_and_goals(&runs, &quality);
    let ms = |x: f64| x * 1e3;
    println!(
        "image payload, {RESIZE_PHOTO} ({} bytes) per job: JSON (base64) message {json_bytes} bytes, CPU/job worker \
         {:.2} ms, producer {:.2}, broker {:.2}; bincode message {bincode_bytes} bytes, CPU/job worker {:.2} ms, \
         producer {:.2}, broker {:.2}",
        resize_job.image.len(),
        ms(fleet_cpu.worker),
        ms(fleet_cpu.own),
        ms(fleet_cpu.broker),
        ms(bincode_cpu.worker),
        ms(bincode_cpu.own),
        ms(bincode_cpu.broker),
    );
    println!(
        "image payload by reference ({}, output_to {}): JSON message {} bytes, CPU/job worker {:.2} ms, producer \
         {:.2}, broker {:.2}, store {:.2}",
        by_ref.url,
        by_ref.kept.output_to("pair-N"),
        by_ref.message_bytes,
        ms(ref_cpu.worker),
        ms(ref_cpu.own),
        ms(ref_cpu.broker),
        ms(ref_cpu.store),
    );
    println!(
        "image payload by file reference ({}, output_to {}): JSON message {} bytes, CPU/job worker {:.2} ms, \
         producer {:.2}, broker {:.2}",
        by_file.url,
        by_file.kept.output_to("pair-N"),
        by_file.message_bytes,
        ms(file_cpu.worker),
        ms(file_cpu.own),
        ms(file_cpu.broker),
    );

    let (l, f, b) = (runs.median(WARREN_ALL), runs.median(FLEET), runs.median(FLEET_BINCODE));
    let (r, fr) = (runs.median(FLEET_REF), runs.median(FLEET_FILE));
    Ok(json!({
        "job": {"photo": RESIZE_PHOTO, "photo_bytes": resize_job.image.len(), "width": resize_job.width,
                "height": resize_job.height, "mode": "fit", "filter": "triangle", "quality": resize_job.quality},
        "pipelines_one_thread": pipelines,
        "jobs_per_s": runs.json(),
        "ratios": ratios,
        "goals": goals,
        "quality": quality,
        "payload": {
            "photo_bytes": resize_job.image.len(),
            "json": {"message_bytes": json_bytes, "cpu_s_per_job": fleet_cpu.json(in_process_cpu)},
            "bincode": {"message_bytes": bincode_bytes, "cpu_s_per_job": bincode_cpu.json(in_process_cpu)},
            "by_reference": {"message_bytes": by_ref.message_bytes, "encoding": "json", "ref": by_ref.url,
                             "object": "one stored object, named by every job",
                             "output_to": by_ref.kept.output_to("pair-N"), "store": "s3s-fs 0.14.1 on this host",
                             "cpu_s_per_job": ref_cpu.json(in_process_cpu)},
            "by_file_reference": {"message_bytes": by_file.message_bytes, "encoding": "json", "ref": by_file.url,
                                  "object": "one file, named by every job",
                                  "output_to": by_file.kept.output_to("pair-N"),
                                  "store": "a directory on this host (store.file_roots), as a shared mount",
                                  "cpu_s_per_job": file_cpu.json(in_process_cpu)},
        },
        // The keys of earlier reports: in-process is Warren on every core, the fleet's jobs JSON.
        "in_process_jobs_per_s": runs.rates(WARREN_ALL), "fleet_jobs_per_s": runs.rates(FLEET),
        "fleet_bincode_jobs_per_s": runs.rates(FLEET_BINCODE),
        "median_in_process": l, "median_fleet": f, "ratio": f / l,
        "median_fleet_bincode": b, "ratio_bincode": b / l,
        "median_fleet_by_reference": r, "ratio_by_reference": r / l,
        "median_fleet_by_file_reference": fr, "ratio_by_file_reference": fr / l,
        "cpu_s_per_job": fleet_cpu.json(in_process_cpu),
        "cpu_s_per_job_bincode": bincode_cpu.json(in_process_cpu),
        "cpu_s_per_job_by_reference": ref_cpu.json(in_process_cpu),
        "cpu_s_per_job_by_file_reference": file_cpu.json(in_process_cpu),
    }))
}

/// Pair `number`: Pillow (full and draft, one process and one per core), Warren in-process
/// (one thread, every core), then the fleet with JSON jobs, bincode jobs and JSON jobs by
/// reference (S3, then file), each pushed to `runs`. Returns the four fleet runs' CPU per job.
async fn pair(
    cli: &Cli,
    number: usize,
    photo: &Path,
    job: &Job,
    resize_job: &ResizeJob,
    (by_ref, by_file): (&ByReference, &ByReference),
    runs: &mut Runs,
) -> anyhow::Result<[CpuUsed; 4]> {
    let (min, n) = (Duration::from_millis(cli.measure_ms), cli.heavy_messages);
    for (name, draft, processes) in [
        (PILLOW_FULL_1, false, 1),
        (PILLOW_FULL_ALL, false, cores()),
        (PILLOW_DRAFT_1, true, 1),
        (PILLOW_DRAFT_ALL, true, cores()),
    ] {
        runs.push(name, block_in_place(|| pillow(photo, resize_job, draft, processes, min, None))?);
    }
    runs.push(WARREN_1, block_in_place(|| pipeline_rate(resize_job, Pipeline::WORKER, min)));
    runs.push(WARREN_ALL, block_in_place(|| in_process_resize(resize_job, n)));
    let p = plan(n, cli.concurrency.min(32), 0.0);
    let (f, f_cpu) = process_run("bench-image", "image.resize", &[], None, job, &p, |_| ()).await?;
    let (b, b_cpu) = process_run("bench-image", "image.resize", &[], None, job, &p, |s| {
        s.producer.encoding = Encoding::Bincode;
    })
    .await?;
    let (r, r_cpu) = by_reference(by_ref, number, &p).await?;
    let (fr, fr_cpu) = by_reference(by_file, number, &p).await?;
    let cpu = [f_cpu, b_cpu, r_cpu, fr_cpu].map(|c| c.per_job(n));
    for (name, report, cpu) in
        [(FLEET, f, cpu[0]), (FLEET_BINCODE, b, cpu[1]), (FLEET_REF, r, cpu[2]), (FLEET_FILE, fr, cpu[3])]
    {
        runs.push(name, Rate { jobs_per_s: report.rate(), cpu_s_per_job: cpu.total() });
    }
    Ok(cpu)
}

/// The fleet on JSON jobs naming the kept photo, each output written back under a prefix of
/// pair `number`'s own; checks that every output was written after the run.
async fn by_reference(by_ref: &ByReference, number: usize, plan: &LoadPlan) -> anyhow::Result<(LoadReport, CpuUsed)> {
    let run = format!("pair-{number}");
    let beside = Beside {
        store: by_ref.kept.pid(),
        publish: PublishOptions { encoding: Some(Encoding::Json), ..PublishOptions::default() }
            .output_to(by_ref.kept.output_to(&run)),
        ..Beside::default()
    };
    let env = by_ref.kept.worker_env();
    let (report, cpu) =
        process_run_beside("bench-image", "image.resize", &env, None, &by_ref.job, plan, |_| (), beside).await?;
    let stored = by_ref.kept.outputs_of(&run);
    anyhow::ensure!(stored as u64 == plan.count, "{stored} outputs written for {} jobs by {}", plan.count, by_ref.url);
    Ok((report, cpu))
}

/// The report's `ratios` (each the median of the pairs' ratios) and `goals`, printed.
fn ratios_and_goals(runs: &Runs, quality: &Value) -> (Value, Value) {
    let ratios = [
        ("warren_1core_vs_pillow_draft_1core", WARREN_1, PILLOW_DRAFT_1),
        ("warren_all_cores_vs_pillow_draft_all_cores", WARREN_ALL, PILLOW_DRAFT_ALL),
        ("warren_1core_vs_pillow_full_1core", WARREN_1, PILLOW_FULL_1),
        ("fleet_vs_pillow_draft_all_cores", FLEET, PILLOW_DRAFT_ALL),
        ("fleet_vs_pillow_full_all_cores", FLEET, PILLOW_FULL_ALL),
        ("fleet_vs_warren_in_process", FLEET, WARREN_ALL),
        ("fleet_bincode_vs_pillow_draft_all_cores", FLEET_BINCODE, PILLOW_DRAFT_ALL),
        ("fleet_bincode_vs_warren_in_process", FLEET_BINCODE, WARREN_ALL),
        ("fleet_by_reference_vs_pillow_draft_all_cores", FLEET_REF, PILLOW_DRAFT_ALL),
        ("fleet_by_reference_vs_warren_in_process", FLEET_REF, WARREN_ALL),
        ("fleet_by_reference_vs_fleet", FLEET_REF, FLEET),
        ("fleet_by_reference_vs_fleet_bincode", FLEET_REF, FLEET_BINCODE),
        ("fleet_by_file_reference_vs_pillow_draft_all_cores", FLEET_FILE, PILLOW_DRAFT_ALL),
        ("fleet_by_file_reference_vs_fleet_by_reference", FLEET_FILE, FLEET_REF),
        ("fleet_by_file_reference_vs_fleet_bincode", FLEET_FILE, FLEET_BINCODE),
    ]
    .map(|(key, a, b)| (key, runs.ratio(a, b)));
    let ratio = |key: &str| ratios.iter().find(|(k, _)| *k == key).map_or(f64::NAN, |(_, r)| *r);
    let per_core = ratio("warren_1core_vs_pillow_draft_1core");
    let fleet_vs_draft = ratio("fleet_vs_pillow_draft_all_cores");
    let psnr = |key: &str| quality["psnr_db"][key].as_f64().unwrap_or(f64::NAN);
    let psnr_ok = psnr("warren") >= psnr("pillow_draft");
    let (per_core_met, fleet_met) = (per_core >= GOAL_PER_CORE && psnr_ok, fleet_vs_draft > GOAL_FLEET);
    let ref_vs_draft = ratio("fleet_by_reference_vs_pillow_draft_all_cores");
    let ref_met = ref_vs_draft >= GOAL_FLEET_REF;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "image ratios (median of the pairs' ratios): Warren in-process / Pillow draft, one core {per_core:.2} (goal \
         >= {GOAL_PER_CORE} at equal or better PSNR: {}), all cores {:.2}; Warren one core / Pillow full one core \
         {:.2}; fleet / Pillow draft on all cores {fleet_vs_draft:.2} (goal > {GOAL_FLEET}: {}), bincode jobs {:.2}; \
         fleet / Pillow full on all cores {:.2}; fleet / Warren in-process {:.2} (bincode jobs {:.2}); by \
         reference: fleet / Pillow draft on all cores {ref_vs_draft:.2} (goal >= {GOAL_FLEET_REF}: {}), / JSON \
         jobs {:.2}, / bincode jobs {:.2}, / Warren in-process {:.2}; by file reference: / Pillow draft on all \
         cores {:.2}, / by S3 reference {:.2}, / bincode jobs {:.2}",
        met(per_core_met),
        ratio("warren_all_cores_vs_pillow_draft_all_cores"),
        ratio("warren_1core_vs_pillow_full_1core"),
        met(fleet_met),
        ratio("fleet_bincode_vs_pillow_draft_all_cores"),
        ratio("fleet_vs_pillow_full_all_cores"),
        ratio("fleet_vs_warren_in_process"),
        ratio("fleet_bincode_vs_warren_in_process"),
        met(ref_met),
        ratio("fleet_by_reference_vs_fleet"),
        ratio("fleet_by_reference_vs_fleet_bincode"),
        ratio("fleet_by_reference_vs_warren_in_process"),
        ratio("fleet_by_file_reference_vs_pillow_draft_all_cores"),
        ratio("fleet_by_file_reference_vs_fleet_by_reference"),
        ratio("fleet_by_file_reference_vs_fleet_bincode"),
    );
    let goals = json!({
        "warren_1core_vs_pillow_draft_1core": {"ratio": per_core, "goal": GOAL_PER_CORE, "psnr_not_worse": psnr_ok,
                                               "met": per_core_met},
        "fleet_vs_pillow_draft_all_cores": {"ratio": fleet_vs_draft, "goal": GOAL_FLEET, "met": fleet_met},
        "fleet_by_reference_vs_pillow_draft_all_cores": {"ratio": ref_vs_draft, "goal": GOAL_FLEET_REF,
                                                         "at_least": true, "met": ref_met},
    });
    (Value::Object(ratios.iter().map(|(k, r)| ((*k).to_owned(), json!(r))).collect()), goals)
}

/// A measured rate and what each job cost in CPU time (all processes of the measurement).
#[derive(Debug, Clone, Copy)]
struct Rate {
    jobs_per_s: f64,
    cpu_s_per_job: f64,
}

/// The rates of every pair, by name, in the order first pushed.
#[derive(Debug, Default)]
struct Runs(Vec<(&'static str, Vec<Rate>)>);

impl Runs {
    fn push(&mut self, name: &'static str, rate: Rate) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, rates)) => rates.push(rate),
            None => self.0.push((name, vec![rate])),
        }
    }

    fn get(&self, name: &str) -> &[Rate] {
        self.0.iter().find(|(n, _)| *n == name).map_or(&[], |(_, r)| r.as_slice())
    }

    fn rates(&self, name: &str) -> Vec<f64> {
        self.get(name).iter().map(|r| r.jobs_per_s).collect()
    }

    fn last(&self, name: &str) -> f64 {
        self.get(name).last().map_or(f64::NAN, |r| r.jobs_per_s)
    }

    fn median(&self, name: &str) -> f64 {
        median(self.rates(name))
    }

    fn median_cpu(&self, name: &str) -> f64 {
        median(self.get(name).iter().map(|r| r.cpu_s_per_job).collect())
    }

    /// The median over the pairs of `a`'s rate over `b`'s in the same pair: runs close in time
    /// share the machine's state (other tenants, CPU frequency), so their ratio moves less.
    fn ratio(&self, a: &str, b: &str) -> f64 {
        median(self.get(a).iter().zip(self.get(b)).map(|(a, b)| a.jobs_per_s / b.jobs_per_s).collect())
    }

    fn json(&self) -> Value {
        let row = |rates: &[Rate]| {
            let r: Vec<f64> = rates.iter().map(|r| r.jobs_per_s).collect();
            let cpu = median(rates.iter().map(|r| r.cpu_s_per_job).collect());
            json!({"runs": r, "median": median(r.clone()), "cpu_s_per_job": cpu})
        };
        Value::Object(self.0.iter().map(|(name, rates)| ((*name).to_owned(), row(rates))).collect())
    }

    fn print_medians(&self, pairs: usize, [fleet_cpu, bincode_cpu, ref_cpu, file_cpu]: [&CpuUsed; 4]) {
        let c = cores();
        let ms = |x: f64| x * 1e3;
        let cell = |name| format!("{:7.1} jobs/s, CPU/job {:5.2} ms", self.median(name), ms(self.median_cpu(name)));
        println!("image, medians of {pairs} pairs ({c} cores):");
        println!(
            "  Pillow, full decode   1 process : {}; {c} processes: {}",
            cell(PILLOW_FULL_1),
            cell(PILLOW_FULL_ALL)
        );
        println!(
            "  Pillow, draft         1 process : {}; {c} processes: {}",
            cell(PILLOW_DRAFT_1),
            cell(PILLOW_DRAFT_ALL)
        );
        println!("  Warren in-process     1 thread  : {}; {c} threads  : {}", cell(WARREN_1), cell(WARREN_ALL));
        println!("  fleet, JSON jobs    : {:7.1} jobs/s, {}", self.median(FLEET), fleet_cpu.describe());
        println!("  fleet, bincode jobs : {:7.1} jobs/s, {}", self.median(FLEET_BINCODE), bincode_cpu.describe());
        println!("  fleet, by reference : {:7.1} jobs/s, {}", self.median(FLEET_REF), ref_cpu.describe());
        println!("  fleet, by file ref. : {:7.1} jobs/s, {}", self.median(FLEET_FILE), file_cpu.describe());
    }
}

/// A run of bench/pillow_baseline.py (with `python3`, or `$PYTHON`) on `photo` with `job`'s
/// size and quality, on `processes` processes for at least `min`; `output` receives one output.
fn pillow(
    photo: &Path,
    job: &ResizeJob,
    draft: bool,
    processes: usize,
    min: Duration,
    output: Option<&Path>,
) -> anyhow::Result<Rate> {
    // The script does this one job: it would be another job's baseline otherwise.
    anyhow::ensure!(
        job.mode == ResizeMode::Fit && job.filter == Filter::Triangle,
        "the Pillow baseline fits with bilinear only, not {:?} with {:?}",
        job.mode,
        job.filter
    );
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let mode = if draft { "draft" } else { "full" };
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(repo_root().join("bench/pillow_baseline.py"))
        .arg(photo)
        .args([job.width, job.height, u32::from(job.quality.unwrap_or(85))].map(|n| n.to_string()))
        .args([mode.to_owned(), processes.to_string(), min.as_secs_f64().to_string()]);
    if let Some(out) = output {
        cmd.arg("--output").arg(out);
    }
    let what = format!("the Pillow baseline ({} bench/pillow_baseline.py, {mode})", python.to_string_lossy());
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}; scripts/setup.sh installs Pillow): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("the JSON line of {what}"))?;
    let figure = |key: &str| report[key].as_f64().with_context(|| format!("{key} in the output of {what}"));
    Ok(Rate { jobs_per_s: figure("jobs_per_s")?, cpu_s_per_job: figure("cpu_s_per_job")? })
}

/// `job` run on every core in-process, `n` jobs, as fast as it goes.
fn in_process_resize(job: &ResizeJob, n: u64) -> Rate {
    let threads = cores();
    let limits = Limits::default();
    let cpu = CpuMeter::start();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let limits = &limits;
            s.spawn(move || {
                let mine = n / threads as u64 + u64::from((t as u64) < n % threads as u64);
                for _ in 0..mine {
                    resize(job, limits).expect("the bench job resizes");
                }
            });
        }
    });
    let jobs_per_s = n as f64 / start.elapsed().as_secs_f64();
    Rate { jobs_per_s, cpu_s_per_job: cpu.stop().own / n.max(1) as f64 }
}

/// One thread's rate of a resize pipeline, measured for at least `min`.
fn pipeline_rate(job: &ResizeJob, pipeline: Pipeline, min: Duration) -> Rate {
    let limits = Limits::default();
    let cpu = CpuMeter::start();
    let (start, mut n) = (Instant::now(), 0u32);
    while start.elapsed() < min || n < 3 {
        resize_with(job, &limits, pipeline).expect("the bench job resizes");
        n += 1;
    }
    let jobs_per_s = f64::from(n) / start.elapsed().as_secs_f64();
    Rate { jobs_per_s, cpu_s_per_job: cpu.stop().own / f64::from(n) }
}

/// The first pipeline of the table, which the others are compared with (`VS_BASELINE`): a
/// libjpeg-turbo full decode, then the `image` crate's resampling and JPEG encoder. (Reports
/// before 2026-12-01 named it `image_crate`, and its ratios `vs_image_crate`.)
const BASELINE: &str = "image_crate_resample_encode";
const VS_BASELINE: &str = "vs_image_crate_resample_encode";

/// The photos of the pipelines table (the job's, and a camera-sized one, where a scaled decode
/// pays most), by label.
const PIPELINE_PHOTOS: [(&str, &str); 2] =
    [("1920x1080", RESIZE_PHOTO), ("4000x3000", "samples/photos/photo_4000x3000.jpg")];

/// The resize pipelines side by side, one thread each: the `image` crate's resampling against
/// `fast_image_resize`, its JPEG encoder against `jpeg-encoder`, full against scaled JPEG
/// decoding, and Pillow (one process) with and without draft. Every Warren pipeline decodes
/// JPEGs with libjpeg-turbo (`image_io::decode_for`), at full size but the last.
fn resize_pipelines(min: Duration) -> anyhow::Result<Value> {
    // From a full decode and the `image` crate's resampling and JPEG encoder, one step changed
    // per row: resampling, then the JPEG encoder, then a scaled decode (what the workers run).
    let variants = [
        (BASELINE, Pipeline::REFERENCE),
        ("fast_image_resize", Pipeline::IMAGE_JPEG_ENCODER),
        ("fast_image_resize_jpeg_encoder", Pipeline::FULL_DECODE),
        ("fast_image_resize_jpeg_encoder_scaled_decode", Pipeline::WORKER),
    ];
    let mut out = serde_json::Map::new();
    for (label, path) in PIPELINE_PHOTOS {
        let job = resize_of(path)?;
        let photo = repo_root().join(path);
        let mut rates = Vec::new();
        for (name, pipeline) in variants {
            rates.push((name, pipeline_rate(&job, pipeline, min).jobs_per_s));
        }
        for (name, draft) in [("pillow_full", false), ("pillow_draft", true)] {
            rates.push((name, pillow(&photo, &job, draft, 1, min, None)?.jobs_per_s));
        }
        let rate = |name: &str| rates.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |(_, r)| *r);
        let base = rate(BASELINE);
        let mut row = serde_json::Map::new();
        for (name, rate) in rates.iter().copied() {
            println!(
                "image pipeline, {label} JPEG to 256 px, one thread: {name} {rate:.1} jobs/s ({:.2}x)",
                rate / base
            );
            row.insert(name.to_owned(), json!({"jobs_per_s": rate, VS_BASELINE: rate / base}));
        }
        // The worker's pipeline against the same with every JPEG decoded at full size.
        let scaled = rate("fast_image_resize_jpeg_encoder_scaled_decode") / rate("fast_image_resize_jpeg_encoder");
        println!("image pipeline, {label}: scaled decode / full decode {scaled:.2}x");
        row.insert("scaled_vs_full_decode".to_owned(), json!(scaled));
        out.insert(label.to_owned(), Value::Object(row));
    }
    Ok(Value::Object(out))
}

/// PSNR of each output (Warren scaled and full decode, Pillow draft and full) against one
/// reference: the full decode resized with Lanczos3 and kept lossless. Also the output sizes.
fn output_quality(photo: &Path, job: &ResizeJob) -> anyhow::Result<Value> {
    let limits = Limits::default();
    let exact = ResizeJob { filter: Filter::Lanczos3, format: Some(Format::Png), quality: None, ..job.clone() };
    let reference = resize_with(&exact, &limits, Pipeline::FULL_DECODE).context("reference resize")?;
    let reference = image::load_from_memory(&reference.image).context("reference output")?.to_rgb8();
    let mut outputs = vec![
        ("warren", resize(job, &limits).context("Warren's resize")?.image),
        ("warren_full_decode", resize_with(job, &limits, Pipeline::FULL_DECODE).context("full-decode resize")?.image),
    ];
    let temp = TempDir::new("warren-bench").context("a temporary directory for Pillow's outputs")?;
    for (name, draft) in [("pillow_draft", true), ("pillow_full", false)] {
        let path = temp.path().join(format!("{name}.jpg"));
        pillow(photo, job, draft, 1, Duration::ZERO, Some(&path))?;
        outputs.push((name, std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
    }
    let (mut db, mut bytes) = (serde_json::Map::new(), serde_json::Map::new());
    for (name, output) in &outputs {
        // Over RGB: the outputs are JPEGs, opaque.
        let img = image::load_from_memory(output).with_context(|| format!("{name}'s output"))?.to_rgb8();
        let psnr = quality::psnr(&img, &reference).map_err(|e| anyhow::anyhow!("{name}'s output: {e}"))?;
        db.insert((*name).to_owned(), json!(psnr));
        bytes.insert((*name).to_owned(), json!(output.len()));
    }
    let line: Vec<String> = outputs
        .iter()
        .map(|(name, out)| format!("{name} {:.2} dB ({} bytes)", db[*name].as_f64().unwrap_or(f64::NAN), out.len()))
        .collect();
    println!(
        "image output quality, PSNR against the full decode resized with Lanczos3 (lossless): {}",
        line.join(", ")
    );
    Ok(json!({"reference": "full decode, Lanczos3, lossless", "psnr_db": db, "output_bytes": bytes}))
}
