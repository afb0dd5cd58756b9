//! A real NVIDIA Triton server (2.51, CPU, from PyPI's nvidia-pytriton wheel; installed by
//! `scripts/setup.sh` through `scripts/triton.sh`) per test: its own model repository in a
//! temporary directory, its own free ports, killed with its Python stubs when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{DEADLINE, repo_root};

/// One model of the repository: an ONNX file served by Triton's Python backend
/// (`models/triton/model.py`), with `config.pbtxt` written by `scripts/triton.sh repo`.
#[derive(Debug, Clone)]
pub struct Served {
    pub name: String,
    pub onnx: PathBuf,
    pub max_batch_size: u32,
    /// Edits to the written config.pbtxt: (text, replacement), for models that do not fit.
    pub edits: Vec<(String, String)>,
    /// Extra `parameters` entries (e.g. `delay_ms`).
    pub parameters: Vec<(String, String)>,
}

impl Served {
    /// A digits model (`models/digits/digits_<variant>.onnx`) as `name`, batching up to 8.
    pub fn digits(name: &str, variant: &str) -> Self {
        Self {
            name: name.into(),
            onnx: repo_root().join(format!("models/digits/digits_{variant}.onnx")),
            max_batch_size: 8,
            edits: Vec::new(),
            parameters: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Triton {
    child: Option<Child>,
    repo: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    metrics_port: u16,
    log: PathBuf,
    /// Extra tritonserver arguments (e.g. explicit model control), kept for restarts.
    args: Vec<String>,
}

impl Triton {
    /// Writes the repository, starts the server and waits until every model is ready.
    pub async fn start(models: &[Served]) -> Self {
        Self::start_with(models, &[]).await
    }

    /// [`Self::start`] with extra tritonserver arguments.
    pub async fn start_with(models: &[Served], args: &[&str]) -> Self {
        let repo = std::env::temp_dir().join(format!("warren-triton-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&repo).expect("repository dir");
        for m in models {
            write_model(&repo, m).await;
        }
        let [grpc_port, http_port, metrics_port] = free_ports();
        let log = repo.join("tritonserver.log");
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut triton = Self { child: None, repo, grpc_port, http_port, metrics_port, log, args };
        triton.launch().await;
        triton
    }

    /// The server's pid, which is also its process group's id (its Python stubs are in it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The gRPC endpoint, for `model.triton_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/triton.sh"))
            .args(["serve", self.repo.to_str().expect("utf-8 path")])
            .args([self.grpc_port, self.http_port, self.metrics_port].map(|p| p.to_string()))
            .args(["--exit-timeout-secs=2", "--log-verbose=0"])
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            // Its Python stubs are its children: a group of its own is killed whole.
            .process_group(0)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("start tritonserver (scripts/triton.sh serve)"));
        self.wait_ready().await;
    }

    /// Waits until the server says it is ready (every model of the repository loaded).
    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/v2/health/ready", self.http_port);
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let probe = url.clone();
            let ready = tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
                agent.get(&probe).call().is_ok()
            })
            .await
            .expect("probe");
            if ready {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("tritonserver exited ({status}) before it was ready:\n{}", self.log_text());
            }
            assert!(tokio::time::Instant::now() < until, "Triton was not ready in time:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the server and its stubs, as a crash would, and waits until it is gone.
    /// Sends `signal` (STOP, CONT) to the server's whole process group (its backends too).
    pub async fn signal(&self, signal: &str) {
        let pid = self.pid().expect("Triton runs");
        let sent = Command::new("bash").args(["-c", &format!("kill -{signal} -- -{pid}")]).status().await;
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} Triton");
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("bash").args(["-c", &format!("kill -KILL -- -{pid}")]).status().await;
            }
            let _ = tokio::time::timeout(DEADLINE, child.wait()).await;
        }
    }

    /// With explicit model control: writes `model` into the repository as `version` (the only
    /// version directory left, so the server serves it) and asks the server to load it, as an
    /// operator rolling out a new version under the same name would.
    pub async fn load(&self, model: &Served, version: u32) {
        write_model(&self.repo, model).await;
        let dir = self.repo.join(&model.name);
        for entry in std::fs::read_dir(&dir).expect("model dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok_and(|v| v != 1 && v != version) {
                std::fs::remove_dir_all(entry.path()).expect("remove a version");
            }
        }
        if version != 1 {
            std::fs::create_dir_all(dir.join(version.to_string())).expect("version dir");
            std::fs::rename(dir.join("1/model.py"), dir.join(format!("{version}/model.py"))).expect("move model.py");
            std::fs::remove_dir_all(dir.join("1")).expect("remove version 1");
        }
        let url = format!("http://127.0.0.1:{}/v2/repository/models/{}/load", self.http_port, model.name);
        let loaded = tokio::task::spawn_blocking(move || ureq::post(&url).send_empty().map(|r| r.status().as_u16()))
            .await
            .expect("load request");
        assert!(matches!(loaded, Ok(200)), "loading {} version {version}: {loaded:?}\n{}", model.name, self.log_text());
    }

    /// Starts the server again on the same ports and repository, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Triton {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("bash").args(["-c", &format!("kill -KILL -- -{pid}")]).status();
        }
        let _ = std::fs::remove_dir_all(&self.repo);
    }
}

async fn write_model(repo: &Path, m: &Served) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/triton.sh"))
        .args(["repo", repo.to_str().expect("utf-8"), &m.name, m.onnx.to_str().expect("utf-8")])
        .arg(m.max_batch_size.to_string())
        .status()
        .await
        .expect("scripts/triton.sh repo");
    assert!(status.success(), "scripts/triton.sh repo for {} (is Triton installed? run scripts/setup.sh)", m.name);
    let path = repo.join(&m.name).join("config.pbtxt");
    let mut config = std::fs::read_to_string(&path).expect("config.pbtxt");
    for (from, to) in &m.edits {
        assert!(config.contains(from.as_str()), "{from:?} is not in {}'s config:\n{config}", m.name);
        config = config.replace(from.as_str(), to);
    }
    for (key, value) in &m.parameters {
        config.push_str(&format!("parameters {{ key: \"{key}\" value: {{ string_value: \"{value}\" }} }}\n"));
    }
    std::fs::write(&path, config).expect("config.pbtxt");
}

/// Three ports nothing listens on now.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let port = |i: usize| listeners[i].local_addr().expect("addr").port();
    [port(0), port(1), port(2)]
}
