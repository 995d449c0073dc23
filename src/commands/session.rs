//! What `run`, `plan` and `resume` share: the built-in simulator for `--simulate`, the
//! client settings and login, the confirmation prompt, Ctrl-C, executing a plan with the
//! reporters attached, and finishing a run (journal, restore runbook, report file, output,
//! resume hint).

use crate::abiquo::api::CloudApi;
use crate::abiquo::auth::Credentials;
use crate::abiquo::client::{Client, ClientConfig};
use crate::abiquo::error::ClientError;
use crate::abiquo::media;
use crate::abiquo::retry::{RetryNotice, RetryObserver};
use crate::cli::{ConnectionArgs, RunOutput, RunTuning, ShowArg};
use crate::exec::event::Summary;
use crate::exec::gate::{Approval, Approver};
use crate::exec::head::Listing;
use crate::exec::poll::PollPolicy;
use crate::exec::resume::ResumeState;
use crate::exec::sink::EventSink;
use crate::exec::status::FinalStatus;
use crate::exec::{Hooks, RunControl, RunOptions, Start, execute_from};
use crate::exit::Outcome;
use crate::journal::lifecycle::resume_hint;
use crate::journal::restore::{NOTHING_TOUCHED, restore_runbook};
use crate::journal::writer::JournalSink;
use crate::journal::writer::JournalWriter;
use crate::journal::{Journal, RunView, TORN_NOTE, load};
use crate::pacing::TaskDurations;
use crate::plan::Plan;
use crate::report::progress::{Progress, ProgressMode};
use crate::report::stream::NdjsonWriter;
use crate::report::style::{ColorWhen, RenderOptions, Show};
use crate::report::table;
use crate::report::{Collector, Reporter, RunReport, WholePlanFirst};
use crate::runbook::model::{Action, Runbook};
use crate::sim::{
    SavedWorld, SimAction, SimConfig, SimControl, SimHandle, WORLD_FORMAT, WorldEvent, WorldHeader,
    WorldRecorder, world_path,
};
use futures::future::BoxFuture;
use indicatif::MultiProgress;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the global flags say about output, set once before the command runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verbosity {
    pub color: ColorWhen,
    /// `-q`: errors only, no progress, no notes.
    pub quiet: bool,
}

static VERBOSITY: std::sync::OnceLock<Verbosity> = std::sync::OnceLock::new();

/// Records the global output flags (the first call wins).
pub fn set_verbosity(v: Verbosity) {
    let _ = VERBOSITY.set(v);
}

pub fn verbosity() -> Verbosity {
    VERBOSITY.get().copied().unwrap_or_default()
}

/// How human output on stdout is drawn, with `show` rows.
pub fn render_options(show: ShowArg) -> RenderOptions {
    let show = match show {
        ShowArg::Auto => Show::Auto,
        ShowArg::All => Show::All,
        ShowArg::Problems => Show::Problems,
    };
    RenderOptions::for_stdout(test_mode(), verbosity().color, show)
}

/// How live progress shows on stderr: bars on a terminal, lines elsewhere (test mode
/// included, without times), nothing with `-q`.
pub fn progress_mode() -> ProgressMode {
    if verbosity().quiet {
        ProgressMode::Off
    } else if !test_mode() && std::io::stderr().is_terminal() {
        ProgressMode::Bars
    } else {
        ProgressMode::Lines
    }
}

/// `POWERBOOK_TEST_MODE=1`: deterministic output (fixed width, no progress, durations
/// redacted).
pub fn test_mode() -> bool {
    std::env::var("POWERBOOK_TEST_MODE").is_ok_and(|v| v == "1")
}

