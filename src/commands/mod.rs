//! The commands layer: one file per subcommand turns its clap arguments into typed options
//! and drives the stages; [`session`] holds what several commands share (connecting, the
//! built-in simulator, confirmation, Ctrl-C, executing and finishing a run). Nothing below
//! this layer imports `cli` or `commands`.

pub mod docs;
pub mod plan;
pub mod report;
pub mod restore;
pub mod resume;
pub mod run;
pub mod runs;
pub mod schema;
pub mod session;
pub mod sim;
pub mod snapshot;
pub mod validate;

use crate::cli::{Cli, ColorArg, Command};
use crate::exit::Outcome;
use crate::report::style::ColorWhen;
use std::future::Future;

/// Sets up logging and the async runtime, and runs the subcommand.
pub fn main(cli: Cli) -> Outcome {
    init_tracing(cli.verbose, cli.quiet);
    session::set_verbosity(session::Verbosity {
        color: match cli.color {
            ColorArg::Auto => ColorWhen::Auto,
            ColorArg::Always => ColorWhen::Always,
            ColorArg::Never => ColorWhen::Never,
        },
        quiet: cli.quiet,
    });
    match cli.command {
        Command::Validate(args) => validate::validate(&args),
        Command::Schema(args) => schema::schema(&args),
        Command::Run(args) => block_on(run::run(args)),
        Command::Plan(args) => block_on(plan::plan(plan::PlanOptions::from_args(args))),
        Command::Sim(args) => block_on(sim::serve(args)),
        Command::Snapshot(args) => block_on(snapshot::snapshot(args)),
        Command::Resume(args) => block_on(resume::resume(args)),
        Command::Restore(args) => restore::restore(&args),
        Command::Report(args) => report::report(&args),
        Command::Runs(args) => runs::runs(&args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

/// Logs go to stderr, filtered by `RUST_LOG`, else by `-v`/`-q` (default: warnings only).
/// powerbook's own logs name URLs without their query and never credentials; other crates
/// stay at warnings, so their debug output (headers) never shows.
fn init_tracing(verbose: u8, quiet: bool) {
    // The certificate verifier logs its refusals; the client's own error says more.
    let default = match (quiet, verbose) {
        (true, _) => "error,rustls_platform_verifier=off",
        (false, 0) => "warn,rustls_platform_verifier=off",
        (false, 1) => "warn,rustls_platform_verifier=off,powerbook::abiquo::client=debug",
        (false, _) => "warn,rustls_platform_verifier=off,powerbook=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
