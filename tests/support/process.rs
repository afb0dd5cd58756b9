//! The real `warren-consumer` binary as a child process, its log captured, its readiness awaited.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{DEADLINE, Vhost, bin, repo_root};

#[derive(Debug)]
pub struct ConsumerProcess {
    pub child: Child,
    log: JoinHandle<String>,
}

impl ConsumerProcess {
    /// Starts the binary on `vhost` with the repository's config plus `env`, and waits until it
    /// says it is consuming.
    pub async fn start(vhost: &Vhost, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin("warren-consumer"));
        cmd.current_dir(repo_root())
            .env("WARREN_CONFIG_DIR", repo_root().join("config"))
            .env("WARREN__BROKER__URL", vhost.amqp_url())
            .env("WARREN_ENV", "test")
            .env("RUST_LOG", "info,ort=warn,lapin=error")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start warren-consumer");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (ready_tx, ready_rx) = oneshot::channel();
        let log = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("consumer ready")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        tokio::time::timeout(DEADLINE, ready_rx)
            .await
            .expect("consumer ready in time")
            .expect("the consumer exited before it was ready");
        Self { child, log }
    }

    pub fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    /// Sends a signal (`TERM`, `KILL`, ...) with kill(1).
    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill").args([format!("-{name}"), self.pid()]).status().await.expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal) and log.
    pub async fn wait(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("exits in time").expect("status");
        let log = self.log.await.expect("log reader");
        (status.code(), log)
    }
}