/// A plan with `approve` gates needs someone to approve them: refused (before anything is
/// sent) when nobody can. Says so and returns false then.
pub fn can_approve(plan: &Plan, approve: Approve) -> bool {
    let steps = plan.steps_with_approvals();
    if steps.is_empty() || approve != Approve::Nobody {
        return true;
    }
    eprintln!(
        "error: step {} has an `approve` gate, and stdin is not a terminal to ask on; pass \
         --approve-gates to approve every such gate (--yes only answers `Proceed?`); nothing \
         was changed",
        steps
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    false
}

/// A command that changes VM power states asks first; without a terminal to ask on it
/// needs `--yes`. Says so and returns false when it cannot go on.
pub fn can_confirm(command: &str, yes: bool) -> bool {
    if yes || std::io::stdin().is_terminal() {
        return true;
    }
    eprintln!(
        "error: `{command}` changes VM power states and asks for confirmation first, but \
         stdin is not a terminal; pass --yes to {command} without asking"
    );
    false
}

/// The built-in simulator that `--simulate` starts (the lab unless an inventory is given).
#[derive(Debug, Clone, Default)]
pub struct Simulate {
    pub inventory: Option<PathBuf>,
    pub seed: Option<u64>,
    pub speed: Option<f64>,
}

impl Simulate {
    /// The inventory's name in messages and its whole text.
    fn inventory_source(&self) -> Result<(String, String), String> {
        match &self.inventory {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| (path.display().to_string(), text))
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            None => Ok(("lab.toml".to_owned(), SimConfig::LAB_TOML.to_owned())),
        }
    }
}

fn configured(
    name: &str,
    text: &str,
    seed: Option<u64>,
    speed: Option<f64>,
) -> Result<SimConfig, String> {
    let mut config = SimConfig::from_inventory_str(name, text).map_err(|e| e.to_string())?;
    if let Some(seed) = seed {
        config.seed = seed;
    }
    if let Some(speed) = speed {
        config.speed = speed;
    }
    Ok(config)
}

/// How long the simulator's tasks take per action (its durations over its speed): what a
/// rehearsal's estimate goes by. A restart is its shutdown and its power on.
fn simulated_durations(config: &SimConfig) -> BTreeMap<Action, Duration> {
    let of = |a: SimAction| {
        config
            .duration_of(a)
            .div_f64(config.speed.max(f64::MIN_POSITIVE))
    };
    Action::ALL
        .into_iter()
        .map(|action| {
            let d = match action {
                Action::On => of(SimAction::On),
                Action::Off | Action::Deallocate => of(SimAction::Off),
                Action::Shutdown => of(SimAction::Shutdown),
                Action::Pause => of(SimAction::Pause),
                Action::Resume => of(SimAction::Resume),
                Action::Reset => of(SimAction::Reset),
                Action::Restart => of(SimAction::Shutdown) + of(SimAction::On),
            };
            (action, d)
        })
        .collect()
}

/// The built-in simulator a `--simulate` command runs against.
pub struct Simulator {
    url: String,
    /// How long its tasks take per action: what a rehearsal's estimate goes by.
    durations: BTreeMap<Action, Duration>,
    control: SimControl,
    /// What its world file starts with, should a run keep it.
    header: WorldHeader,
}

impl Simulator {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn durations(&self) -> &BTreeMap<Action, Duration> {
        &self.durations
    }

    /// Keeps the rehearsal's world beside its journal from now on, so that
    /// `resume JOURNAL --simulate` can bring it back after a crash.
    pub fn keep_world_beside(&self, journal: &Path) -> Result<PathBuf, String> {
        let path = world_path(journal);
        let recorder = WorldRecorder::create(&path, &self.header)?;
        self.control.record_world(recorder);
        Ok(path)
    }
}

/// Starts the built-in simulator on loopback and says so on stderr.
pub async fn start_simulator(simulate: &Simulate) -> Result<(SimHandle, Simulator), String> {
    let (name, text) = simulate.inventory_source()?;
    let config = configured(&name, &text, simulate.seed, simulate.speed)?;
    let durations = simulated_durations(&config);
    let sim = SimHandle::start(config)
        .await
        .map_err(|e| format!("cannot start the built-in simulator: {e}"))?;
    eprintln!(
        "note: running against the built-in simulator at {}",
        sim.base_url()
    );
    let control = sim.control();
    let header = WorldHeader {
        format: WORLD_FORMAT.to_owned(),
        inventory_name: name,
        inventory: text,
        seed: simulate.seed,
        speed: simulate.speed,
        port: sim.addr().port(),
        started_epoch_ms: control.started_epoch_ms(),
    };
    let simulator = Simulator {
        url: sim.base_url().to_owned(),
        durations,
        control,
        header,
    };
    Ok((sim, simulator))
}

