//! CPU time and resident memory of processes, from /proc (Linux).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`, asked once; 100 on Linux
/// nearly always).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / ticks_per_second())
}

/// The local RabbitMQ node's process (the Erlang VM, `beam.smp`) that listens on AMQP port
/// 5672: other nodes may run beside it (the cluster tests' `scripts/cluster.sh`). Found once a
/// run (no scenario restarts the broker), so measurements do not pay for the scan.
pub fn broker_pid() -> Option<u32> {
    static PID: OnceLock<Option<u32>> = OnceLock::new();
    *PID.get_or_init(find_broker_pid)
}

fn find_broker_pid() -> Option<u32> {
    let beams: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
        .collect();
    let listening = listening_inodes(5672);
    beams.iter().copied().find(|pid| holds_socket(*pid, &listening)).or_else(|| (beams.len() == 1).then(|| beams[0]))
}

/// Whether process `pid` holds one of the sockets `inodes`.
fn holds_socket(pid: u32, inodes: &[String]) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().any(|fd| {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        inodes.iter().any(|inode| link == format!("socket:[{inode}]"))
    })
}

/// Socket inodes listening on TCP `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<String> {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // local_address, state 0A = LISTEN, inode in the tenth column.
                    (f.get(1)?.ends_with(&port) && *f.get(3)? == "0A").then(|| f.get(9).map(|s| (*s).to_owned()))?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The processes of process group `pgid` (a Triton server and its Python stubs, say).
pub fn group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the parenthesised command: state, ppid, pgrp.
            let pgrp: u32 = stat[stat.rfind(')')? + 2..].split_whitespace().nth(2)?.parse().ok()?;
            (pgrp == pgid).then_some(pid)
        })
        .collect()
}

/// CPU seconds used between `start` and [`CpuMeter::stop`] by this process, the broker,
/// optionally a worker process, the processes of a model server and an object store's process.
#[derive(Debug)]
pub struct CpuMeter {
    own: f64,
    broker: Option<(u32, f64)>,
    worker: Option<(u32, f64)>,
    model_server: Vec<(u32, f64)>,
    store: Option<(u32, f64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    /// This process: the load generator, and the worker when it runs in-process.
    pub own: f64,
    pub broker: f64,
    /// The worker process, when there is one (else 0).
    pub worker: f64,
    /// The model server's processes (Triton and its stubs), when measured (else 0).
    pub model_server: f64,
    /// The object store's process (s3s-fs) that jobs by reference are read from and outputs
    /// written to, when measured (else 0).
    pub store: f64,
}

impl CpuUsed {
    pub fn total(&self) -> f64 {
        self.own + self.broker + self.worker + self.model_server + self.store
    }

    /// The same, per job of a run of `jobs`.
    pub fn per_job(self, jobs: u64) -> Self {
        let n = jobs.max(1) as f64;
        Self {
            own: self.own / n,
            broker: self.broker / n,
            worker: self.worker / n,
            model_server: self.model_server / n,
            store: self.store / n,
        }
    }

    /// Field by field, the median of runs.
    pub fn median(runs: &[Self]) -> Self {
        let m = |f: fn(&Self) -> f64| crate::stats::median(runs.iter().map(f).collect());
        Self {
            own: m(|c| c.own),
            broker: m(|c| c.broker),
            worker: m(|c| c.worker),
            model_server: m(|c| c.model_server),
            store: m(|c| c.store),
        }
    }

    /// "CPU/job 5.03 ms: worker 3.57, load generator 0.45, broker 1.01" (for a per-job figure
    /// of a run whose worker is its own process).
    pub fn describe(&self) -> String {
        let ms = |x: f64| x * 1e3;
        let triton =
            if self.model_server > 0.0 { format!(", Triton {:.2}", ms(self.model_server)) } else { String::new() };
        let store = if self.store > 0.0 { format!(", store {:.2}", ms(self.store)) } else { String::new() };
        format!(
            "CPU/job {:.2} ms: worker {:.2}, load generator {:.2}, broker {:.2}{triton}{store}",
            ms(self.total()),
            ms(self.worker),
            ms(self.own),
            ms(self.broker)
        )
    }

    /// The report's `cpu_s_per_job` object: this per-job figure beside the baseline's.
    pub fn json(&self, in_process: f64) -> serde_json::Value {
        serde_json::json!({"in_process": in_process, "fleet_total": self.total(), "fleet_worker": self.worker,
                           "fleet_load_generator": self.own, "fleet_broker": self.broker,
                           "fleet_model_server": self.model_server, "fleet_store": self.store})
    }
}

impl CpuMeter {
    pub fn start() -> Self {
        Self::with_worker(None)
    }

    pub fn with_worker(worker: Option<u32>) -> Self {
        Self::with_processes(worker, &[])
    }

    /// Also measures `model_server`'s processes (their CPU summed).
    pub fn with_processes(worker: Option<u32>, model_server: &[u32]) -> Self {
        Self::with_store(worker, model_server, None)
    }

    /// [`Self::with_processes`], and an object store's process apart.
    pub fn with_store(worker: Option<u32>, model_server: &[u32], store: Option<u32>) -> Self {
        let at = |pid: u32| Some((pid, cpu_seconds(pid)?));
        Self {
            own: cpu_seconds(std::process::id()).unwrap_or(0.0),
            broker: broker_pid().and_then(at),
            worker: worker.and_then(at),
            model_server: model_server.iter().filter_map(|p| at(*p)).collect(),
            store: store.and_then(at),
        }
    }

    pub fn stop(self) -> CpuUsed {
        let used = |p: Option<(u32, f64)>| p.and_then(|(pid, before)| Some(cpu_seconds(pid)? - before));
        CpuUsed {
            own: cpu_seconds(std::process::id()).unwrap_or(0.0) - self.own,
            broker: used(self.broker).unwrap_or(f64::NAN),
            worker: used(self.worker).unwrap_or(0.0),
            model_server: self.model_server.iter().filter_map(|p| used(Some(*p))).sum(),
            store: used(self.store).unwrap_or(0.0),
        }
    }
}

/// Resident set size of a process in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|k| k as f64 / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Samples a process's RSS every 20 ms on a thread and keeps the highest.
#[derive(Debug)]
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(pid: u32) -> Self {
        let (stop, peak_kib) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let thread = std::thread::spawn({
            let (stop, peak_kib) = (stop.clone(), peak_kib.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = status_kib(pid, "VmRSS:") {
                        peak_kib.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Self { stop, peak_kib, thread: Some(thread) }
    }

    /// The highest RSS seen so far, in MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
