//! Command line (clap derive). Raw arguments stop here: `app` turns them into typed options.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::exit::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "powerbook",
    version,
    about = "Run declarative TOML runbooks of VM power actions against Abiquo clouds",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check runbooks offline: syntax, keys, values, step graph, conflicts.
    #[command(after_help = EXIT_CODES_HELP)]
    Validate(ValidateArgs),
    /// Print the JSON Schema (draft-07) of the runbook format.
    Schema,
    /// Run a runbook: power actions on the selected VMs, then a results table.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Dry run: read current VM states (GET only) and show what `run` would do.
    #[command(after_help = EXIT_CODES_HELP)]
    Plan(PlanArgs),
    /// Serve a local simulator of the Abiquo API (loopback only unless told otherwise).
    Sim(SimArgs),
}

/// Output format of a command's result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Tables and text for people.
    #[default]
    Human,
    /// One versioned JSON document.
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    /// Diagnostics as text (default) or JSON for editors and CI.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Connection to the Abiquo API. Credentials come from the environment only.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// API root URL, e.g. https://abiquo.example.com/api (flag > env > runbook).
    #[arg(long, env = "ABIQUO_API_URL", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Media-type version sent on Accept and Content-Type (flag > runbook > 5.0).
    #[arg(long, value_name = "X.Y")]
    pub api_version: Option<String>,
    /// Skip TLS certificate verification (a warning is printed).
    #[arg(long, env = "ABIQUO_API_INSECURE", value_parser = clap::builder::FalseyValueParser::new())]
    pub insecure: bool,
    /// Trust this PEM CA certificate (private Abiquo CAs).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook to run.
    #[arg(value_name = "RUNBOOK")]
    pub runbook: PathBuf,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Run against a built-in simulator on loopback instead of a real cloud.
    #[arg(long)]
    pub simulate: bool,
    /// Simulator inventory for --simulate (default: the built-in lab, runbooks/lab.toml).
    #[arg(long, value_name = "FILE", requires = "simulate")]
    pub simulate_inventory: Option<PathBuf>,
    /// Seed of the simulator started by --simulate.
    #[arg(long, value_name = "N", requires = "simulate")]
    pub simulate_seed: Option<u64>,
    /// Speed factor of the simulator started by --simulate (2 = tasks take half as long).
    #[arg(long, value_name = "FACTOR", requires = "simulate")]
    pub simulate_speed: Option<f64>,
    /// Only plan (same as `powerbook plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Results as tables (default) or one JSON document.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The runbook to plan.
    #[arg(value_name = "RUNBOOK")]
    pub runbook: PathBuf,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Plan against a built-in simulator on loopback.
    #[arg(long)]
    pub simulate: bool,
    /// Simulator inventory for --simulate (default: the built-in lab).
    #[arg(long, value_name = "FILE", requires = "simulate")]
    pub simulate_inventory: Option<PathBuf>,
    /// Exit non-zero when the plan has refusals or empty steps.
    #[arg(long)]
    pub strict: bool,
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Inventory file (TOML). Default: the built-in lab (runbooks/lab.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    pub inventory: Option<PathBuf>,
    /// Generate N VMs spread over VDCs and vApps with deterministic names.
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Seed for task durations and injected faults (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Speed factor for demos (2 = tasks take half as long).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}