/// Brings back the simulator of the rehearsal journaled at `journal`, on its own port, with
/// its world as it would be now, and keeps recording into the same file.
pub async fn restore_simulator(journal: &Path) -> Result<(SimHandle, Simulator), String> {
    let path = world_path(journal);
    if !path.exists() {
        return Err(format!(
            "{} has no simulator world beside it ({} is missing): only a run made with \
             --simulate can be resumed with --simulate",
            journal.display(),
            path.display()
        ));
    }
    let saved = SavedWorld::read(&path)?;
    let h = &saved.header;
    let config = configured(&h.inventory_name, &h.inventory, h.seed, h.speed)
        .map_err(|e| format!("{}: its inventory no longer loads: {e}", path.display()))?;
    let durations = simulated_durations(&config);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, h.port));
    let sim = SimHandle::restore(config, addr, &saved)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "cannot bring the rehearsal's simulator back on {addr}: the port is taken \
                     (the journal's task links point there); stop what uses it and resume again"
                )
            } else {
                format!(
                    "cannot bring the rehearsal's simulator back from {}: {e}",
                    path.display()
                )
            }
        })?;
    let control = sim.control();
    control.record_world(WorldRecorder::append(&path, &saved)?);
    let replayed = saved
        .events
        .iter()
        .filter(|e| matches!(e, WorldEvent::Power { .. }))
        .count();
    eprintln!(
        "note: the rehearsal's simulator is back at {} with its world from {}: {replayed} power \
         requests replayed, {} tasks still running after {} down",
        sim.base_url(),
        path.display(),
        control.tasks_in_flight(),
        seconds(Duration::from_millis(
            crate::exec::event::utc_now_ms().saturating_sub(last_change_epoch_ms(&saved))
        ))
    );
    let simulator = Simulator {
        url: sim.base_url().to_owned(),
        durations,
        control,
        header: saved.header.clone(),
    };
    Ok((sim, simulator))
}

/// When the saved world last changed (ms since the Unix epoch).
fn last_change_epoch_ms(saved: &SavedWorld) -> u64 {
    let last = saved.events.iter().map(|e| match e {
        WorldEvent::Power { at_ms, .. }
        | WorldEvent::Ack { at_ms, .. }
        | WorldEvent::SetState { at_ms, .. } => *at_ms,
    });
    saved.header.started_epoch_ms + last.max().unwrap_or(0)
}

/// Runs `body` with the simulator when `simulate` asks for one (stopping it afterwards), or
/// with `None` to use the configured cloud.
pub async fn with_simulator<F, Fut>(simulate: Option<&Simulate>, body: F) -> Outcome
where
    F: FnOnce(Option<Simulator>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let Some(simulate) = simulate else {
        return body(None).await;
    };
    let (sim, simulator) = match start_simulator(simulate).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let outcome = body(Some(simulator)).await;
    sim.shutdown().await;
    outcome
}

/// Client settings from flag > environment > runbook (endpoint, version), credentials from
/// the environment (the simulator's own account when simulating without any).
pub fn client_config(
    conn: &ConnectionArgs,
    runbook: &Runbook,
    simulator: Option<&str>,
) -> Result<ClientConfig, String> {
    let mut config = connection_config(conn, Some(runbook), simulator)?;
    config.requests_per_second = runbook
        .limits
        .requests_per_second
        .and_then(|n| NonZeroU32::new(u32::try_from(n.get()).unwrap_or(u32::MAX)));
    Ok(config)
}

/// Client settings from the flags and the environment alone, for a command that reads a
/// cloud without a runbook (`snapshot`).
pub fn cloud_config(conn: &ConnectionArgs) -> Result<ClientConfig, String> {
    connection_config(conn, None, None)
}

fn connection_config(
    conn: &ConnectionArgs,
    runbook: Option<&Runbook>,
    simulator: Option<&str>,
) -> Result<ClientConfig, String> {
    let api = runbook.map(|r| &r.api);
    let endpoint = match simulator {
        Some(url) => url.to_owned(),
        None => conn
            .endpoint
            .clone()
            .or_else(|| api.and_then(|a| a.endpoint.clone()))
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| match runbook {
                Some(_) => "no API endpoint: pass --endpoint, set ABIQUO_API_URL, or set \
                            `endpoint` in the runbook's [api] table"
                    .to_owned(),
                None => "no API endpoint: pass --endpoint or set ABIQUO_API_URL".to_owned(),
            })?,
    };
    let version = conn
        .api_version
        .clone()
        .or_else(|| api.and_then(|a| a.version.clone()))
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
    config.allowed_origins = conn.allow_origin.clone();
    config.allow_http = conn.allow_http;
    config.request_timeout = conn.request_timeout;
    config.connect_timeout = conn.connect_timeout;
    config.retry.budget = conn.retry_budget;
    config.max_response_bytes = conn.max_response_size;
    config.max_connections = conn.max_connections;
    config.on_retry = Some(retry_printer());
    Ok(config)
}

