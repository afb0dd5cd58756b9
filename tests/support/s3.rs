//! A real S3-compatible server per test: s3s-fs 0.14.1 (crates.io; `scripts/setup.sh` installs
//! it and `scripts/setup.sh --env` names it in `WARREN_S3S_FS`) over a temporary directory, on a
//! free port of 127.0.0.1, with credentials of its own; killed and its directory removed when
//! dropped. Buckets are the root's subdirectories, objects the files under them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use warren_infra::settings::{Secret, StoreSettings};

use crate::{DEADLINE, TempDir};

#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    root: TempDir,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
}

/// The s3s-fs binary: `WARREN_S3S_FS`, else where `scripts/setup.sh` installs it.
pub fn s3s_fs() -> PathBuf {
    let path = std::env::var_os("WARREN_S3S_FS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/warren/s3s-fs-0.14.1/bin/s3s-fs")
    });
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

impl S3Server {
    /// Starts the server with `buckets` made, and waits until it answers.
    pub async fn start(buckets: &[&str]) -> Self {
        let root = TempDir::new("warren-s3").expect("s3 root");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut server = Self {
            child: None,
            root,
            port,
            access_key: format!("AK{}", &id[..12]).to_uppercase(),
            secret_key: format!("sk-{id}"),
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "s3s-fs did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (its objects stay on disk).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The server's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends the server a signal (`STOP`: it hangs, holding its connections; `CONT`: it goes on).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the server runs");
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// Starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The worker's `[store]` for this server.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            s3_endpoint: self.endpoint(),
            s3_access_key_id: self.access_key.clone(),
            s3_secret_access_key: Secret(self.secret_key.clone()),
            timeout_ms: 5_000,
            ..StoreSettings::default()
        }
    }

    /// Where the object `bucket/key` is kept.
    pub fn file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Puts an object in place (on disk, as the server keeps it).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.file(bucket, key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, bytes).expect("object");
    }

    /// The object `bucket/key`, if the server holds it.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.file(bucket, key)).ok()
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}
