//! The real `warren-consumer` binary as a child process, its log captured, its readiness awaited.

use std::process::Stdio;

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{DEADLINE, Vhost, bin, repo_root};

#[derive(Debug)]
pub struct ConsumerProcess {
    pub child: Child,
    log: JoinHandle<String>,
    seen: Arc<(Mutex<String>, Notify)>,
}

impl ConsumerProcess {
    /// Starts the binary on `vhost` with the repository's config plus `env`, and waits until it
    /// says it is consuming.
    pub async fn start(vhost: &Vhost, env: &[(&str, &str)]) -> Self {
        Self::start_bin("warren-consumer", vhost, env).await
    }

    /// [`Self::start`] for another worker binary (a user's, built on warren-consumer).
    pub async fn start_bin(name: &str, vhost: &Vhost, env: &[(&str, &str)]) -> Self {
        let process = Self::spawn_bin(name, vhost, env);
        process.wait_for_log("consumer ready").await;
        process
    }

    /// Starts the binary without waiting for it to be ready.
    pub fn spawn_bin(name: &str, vhost: &Vhost, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin(name));
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
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let seen: Arc<(Mutex<String>, Notify)> = Arc::default();
        let log = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut all = seen.0.lock().unwrap_or_else(|p| p.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                    drop(all);
                    seen.1.notify_waiters();
                }
                seen.1.notify_waiters();
                seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        });
        Self { child, log, seen }
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until the log contains `needle`, or fails the test at the deadline.
    pub async fn wait_for_log(&self, needle: &str) {
        let wait = async {
            loop {
                let notified = self.seen.1.notified();
                if self.seen.0.lock().unwrap_or_else(|p| p.into_inner()).contains(needle) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(DEADLINE, wait).await.is_err() {
            let log = self.seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            panic!("{needle:?} did not appear in the consumer's log:\n{log}");
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    /// Sends a signal (`TERM`, `KILL`, ...) with kill(1).
    pub async fn signal(&self, name: &str) {
        // bash's builtin kill: no procps needed.
        let script = format!("kill -{name} {}", self.pid());
        let status = Command::new("bash").args(["-c", &script]).status().await.expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal) and log.
    pub async fn wait(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait()).await.expect("exits in time").expect("status");
        let log = self.log.await.expect("log reader");
        (status.code(), log)
    }
}

/// A configuration directory of its own: the repository's `default.toml` and `overlay` as the
/// `WARREN_ENV=test` overlay; removed when dropped. Pass its path as `WARREN_CONFIG_DIR`.
#[derive(Debug)]
pub struct ConfigDir(pub std::path::PathBuf);

impl ConfigDir {
    pub fn with_overlay(overlay: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warren-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::copy(repo_root().join("config/default.toml"), dir.join("default.toml")).expect("default.toml");
        std::fs::write(dir.join("test.toml"), overlay).expect("overlay");
        Self(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