/// Retries on stderr, so an API that does not answer is never silent: at most one line a
/// second, saying how many were not shown.
fn retry_printer() -> RetryObserver {
    let last: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));
    RetryObserver(Arc::new(move |n: &RetryNotice| {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last
            .0
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            last.1 += 1;
            return;
        }
        let hidden = std::mem::take(&mut last.1);
        last.0 = Some(now);
        let more = match hidden {
            0 => String::new(),
            1 => " (1 more retry since the last line)".to_owned(),
            n => format!(" ({n} more retries since the last line)"),
        };
        eprintln!(
            "API not answering ({}), retry {}/{} in {} for {}{more}",
            n.reason,
            n.retry,
            n.of,
            seconds(n.delay),
            n.request
        );
    }))
}

/// `0.2s`, `1.6s`, `10.0s`.
fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
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
        ClientError::Transport { .. }
        | ClientError::Timeout { .. }
        | ClientError::Exhausted { .. }
        | ClientError::Tls { .. }
        | ClientError::TlsHandshake { .. } => {
            format!("{e} (endpoint {endpoint})")
        }
        _ => format!("cannot log in at {endpoint}: {e}"),
    }
}

/// The executor's options from the timing flags.
pub fn run_options(tuning: &RunTuning) -> RunOptions {
    RunOptions {
        poll: PollPolicy {
            initial: tuning.poll_initial,
            max: tuning.poll_max.max(tuning.poll_initial),
            ..PollPolicy::default()
        },
        lock_wait: tuning.lock_wait,
        drain_timeout: tuning.drain_timeout,
        durations: TaskDurations::new(),
        state_max_age: tuning.state_max_age,
        watch: !tuning.no_watch,
    }
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

/// First Ctrl-C (or SIGTERM / SIGHUP, as schedulers and closed terminals send): stop
/// launching and drain. A second signal of any of them: exit at once.
pub async fn handle_ctrl_c(control: RunControl) {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot watch for termination signals: {e}");
            return;
        }
    };
    let Some(name) = signals.next().await else {
        return;
    };
    eprintln!(
        "\n{name}: starting nothing new and draining tasks in flight (Ctrl-C again to \
         exit at once)"
    );
    control.interrupt();
    if let Some(name) = signals.next().await {
        eprintln!("{name} again: exiting now; tasks in flight keep running in the cloud");
        std::process::exit(i32::from(Outcome::Interrupted.code()));
    }
}

/// The signals that stop a run: Ctrl-C everywhere, SIGTERM and SIGHUP on Unix.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's name; `None` when signals cannot be received any more.
    async fn next(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok().map(|()| "interrupted"),
                s = self.term.recv() => s.map(|()| "SIGTERM"),
                s = self.hup.recv() => s.map(|()| "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok().map(|()| "interrupted")
    }
}

/// Runs the plan with the collector (and progress bars) attached; the library entry point
/// tests and benchmarks use.
pub async fn execute_with_reporters<A: CloudApi>(
    client: &A,
    plan: &Plan,
    options: &RunOptions,
    control: &RunControl,
    show_progress: bool,
) -> (RunReport, Summary) {
    execute_with_hooks(
        client,
        plan,
        options,
        control,
        Live {
            progress: if show_progress {
                ProgressMode::Bars
            } else {
                ProgressMode::Off
            },
            stream: false,
            approve: Approve::Nobody,
        },
        None,
        Hooks::default(),
    )
    .await
}

/// What a run shows while it goes: progress bars on stderr, the event stream on stdout; and
/// who answers its `approve` gates.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub progress: ProgressMode,
    pub stream: bool,
    pub approve: Approve,
}

/// Who answers `approve` gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approve {
    /// Nobody: they fail.
    Nobody,
    /// The operator, on the terminal.
    Ask,
    /// `--approve-gates`: every one is approved.
    All,
}

