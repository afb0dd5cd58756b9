//! Fixtures for Warren's end-to-end tests: a private vhost per test on the real broker, the
//! real consumer (in-process or as its binary), the producer library, and helpers that await
//! conditions with deadlines instead of sleeping.

pub mod broker;
pub mod cluster;
pub mod console;
pub mod fleet;
pub mod https;
pub mod process;
pub mod prometheus;
pub mod s3;
pub mod scrape;
pub mod temp;
pub mod triton;

use std::path::PathBuf;
use std::time::Duration;

use warren_common::Job;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};

pub use broker::{Vhost, management_url, vhost};
pub use fleet::{
    Fleet, answer_checksum_jobs, collect_messages, eventually, fleet_and_producer, listen_to_every_event, queue_depth,
    settings_for, want_result,
};
pub use process::{ConfigDir, ConsumerProcess};
pub use temp::TempDir;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A built binary of the workspace, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps, a binary (warren-bench) from target/<profile>.
    let dirs = [exe.parent(), exe.parent().and_then(|d| d.parent())];
    let path = dirs.iter().flatten().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| name.into());
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The `[[routes]]` entry of `kind`, added (everything left to the kind's defaults) if missing.
pub fn route<'s>(settings: &'s mut warren_infra::Settings, kind: &str) -> &'s mut warren_infra::settings::Route {
    if settings.route(kind).is_none() {
        settings.routes.push(warren_infra::settings::Route::new(kind, ""));
    }
    let i = settings.routes.iter().position(|r| r.kind == kind).unwrap_or_default();
    &mut settings.routes[i]
}

/// How long a test waits for something that should happen in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// An `image.resize` job of `image` to fit 32x32 in the source's format: cheap to run, and the
/// job the failure tests corrupt or limit.
pub fn small_resize(image: Vec<u8>) -> Job {
    Job::from(ResizeJob {
        image,
        width: 32,
        height: 32,
        mode: ResizeMode::Fit,
        filter: Filter::Triangle,
        format: None,
        quality: None,
    })
}

/// `small_resize` of the sample photo (samples/images/china.jpg, 640x427 JPEG).
pub fn photo_resize() -> Job {
    small_resize(std::fs::read(repo_root().join("samples/images/china.jpg")).expect("samples/images/china.jpg"))
}
