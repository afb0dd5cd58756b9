//! `warren-producer`: parse arguments, run, exit with the code of how the command ended.

use clap::Parser;
use warren_producer::cli::Cli;
use warren_producer::{app, exit_code};

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

#[tokio::main]
async fn main() {
    let ended = app::run(Cli::parse()).await;
    if let Err(e) = &ended {
        eprintln!("warren-producer: {e:#}");
    }
    std::process::exit(exit_code::of(&ended));
}