impl Approve {
    /// `--approve-gates`, else the terminal if stdin is one.
    pub fn of(approve_gates: bool) -> Approve {
        if approve_gates {
            Approve::All
        } else if std::io::stdin().is_terminal() {
            Approve::Ask
        } else {
            Approve::Nobody
        }
    }
}

/// Approves every gate: `--approve-gates`.
struct ApproveAll;

impl Approver for ApproveAll {
    fn approve(&self, message: String) -> BoxFuture<'static, Result<String, String>> {
        eprintln!("gate \"{message}\": approved by --approve-gates");
        Box::pin(async { Ok("approved by --approve-gates".to_owned()) })
    }
}

/// Asks on the terminal, with the progress bars held still meanwhile.
struct AskOnTerminal {
    bars: MultiProgress,
}

impl Approver for AskOnTerminal {
    fn approve(&self, message: String) -> BoxFuture<'static, Result<String, String>> {
        let bars = self.bars.clone();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || {
                bars.suspend(|| {
                    eprint!("\nGate: {message}\nGo on? [y/N] ");
                    let _ = std::io::stderr().flush();
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map(|_| line)
                })
            })
            .await;
            match answer {
                Ok(Ok(line))
                    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") =>
                {
                    Ok("approved on the terminal".to_owned())
                }
                Ok(Ok(line)) if line.is_empty() => Err("no answer (end of input)".to_owned()),
                Ok(Ok(line)) => Err(format!("answered {:?} on the terminal", line.trim())),
                Ok(Err(e)) => Err(format!("cannot read the answer: {e}")),
                Err(e) => Err(format!("cannot ask: {e}")),
            }
        })
    }
}

/// [`execute_with_reporters`] with a journal and/or resume state (`run`, `resume`): the
/// journal is one more sink of the executor's events, ahead of the reporters.
pub async fn execute_with_hooks<A: CloudApi>(
    client: &A,
    plan: &Plan,
    options: &RunOptions,
    control: &RunControl,
    live: Live,
    journal: Option<JournalSink>,
    hooks: Hooks,
) -> (RunReport, Summary) {
    let start = Start::whole(plan);
    execute_start(client, start, options, control, live, journal, hooks).await
}

