//! Command line (clap derive): types, value parsers and help. Raw arguments stop here:
//! `commands` turns them into typed options.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::abiquo::client::DEFAULT_MAX_CONNECTIONS;
use crate::exit::{
    EXIT_CODES_HELP, LOCAL_HELP, PLAN_HELP, PRINT_HELP, REPORT_HELP, RUN_HELP, SIM_HELP,
    SNAPSHOT_HELP, VALIDATE_HELP,
};

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
    /// Colour outcomes: on a terminal unless NO_COLOR is set (auto), always, or never.
    #[arg(long, global = true, value_enum, default_value_t, value_name = "WHEN")]
    pub color: ColorArg,
    /// More on stderr: -v logs every API request (method, URL without its query, status,
    /// time; never credentials), -vv everything powerbook logs. RUST_LOG overrides both.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less on stderr: errors only, no progress bars, no notes.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorArg {
    #[default]
    Auto,
    Always,
    Never,
}

/// How many VM rows human output lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ShowArg {
    /// Every VM of a small run (up to 20 rows); of a larger one only those that need
    /// attention (failed, not started, interrupted, refused), the rest counted.
    #[default]
    Auto,
    /// Every VM.
    All,
    /// Only the VMs that need attention.
    Problems,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check runbooks offline: syntax, keys, values, step graph, conflicts.
    #[command(after_help = VALIDATE_HELP)]
    Validate(ValidateArgs),
    /// Print the JSON Schema (draft-07) of the runbook format (or, with --inventory, of the
    /// simulator's inventory format).
    #[command(after_help = PRINT_HELP)]
    Schema(SchemaArgs),
    /// Run a runbook: power actions on the selected VMs, then a results table.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Dry run: read current VM states (GET only) and show what `run` would do.
    #[command(after_help = PLAN_HELP)]
    Plan(PlanArgs),
    /// Serve a local simulator of the Abiquo API (loopback only unless told otherwise).
    #[command(after_help = SIM_HELP)]
    Sim(SimArgs),
    /// Read a cloud (GET only) and write its VDCs, vApps and VMs as a simulator inventory,
    /// to rehearse runbooks against a copy of it (`run --simulate --simulate-inventory`).
    #[command(after_help = SNAPSHOT_HELP)]
    Snapshot(SnapshotArgs),
    /// Continue an interrupted run from its journal, without sending any action twice.
    #[command(after_help = RUN_HELP)]
    Resume(ResumeArgs),
    /// Write a runbook that returns every VM a run touched to its power state before it.
    #[command(after_help = LOCAL_HELP)]
    Restore(RestoreArgs),
    /// Write one self-contained HTML page of a run from its journal: verdict, a timeline of
    /// every step, wave and VM, the estimate beside the actual, and the failed VMs.
    #[command(after_help = REPORT_HELP)]
    Report(ReportArgs),
    /// List run journals, or show one run's results (`runs show JOURNAL`).
    #[command(after_help = LOCAL_HELP)]
    Runs(RunsArgs),
    /// Print a shell completion script, e.g.
    /// `powerbook completions bash > ~/.local/share/bash-completion/completions/powerbook`.
    #[command(after_help = PRINT_HELP)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `powerbook man | man -l -`.
    #[command(after_help = PRINT_HELP)]
    Man,
}

/// What `run` and `resume` print on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RunOutput {
    /// Tables and text for people, at the end.
    #[default]
    Human,
    /// One versioned JSON report, at the end.
    Json,
    /// One JSON event per line as the run goes (runbooks/events.schema.json); no report.
    Ndjson,
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

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The schema of simulator inventories (`powerbook sim --inventory FILE`, `powerbook
    /// snapshot`) instead of runbooks.
    #[arg(long)]
    pub inventory: bool,
}

