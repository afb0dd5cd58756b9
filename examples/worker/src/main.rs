//! A worker of your own: Warren's delivery path (confirms, retries, dead letters, poison,
//! drain, metrics, reconnection) around three kinds of this crate. Its configuration is
//! Warren's (`--config-dir`, `WARREN_ENV`, `WARREN__*`); `routes` prints what it serves.

use warren_consumer::WorkerBuilder;
use warren_example_worker::{Blurhash, Catalog, Normalize};

fn main() -> std::process::ExitCode {
    WorkerBuilder::new()
        .blocking(Blurhash)
        .batched(Normalize)
        .asynchronous_with(|_setup| async { Ok(warren_consumer::Loaded::new(Catalog::from_env()?)) })
        .main()
}