/// [`execute_with_hooks`] from a whole plan or one made whole while the run goes.
async fn execute_start<A, L>(
    client: &A,
    start: Start<'_, L>,
    options: &RunOptions,
    control: &RunControl,
    live: Live,
    journal: Option<JournalSink>,
    mut hooks: Hooks,
) -> (RunReport, Summary)
where
    A: CloudApi,
    L: Listing,
{
    let Live {
        progress,
        stream,
        approve,
    } = live;
    let mut progress = Progress::with_mode(progress);
    if test_mode() {
        progress = progress.timeless();
    }
    hooks.approval = match approve {
        Approve::Nobody => None,
        Approve::All => Some(Approval(Arc::new(ApproveAll))),
        Approve::Ask => Some(Approval(Arc::new(AskOnTerminal {
            bars: progress.bars(),
        }))),
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let consumer = tokio::spawn(async move {
        let mut collector = Collector::new();
        let mut lines = stream.then(|| NdjsonWriter::new(std::io::stdout()));
        let mut order = WholePlanFirst::default();
        while let Some(event) = rx.recv().await {
            order.pass(event, |event| {
                progress.event(event);
                collector.event(event);
                if let Some(lines) = &mut lines {
                    lines.event(event);
                }
            });
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
    let summary = execute_from(client, start, options, &sinks, control, &hooks).await;
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

/// Executes the plan into `journal` (continuing from `resume` if given) with Ctrl-C
/// handled, then finishes the run; returns its exit outcome.
pub async fn execute_journaled(
    client: &Client,
    plan: &Plan,
    options: &RunOptions,
    journal: JournalWriter,
    resume: Option<ResumeState>,
    finish: Finish<'_>,
) -> Outcome {
    let start = Start::whole(plan);
    execute_start_journaled(client, start, options, journal, resume, finish).await
}

/// [`execute_journaled`] from a whole plan or one made whole while the run goes.
pub async fn execute_start_journaled<L>(
    client: &Client,
    start: Start<'_, L>,
    options: &RunOptions,
    journal: JournalWriter,
    resume: Option<ResumeState>,
    finish: Finish<'_>,
) -> Outcome
where
    L: Listing,
{
    let control = RunControl::new();
    let signals = tokio::spawn(handle_ctrl_c(control.clone()));
    let show_progress = progress_mode();
    let hooks = Hooks {
        resume,
        approval: None,
    };
    let (report, summary) = execute_start(
        client,
        start,
        options,
        &control,
        Live {
            progress: show_progress,
            stream: finish.output == RunOutput::Ndjson,
            approve: finish.approve,
        },
        Some(journal.sink()),
        hooks,
    )
    .await;
    signals.abort();
    finish_run(journal, &report, &summary, finish).await
}

/// Where a run's results go once the executor is done (`run` and `resume` alike).
pub struct Finish<'a> {
    pub emit_restore: Option<&'a Path>,
    pub report_file: Option<&'a Path>,
    /// `--html FILE`: the run's timeline page, drawn from its journal once it is closed.
    pub html_file: Option<&'a Path>,
    pub output: RunOutput,
    pub show: ShowArg,
    /// Who answers `approve` gates.
    pub approve: Approve,
    pub test_mode: bool,
}

/// Closes the journal, writes the restore runbook and the report file if asked, prints the
/// results (ending with how to resume a run that stopped early) and returns the exit outcome.
/// Failing to write any of those files turns a success into "some failed".
async fn finish_run(
    writer: JournalWriter,
    report: &RunReport,
    summary: &Summary,
    finish: Finish<'_>,
) -> Outcome {
    let status = FinalStatus::of_summary(summary);
    let mut outcome = status.outcome();
    let journal = writer.path().to_owned();
    let mut failed = false;
    if let Err(e) = writer.close().await {
        eprintln!("error: {e}");
        failed = true;
    }
    // The restore runbook and the HTML page are drawn from the closed journal, read once.
    let closed =
        (finish.emit_restore.is_some() || finish.html_file.is_some()).then(|| load(&journal));
    if let (Some(out), Some(closed)) = (finish.emit_restore, &closed) {
        failed |= !write_restore(closed, &journal, out);
    }
    if let Some(path) = finish.report_file
        && let Err(e) = write_report(path, report)
    {
        eprintln!("error: cannot write the report to {}: {e}", path.display());
        failed = true;
    }
    if let (Some(path), Some(closed)) = (finish.html_file, &closed) {
        failed |= !match closed {
            Ok(j) => crate::commands::report::write_html(j, path),
            Err(e) => {
                eprintln!("error: no HTML report: {e}");
                false
            }
        };
    }
    if failed && outcome == Outcome::Success {
        outcome = Outcome::SomeFailed;
    }
    let hint = status.resume_hint_due().then(|| resume_hint(&journal));
    let text = match finish.output {
        RunOutput::Json => {
            if let Some(hint) = &hint {
                eprint!("{hint}");
            }
            format!("{}\n", report.to_json())
        }
        // The events were the output; a report, if asked, went to --report FILE.
        RunOutput::Ndjson => {
            if let Some(hint) = &hint {
                eprint!("{hint}");
            }
            String::new()
        }
        RunOutput::Human => {
            table::render(report, render_options(finish.show)) + hint.as_deref().unwrap_or("")
        }
    };
    print_stdout(&text);
    outcome
}

/// Closes the journal and writes the restore runbook if asked. False when either failed
/// (already reported).
/// `--emit-restore FILE`: the runbook undoing the run in the closed journal at `path`.
/// False when it could not be written.
fn write_restore(closed: &Result<Journal, String>, path: &Path, out: &Path) -> bool {
    let text = closed
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|j| restore_runbook(&RunView::of(j), &path.display().to_string()));
    match text {
        Ok(Some(text)) => match std::fs::write(out, text) {
            Ok(()) => {
                eprintln!("restore runbook: {}", out.display());
                true
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", out.display());
                false
            }
        },
        Ok(None) => {
            eprintln!(
                "note: no restore runbook written to {}: {NOTHING_TOUCHED}",
                out.display()
            );
            true
        }
        Err(e) => {
            eprintln!("error: no restore runbook: {e}");
            false
        }
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

/// Loads a journal, saying on stderr when its last line was torn; when it cannot be read,
/// says why and gives the usage outcome.
pub fn load_reporting(path: &Path) -> Result<Journal, Outcome> {
    match load(path) {
        Ok(journal) => {
            if journal.torn {
                eprintln!("note: {}: {TORN_NOTE}", path.display());
            }
            Ok(journal)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(Outcome::Usage)
        }
    }
}
