//! `powerbook run`: load the runbook, connect, resolve the plan, confirm, execute, report.
//! The connection and simulator helpers are public: `plan` and `resume` use them too.

use crate::abiquo::auth::Credentials;
use crate::abiquo::client::{Client, ClientConfig};
use crate::abiquo::error::ClientError;
use crate::abiquo::media;
use crate::cli::{ConnectionArgs, RunArgs};
use crate::exec::event::Summary;
use crate::exec::poll::{PollPolicy, TaskDurations};
use crate::exec::sink::EventSink;
use crate::exec::{Hooks, RunControl, RunOptions, execute_with};
use crate::exit::Outcome;
use crate::journal::writer::JournalSink;
use crate::plan::Plan;
use crate::report::progress::Progress;
use crate::report::{Collector, Reporter, RunReport};
use crate::runbook::model::Runbook;
use crate::sim::{SimConfig, SimHandle};
use std::io::{IsTerminal, Write};
use std::num::NonZeroU32;
use std::path::Path;
use tokio::sync::mpsc;

/// `POWERBOOK_TEST_MODE=1`: deterministic output (fixed width, no progress, durations
/// redacted).
pub fn test_mode() -> bool {
    std::env::var("POWERBOOK_TEST_MODE").is_ok_and(|v| v == "1")
}

pub async fn run(mut args: RunArgs) -> Outcome {
    if args.dry_run {
        return crate::plan::cmd::plan(crate::plan::cmd::dry_run_args(&args)).await;
    }
    if let Err(outcome) = crate::plan::cmd::fill_runbook_path(&mut args) {
        return outcome;
    }
    if !args.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: `run` changes VM power states and asks for confirmation first, but stdin \
             is not a terminal; pass --yes to run without asking"
        );
        return Outcome::Usage;
    }
    let Some(runbook) = crate::runbook::load_or_report(&args.runbook, false) else {
        return Outcome::Usage;
    };
    let sim = if args.simulate {
        match start_simulator(
            args.simulate_inventory.as_deref(),
            args.simulate_seed,
            args.simulate_speed,
        )
        .await
        {
            Ok(sim) => Some(sim),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Usage;
            }
        }
    } else {
        None
    };
    let outcome = run_connected(&args, &runbook, sim.as_ref().map(SimHandle::base_url)).await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    outcome
}

/// Starts the built-in simulator on loopback (the lab unless `inventory` is given) and says so
/// on stderr.
pub async fn start_simulator(
    inventory: Option<&Path>,
    seed: Option<u64>,
    speed: Option<f64>,
) -> Result<SimHandle, String> {
    let mut config = match inventory {
        Some(path) => SimConfig::from_inventory_file(path).map_err(|e| e.to_string())?,
        None => SimConfig::lab(),
    };
    if let Some(seed) = seed {
        config.seed = seed;
    }
    if let Some(speed) = speed {
        config.speed = speed;
    }
    let sim = SimHandle::start(config)
        .await
        .map_err(|e| format!("cannot start the built-in simulator: {e}"))?;
    eprintln!(
        "note: running against the built-in simulator at {}",
        sim.base_url()
    );
    Ok(sim)
}

/// Client settings from flag > environment > runbook (endpoint, version), credentials from
/// the environment (the simulator's own account when simulating without any).
pub fn client_config(
    conn: &ConnectionArgs,
    runbook: &Runbook,
    simulator: Option<&str>,
) -> Result<ClientConfig, String> {
    let endpoint = match simulator {
        Some(url) => url.to_owned(),
        None => conn
            .endpoint
            .clone()
            .or_else(|| runbook.api.endpoint.clone())
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| {
                "no API endpoint: pass --endpoint, set ABIQUO_API_URL, or set `endpoint` in \
                 the runbook's [api] table"
                    .to_owned()
            })?,
    };
    let version = conn
        .api_version
        .clone()
        .or_else(|| runbook.api.version.clone())
        .unwrap_or_else(|| media::DEFAULT_VERSION.to_owned());
    let credentials = match Credentials::from_env()? {
        Some(c) => c,
        None if simulator.is_some() => Credentials::Basic {
            user: crate::sim::DEFAULT_USER.to_owned(),
            password: crate::sim::DEFAULT_PASSWORD.to_owned(),
        },
        None => {
            return Err(
                "no credentials: set ABIQUO_API_USERNAME and ABIQUO_API_PASSWORD, or \
                 ABIQUO_API_TOKEN (or ABIQUO_API_BEARER)"
                    .to_owned(),
            );
        }
    };
    let mut config = ClientConfig::new(&endpoint, &version, credentials);
    config.insecure = conn.insecure;
    config.ca_cert = conn.ca_cert.clone();
    config.requests_per_second = runbook
        .limits
        .requests_per_second
        .and_then(|n| NonZeroU32::new(u32::try_from(n.get()).unwrap_or(u32::MAX)));
    Ok(config)
}

