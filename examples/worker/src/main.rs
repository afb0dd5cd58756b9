//! A worker of your own: Warren's delivery path (confirms, retries, dead letters, poison,
//! drain, metrics, reconnection) around the kinds of this crate. Its configuration is
//! Warren's (`--config-dir`, `WARREN_ENV`, `WARREN__*`); `routes` prints what it serves.

use warren_consumer::{Loaded, WorkerBuilder};
use warren_example_worker::*;

fn main() -> std::process::ExitCode {
    WorkerBuilder::new()
        .blocking(image_blurhash::Blurhash)
        .batched(vector_normalize::Normalize)
        .asynchronous_with(|_setup| async { Ok(Loaded::new(catalog_price::Catalog::from_env()?)) })
        .main()
}
