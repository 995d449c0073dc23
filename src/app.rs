//! Orchestration per subcommand. Each command lives in its own stage module; this file only
//! sets up logging and the async runtime and dispatches.

use crate::cli::{Cli, Command};
use crate::exit::Outcome;
use std::future::Future;

pub fn main(cli: Cli) -> Outcome {
    init_tracing();
    match cli.command {
        Command::Validate(args) => crate::runbook::cmd::validate(&args),
        Command::Schema => crate::runbook::cmd::schema(),
        Command::Run(args) => block_on(crate::exec::cmd::run(args)),
        Command::Plan(args) => block_on(crate::plan::cmd::plan(args)),
        Command::Sim(args) => block_on(crate::sim::cmd::serve(args)),
        Command::Resume(args) => block_on(crate::journal::cmd::resume(args)),
        Command::Restore(args) => crate::journal::cmd::restore(&args),
        Command::Runs(args) => crate::journal::cmd::runs(&args),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings only).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn block_on(fut: impl Future<Output = Outcome>) -> Outcome {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Outcome::Aborted
        }
    }
}