/// Connection to the Abiquo API. Credentials come from the environment only.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
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
    /// Trust the certificates of this PEM file: a private CA, or the server's own
    /// self-signed certificate (pinned: exactly that certificate is accepted).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Also send credentials to this origin (scheme://host:port) when the API's links point
    /// there, e.g. a public name of the same API. Repeatable. Never an http origin for an
    /// https endpoint.
    #[arg(long, value_name = "URL")]
    pub allow_origin: Vec<String>,
    /// Allow plain http with credentials to a host other than this machine.
    #[arg(long)]
    pub allow_http: bool,
    /// Timeout of one HTTP request to the API.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
    /// Timeout of opening a connection (TCP and TLS).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,
    /// Longest time one request may take with its retries (each retry is printed on
    /// stderr); then it fails with the time it took.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub retry_budget: Duration,
    /// Largest answer read from the API, e.g. 8MiB or 512KiB; a larger one is an error.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub max_response_size: usize,
    /// Most requests in flight to the API at once, each on its own connection; more wait
    /// their turn (a quarter, at most 32, serve listings). Lower it for an API server or proxy
    /// that allows fewer connections.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_at_least_one)]
    pub max_connections: usize,
}

/// A whole number, at least 1.
fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a whole number of at least 1")),
    }
}

/// `8MiB`, `512KiB`, `1048576` (bytes); at least 1 KiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size; e.g. 8MiB, 512KiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{s}`: unknown unit; use KiB, MiB or GiB")),
    };
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 1024 {
        return Err(format!("`{s}`: at least 1KiB"));
    }
    Ok(bytes)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook to run (with --plan it may be left out: the plan names its runbook).
    #[arg(value_name = "RUNBOOK")]
    pub runbook: Option<PathBuf>,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approve every `approve` gate without asking (for unattended runs). Without it those
    /// gates are asked on the terminal, and a run that has some needs one: `--yes` only
    /// answers `Proceed?`.
    #[arg(long)]
    pub approve_gates: bool,
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
    #[arg(long, value_name = "FACTOR", requires = "simulate", value_parser = parse_speed)]
    pub simulate_speed: Option<f64>,
    /// Only plan (same as `powerbook plan`).
    #[arg(long, conflicts_with = "plan")]
    pub dry_run: bool,
    /// Execute a plan saved by `powerbook plan --save FILE`: exactly its VMs and actions.
    /// Refused (exit 3, listing the VMs) if a VM's state changed since the plan was made,
    /// and (exit 2) if the runbook changed.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --plan: when VMs changed since the plan was made, plan again from their current
    /// states instead of refusing.
    #[arg(long, requires = "plan")]
    pub replan: bool,
    /// With --yes, wait for the whole listing before acting. By default a run with --yes
    /// starts its first step on the first pages of VMs while the rest are listed, when the
    /// runbook allows it (one selector, no gate before it, waves by count, no `approve`
    /// gate); the overview of the plan is then shown once it is whole.
    #[arg(long)]
    pub whole_plan_first: bool,
    /// Results as tables (default), one JSON report, or JSON events as they happen.
    #[arg(long, value_enum, default_value_t)]
    pub output: RunOutput,
    /// Which VM rows the results list.
    #[arg(long, value_enum, default_value_t, value_name = "ROWS")]
    pub show: ShowArg,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write an HTML timeline of the run to this file (as `powerbook report JOURNAL
    /// --html FILE` does).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub journal: JournalArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
}

