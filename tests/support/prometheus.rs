//! A real Prometheus server (Debian's `prometheus` package; `scripts/setup.sh` installs it) on
//! a free port, scraping the given targets every second, killed and its data removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub addr: std::net::SocketAddr,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

impl Prometheus {
    /// `jobs`: (job name, metrics path, targets `host:port`).
    pub fn start(jobs: &[(&str, &str, Vec<String>)]) -> Self {
        let dir = std::env::temp_dir().join(format!("warren-prometheus-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n");
        for (name, path, targets) in jobs {
            let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
            config.push_str(&format!(
                "  - job_name: {name}\n    metrics_path: {path}\n    static_configs:\n      - targets: [{targets}]\n"
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let addr: std::net::SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr")
        };
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus (Debian's prometheus package: scripts/setup.sh installs it)");
        let p = Self { child, dir, addr };
        let until = Instant::now() + DEADLINE;
        while agent().get(&format!("http://{addr}/-/ready")).call().map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < until, "Prometheus did not get ready:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// Evaluates `expr` now: the API's whole answer (`status`, `data.result`, or `error`).
    pub fn query(&self, expr: &str) -> serde_json::Value {
        let url = format!("http://{}/api/v1/query", self.addr);
        agent()
            .get(&url)
            .query("query", expr)
            .call()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>())
            .unwrap_or_else(|e| panic!("querying {expr:?}: {e}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
