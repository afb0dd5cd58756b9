//! `warren-producer`: parse arguments, run, exit with the command's code.

use clap::Parser;
use warren_producer::cli::{Cli, run};

#[global_allocator]
static GLOBAL: warren_infra::alloc::Switchable = warren_infra::alloc::Switchable;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren-producer: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
