//! `warrenctl`: parse, run, map the outcome to an exit code (see `errors.rs`).

use clap::Parser;
use warrenctl::cli::Cli;
use warrenctl::context::Ctx;

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warrenctl: cannot start: {e}");
            std::process::exit(6);
        }
    };
    let outcome = runtime.block_on(async {
        let ctx = Ctx::from_global(&cli.global)?;
        warrenctl::commands::run(&ctx, cli.command).await
    });
    if let Err(e) = outcome {
        eprintln!("warrenctl: {e}");
        std::process::exit(e.exit_code());
    }
}
