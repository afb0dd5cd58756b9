//! The object store of the runs by reference (issue 28): a real S3-compatible server (s3s-fs,
//! `warren_e2e::s3`, which `scripts/setup.sh` installs) on a free port of this host, objects
//! put in place before a run, the worker's `[store]` settings for it as environment variables,
//! and its process known, so that its CPU time is measured apart from the broker's and the
//! worker's. Killed, and its directory removed, when dropped.

use std::path::Path;

use anyhow::Context as _;
use warren_common::Ref;
use warren_consumer::store::Stores;
use warren_e2e::s3::S3Server;

/// The bucket the jobs' inputs are read from, and the one their outputs are written to.
pub const INPUTS: &str = "bench-inputs";
pub const OUTPUTS: &str = "bench-outputs";

#[derive(Debug)]
pub struct Store {
    server: S3Server,
    /// The server's process, for [`crate::procfs::CpuMeter::with_store`].
    pub pid: Option<u32>,
}

impl Store {
    /// Starts the server with [`INPUTS`] and [`OUTPUTS`] made, and finds its process.
    pub async fn start() -> anyhow::Result<Self> {
        let server = S3Server::start(&[INPUTS, OUTPUTS]).await;
        let pid = server.pid();
        anyhow::ensure!(pid.is_some(), "s3s-fs is not running");
        Ok(Self { server, pid })
    }

    /// Uploads `bytes` to `key` of [`INPUTS`] with an S3 PUT (the worker's own client), as a
    /// producer would; returns its URL. Not put on disk directly: s3s-fs keeps the ETag of an
    /// object it received, and computes it anew (MD5 of the whole file) for each HEAD and GET of
    /// one it did not.
    pub async fn upload(&self, key: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let url = format!("s3://{INPUTS}/{key}");
        let at = Ref::new(url.clone()).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        let client = Stores::new(&self.server.settings(), 1).context("an S3 client for s3s-fs")?;
        client.store(&at, bytes.to_vec()).await.with_context(|| format!("uploading {url}"))?;
        Ok(url)
    }

    /// The worker's `[store]` for this server, as `WARREN__STORE__*` variables.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        [
            ("WARREN__STORE__S3_ENDPOINT", self.server.endpoint()),
            ("WARREN__STORE__S3_ACCESS_KEY_ID", self.server.access_key.clone()),
            ("WARREN__STORE__S3_SECRET_ACCESS_KEY", self.server.secret_key.clone()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    }

    /// The `output_to` prefix of a run: `s3://bench-outputs/{run}/`.
    pub fn output_to(run: &str) -> String {
        format!("s3://{OUTPUTS}/{run}/")
    }

    /// The objects written under [`Self::output_to`]`(run)`, counted on disk (each job writes
    /// its outputs under `{prefix}{job_id}/`).
    pub fn outputs_of(&self, run: &str) -> usize {
        files_under(&self.server.root().join(OUTPUTS).join(run))
    }
}

/// Regular files under `dir`, at any depth, but hidden ones (a store's own bookkeeping).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