/// Where the run's journal goes, and what is derived from it.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Journal")]
pub struct JournalArgs {
    /// Journal file (default: <runs-dir>/<runbook-name>-<UTC time>.jsonl).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Directory of run journals.
    #[arg(long, value_name = "DIR", env = "POWERBOOK_RUNS_DIR", default_value = crate::journal::DEFAULT_RUNS_DIR)]
    pub runs_dir: PathBuf,
    /// After the run, write a runbook that returns every touched VM to its state before.
    #[arg(long, value_name = "FILE")]
    pub emit_restore: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The journal of the run to continue.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// Also retry the VMs that failed (the rest of the step graph continues in order).
    #[arg(long)]
    pub retry_failed: bool,
    /// Resume even though the runbook file (or the endpoint) changed since the journal was
    /// written.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approve every `approve` gate without asking (for unattended runs). Without it those
    /// gates are asked on the terminal, and a run that has some needs one: `--yes` only
    /// answers `Proceed?`.
    #[arg(long)]
    pub approve_gates: bool,
    /// Resume a rehearsal (a `run --simulate`): its simulator comes back on its own port
    /// with its world saved beside the journal, time caught up (tasks that would have
    /// finished meanwhile have finished).
    #[arg(long)]
    pub simulate: bool,
    /// Results as tables (default), one JSON report, or JSON events as they happen.
    #[arg(long, value_enum, default_value_t)]
    pub output: RunOutput,
    /// Which VM rows the results list.
    #[arg(long, value_enum, default_value_t, value_name = "ROWS")]
    pub show: ShowArg,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Also write an HTML timeline of the run to this file (as `powerbook report JOURNAL
    /// --html FILE` does).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// After the run, write a runbook that returns every touched VM to its state before.
    #[arg(long, value_name = "FILE")]
    pub emit_restore: Option<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The journal of the run (finished, crashed or resumed).
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// Write the page to this file: one HTML file that fetches nothing.
    #[arg(long, value_name = "FILE", required = true)]
    pub html: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The journal of the run to undo.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// Write the runbook to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
    /// Directory of run journals.
    #[arg(long, value_name = "DIR", env = "POWERBOOK_RUNS_DIR", default_value = crate::journal::DEFAULT_RUNS_DIR)]
    pub runs_dir: PathBuf,
    /// A table (default) or a JSON list.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Print a run's results table from its journal.
    Show {
        #[arg(value_name = "JOURNAL")]
        journal: PathBuf,
        /// Tables (default) or the JSON report.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Which VM rows the results list.
        #[arg(long, value_enum, default_value_t, value_name = "ROWS")]
        show: ShowArg,
    },
    /// Follow a run from another terminal (its journal), with the progress the run itself
    /// draws, then print its results; exits with the run's exit code.
    Watch {
        #[arg(value_name = "JOURNAL")]
        journal: PathBuf,
        /// Which VM rows the results list.
        #[arg(long, value_enum, default_value_t, value_name = "ROWS")]
        show: ShowArg,
    },
}

/// Timing knobs of `run` (the defaults suit real clouds).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Timing")]
pub struct RunTuning {
    /// First delay before polling a task while its action's duration is unknown; later
    /// polls back off by 1.5x. Once tasks of the action have finished, polls go near the
    /// expected finish instead.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_positive_duration)]
    pub poll_initial: Duration,
    /// Longest delay between two polls of a task that may have finished (the wait before
    /// the earliest expected finish can be longer).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    pub poll_max: Duration,
    /// How long to wait for a LOCKED VM (busy with another task) before failing it.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_positive_duration)]
    pub lock_wait: Duration,
    /// After Ctrl-C, how long to keep following tasks in flight.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_positive_duration)]
    pub drain_timeout: Duration,
    /// How old a VM's state may be, as the plan's listing or a read saw it, for a request to
    /// be sent without reading the VM first. A request refused because the state moved
    /// (VM-4, VM-26, busy) is followed by a read and a fresh decision. `0s` reads every VM
    /// just before acting.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub state_max_age: Duration,
    /// Poll every task at its own link, instead of watching tasks through reads of the VM
    /// listing's pages (a VM is LOCKED while its task runs), which takes fewer requests and
    /// sees tasks end sooner when several VMs of a page are in flight.
    #[arg(long)]
    pub no_watch: bool,
}