/// Builds the client and logs in. `Err` carries the exit outcome (message already printed).
pub async fn connect(config: ClientConfig) -> Result<Client, Outcome> {
    if config.insecure {
        eprintln!(
            "warning: TLS certificate verification is disabled (--insecure / \
             ABIQUO_API_INSECURE): the API's identity is not checked"
        );
    }
    let client = Client::new(config).map_err(|e| {
        eprintln!("error: {e}");
        Outcome::Usage
    })?;
    match client.login().await {
        Ok(_) => Ok(client),
        Err(e) => {
            eprintln!("error: {}", describe_connect_error(&e, client.endpoint()));
            Err(Outcome::Aborted)
        }
    }
}

fn describe_connect_error(e: &ClientError, endpoint: &str) -> String {
    match e {
        ClientError::Unauthorized { .. } => {
            format!("{e}; check ABIQUO_API_USERNAME / ABIQUO_API_PASSWORD or ABIQUO_API_TOKEN")
        }
        ClientError::Transport { .. } | ClientError::Timeout { .. } => {
            format!("{e} (endpoint {endpoint})")
        }
        _ => format!("cannot log in at {endpoint}: {e}"),
    }
}

async fn run_connected(args: &RunArgs, runbook: &Runbook, simulator: Option<&str>) -> Outcome {
    let test_mode = test_mode();
    let mut config = match client_config(&args.connection, runbook, simulator) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    config.request_timeout = args.tuning.request_timeout;
    let client = match connect(config).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let plan = match crate::plan::cmd::plan_for_run(&client, runbook, args).await {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    eprint!("{}", plan_overview(&plan));
    if !args.yes && !confirm().await {
        eprintln!("Nothing was changed.");
        return Outcome::Usage;
    }
    let journal = match crate::journal::cmd::open_for_run(&args.journal, &args.runbook, &plan) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}; nothing was changed");
            return Outcome::Usage;
        }
    };
    let mut options = run_options(&args.tuning);
    // Earlier runs' journals tell how long tasks take on this cloud: start warm.
    options.durations =
        crate::journal::priors::from_journals(&args.journal.runs_dir, client.endpoint()).await;
    let control = RunControl::new();
    let signals = tokio::spawn(handle_ctrl_c(control.clone()));
    let show_progress = !test_mode && std::io::stderr().is_terminal();
    let hooks = Hooks { resume: None };
    let (report, summary) = execute_with_hooks(
        &client,
        &plan,
        runbook,
        &options,
        &control,
        show_progress,
        Some(journal.sink()),
        hooks,
    )
    .await;
    signals.abort();

    let finish = crate::journal::cmd::Finish {
        emit_restore: args.journal.emit_restore.as_deref(),
        report_file: args.report.as_deref(),
        output: args.output,
        test_mode,
    };
    crate::journal::cmd::finish_run(journal, &report, &summary, finish).await
}

/// The executor's options from the timing flags.
pub fn run_options(tuning: &crate::cli::RunTuning) -> RunOptions {
    RunOptions {
        poll: PollPolicy {
            initial: tuning.poll_initial,
            max: tuning.poll_max.max(tuning.poll_initial),
            ..PollPolicy::default()
        },
        lock_wait: tuning.lock_wait,
        drain_timeout: tuning.drain_timeout,
        durations: TaskDurations::new(),
    }
}

/// Runs the plan with the collector (and progress bars) attached; the library entry point
/// tests and later commands reuse.
pub async fn execute_with_reporters(
    client: &Client,
    plan: &Plan,
    runbook: &Runbook,
    options: &RunOptions,
    control: &RunControl,
    show_progress: bool,
) -> (RunReport, Summary) {
    execute_with_hooks(
        client,
        plan,
        runbook,
        options,
        control,
        show_progress,
        None,
        Hooks::default(),
    )
    .await
}

