//! The commands layer: one file per subcommand turns its clap arguments into typed options
//! and drives the stages; [`session`] holds what several commands share (connecting, the
//! built-in simulator, confirmation, Ctrl-C, executing and finishing a run). Nothing below
//! this layer imports `cli` or `commands`.

pub mod plan;
pub mod restore;
pub mod resume;
pub mod run;
pub mod runs;
pub mod schema;
pub mod session;
pub mod sim;
pub mod validate;

use crate::cli::{Cli, Command};
use crate::exit::Outcome;
use std::future::Future;

/// Sets up logging and the async runtime, and runs the subcommand.
pub fn main(cli: Cli) -> Outcome {
    init_tracing();
    match cli.command {
        Command::Validate(args) => validate::validate(&args),
        Command::Schema => schema::schema(),
        Command::Run(args) => block_on(run::run(args)),
        Command::Plan(args) => block_on(plan::plan(plan::PlanOptions::from_args(args))),
        Command::Sim(args) => block_on(sim::serve(args)),
        Command::Resume(args) => block_on(resume::resume(args)),
        Command::Restore(args) => restore::restore(&args),
        Command::Runs(args) => runs::runs(&args),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings only).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The certificate verifier logs its refusals; the client's own error says more.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,rustls_platform_verifier=off")
        });
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