/// `30s`, `5m`, `250ms` (humantime), strictly positive.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The runbook to plan.
    #[arg(value_name = "RUNBOOK")]
    pub runbook: PathBuf,
    /// Plan against a built-in simulator on loopback.
    #[arg(long)]
    pub simulate: bool,
    /// Simulator inventory for --simulate (default: the built-in lab).
    #[arg(long, value_name = "FILE", requires = "simulate")]
    pub simulate_inventory: Option<PathBuf>,
    /// Exit 1 when the plan has warnings (refusals, empty steps, a threshold the refusals
    /// alone cross, an estimate over the deadline), for CI against a staging cloud.
    #[arg(long)]
    pub strict: bool,
    /// The plan as text and tables (default) or one versioned JSON document.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Which VM rows each step's table lists.
    #[arg(long, value_enum, default_value_t, value_name = "ROWS")]
    pub show: ShowArg,
    /// Also save the plan (the JSON document) to FILE, for `powerbook run --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Directory of run journals: earlier runs of this runbook tell how long tasks take.
    #[arg(long, value_name = "DIR", env = "POWERBOOK_RUNS_DIR", default_value = crate::journal::DEFAULT_RUNS_DIR)]
    pub runs_dir: PathBuf,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Write the inventory to FILE instead of stdout; an existing FILE is refused unless
    /// --force.
    #[arg(long, short = 'o', visible_alias = "out", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite the --output FILE if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
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
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Mean task duration (overrides the inventory's), e.g. "1500ms".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_duration: Option<Duration>,
    /// Uniform task-duration jitter (overrides the inventory's), e.g. "500ms".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub task_jitter: Option<Duration>,
    /// Error answered for a power request on a LOCKED VM (the reference leaves it open).
    #[arg(long, value_enum, value_name = "CODE")]
    pub locked_code: Option<crate::sim::LockedCode>,
    /// Lifetime of the tokens /login issues, e.g. "3s"; older ones are refused 401 GEN-5
    /// (default: tokens never expire).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub token_ttl: Option<Duration>,
    /// Base URL of every link in answers, e.g. https://cloud.example.com/api (an API behind
    /// a proxy or under another public name); requests are still served on --listen.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Delay added to every answer under /api, e.g. "80ms", as a real API's network and
    /// server time: half before the request is processed, half after (default: none).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// Uniform jitter of --latency: each answer's delay is drawn in latency ± jitter
    /// (seeded by --seed); at most --latency.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "latency")]
    pub latency_jitter: Option<Duration>,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// Fault injection for `powerbook sim`: each RATE is a probability in 0.0..=1.0, all off by
/// default.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fault injection")]
pub struct FaultArgs {
    /// Answer HTTP 503 to this share of requests.
    #[arg(long = "fault-503", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub http_503: f64,
    /// Answer HTTP 429 (with Retry-After) to this share of requests.
    #[arg(long = "fault-429", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub http_429: f64,
    /// Retry-After of injected 429s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_after: Option<Duration>,
    /// Close the connection without answering (request not processed).
    #[arg(long = "fault-drop", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub drop_connection: f64,
    /// Process a power request, then close the connection without answering.
    #[arg(long = "fault-lose-answer", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub lose_answer: f64,
    /// Delay answers by --slow-delay.
    #[arg(long = "fault-slow", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub slow: f64,
    /// Delay of slow answers.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slow_delay: Option<Duration>,
    /// Make accepted tasks fail (job FAILED, rollbackState ROLLBACK_DONE).
    #[arg(long = "fault-job-fail", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub job_failure: f64,
    /// Make accepted tasks never finish (the VM stays LOCKED).
    #[arg(long = "fault-stuck", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub stuck_task: f64,
    /// Cut successful JSON answers in half.
    #[arg(long = "fault-malformed", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub malformed_json: f64,
    /// Process a power request but answer its 202 without the task's `status` link.
    #[arg(long = "fault-no-status-link", value_name = "RATE", value_parser = parse_rate, default_value_t = 0.0)]
    pub no_status_link: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a rate between 0.0 and 1.0")),
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a speed factor > 0")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 500ms, 2s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_of_the_tuning_flags_must_be_positive() {
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(
            parse_positive_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
    }

    #[test]
    fn sizes_take_binary_units_and_refuse_tiny_or_unknown_ones() {
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("10").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