/// [`execute_with_reporters`] with a journal and/or resume state (`run`, `resume`).
#[allow(clippy::too_many_arguments)] // Flat on purpose until the commands layer groups them.
pub async fn execute_with_hooks(
    client: &Client,
    plan: &Plan,
    runbook: &Runbook,
    options: &RunOptions,
    control: &RunControl,
    show_progress: bool,
    journal: Option<JournalSink>,
    hooks: Hooks,
) -> (RunReport, Summary) {
    let (tx, mut rx) = mpsc::channel(1024);
    let consumer = tokio::spawn(async move {
        let mut collector = Collector::new();
        let mut progress = Progress::new(show_progress);
        while let Some(event) = rx.recv().await {
            progress.event(&event);
            collector.event(&event);
        }
        progress.finish();
        collector.finish();
        collector.into_report()
    });
    let mut sinks: Vec<&dyn EventSink> = Vec::new();
    if let Some(journal) = &journal {
        sinks.push(journal);
    }
    sinks.push(&tx);
    let summary = execute_with(client, plan, runbook, options, &sinks, control, &hooks).await;
    // The journal's writer finishes once every sink is gone.
    drop(sinks);
    drop(journal);
    drop(tx);
    let report = match consumer.await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: the reporter stopped: {e}");
            Collector::new().into_report()
        }
    };
    (report, summary)
}

/// Exit code policy: interrupted > aborted > some failed > success.
pub fn exit_outcome(summary: &Summary) -> Outcome {
    if summary.interrupted {
        Outcome::Interrupted
    } else if summary.aborted.is_some() {
        Outcome::Aborted
    } else if summary.counts.failed > 0 || summary.counts.interrupted > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::Success
    }
}

/// What will happen, per step, before anything is changed.
pub fn plan_overview(plan: &Plan) -> String {
    let mut out = format!(
        "Runbook '{}' against {}: {} VMs to look at in {} steps\n",
        plan.runbook_name,
        plan.endpoint,
        plan.total_live(),
        plan.steps.len()
    );
    for s in &plan.steps {
        let c = s.counts();
        let mut parts = vec![format!("{} to {}", c.act, s.action)];
        if c.skip > 0 {
            parts.push(format!("{} already done", c.skip));
        }
        if c.refuse > 0 {
            parts.push(format!("{} refused", c.refuse));
        }
        if c.excluded > 0 {
            parts.push(format!("{} excluded", c.excluded));
        }
        if c.protected > 0 {
            parts.push(format!("{} protected", c.protected));
        }
        out.push_str(&format!("  step '{}': {}\n", s.name, parts.join(", ")));
    }
    out
}

/// `Proceed? [y/N]` on the terminal.
pub async fn confirm() -> bool {
    eprint!("Proceed? [y/N] ");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(answer, Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// First Ctrl-C: stop launching and drain. Second: exit at once.
pub async fn handle_ctrl_c(control: RunControl) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!(
        "\ninterrupted: starting nothing new and draining tasks in flight (Ctrl-C again to \
         exit at once)"
    );
    control.interrupt();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("interrupted again: exiting now; tasks in flight keep running in the cloud");
        std::process::exit(i32::from(Outcome::Interrupted.code()));
    }
}

pub fn write_report(path: &Path, report: &RunReport) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", report.to_json()))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::client::ClientStats;
    use crate::exec::event::ResultCounts;
    use std::time::Duration;

    fn summary(failed: usize, aborted: bool, interrupted: bool) -> Summary {
        Summary {
            counts: ResultCounts {
                ok: 1,
                failed,
                ..ResultCounts::default()
            },
            wall_ms: 0,
            aborted: aborted.then(|| "x".to_owned()),
            interrupted,
            api: ClientStats::default(),
        }
    }

    #[test]
    fn exit_codes_follow_the_documented_policy() {
        assert_eq!(exit_outcome(&summary(0, false, false)).code(), 0);
        assert_eq!(exit_outcome(&summary(1, false, false)).code(), 1);
        assert_eq!(exit_outcome(&summary(1, true, false)).code(), 3);
        assert_eq!(exit_outcome(&summary(1, true, true)).code(), 130);
    }

    #[test]
    fn durations_of_the_tuning_flags_must_be_positive() {
        assert!(crate::cli::parse_positive_duration("0s").is_err());
        assert_eq!(
            crate::cli::parse_positive_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
    }
}
