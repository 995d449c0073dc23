//! `powerbook run` against the in-process simulator over HTTP on loopback: the real binary
//! where exit codes and output matter, the library where timing and counts need detail.

use crate::support::{BIN, against, runtime, write};
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::abiquo::model::VmState;
use powerbook::abiquo::retry::RetryPolicy;
use powerbook::exec::cmd::execute_with_reporters;
use powerbook::exec::event::{PathTaken, Summary, VmOutcome, VmResult};
use powerbook::exec::poll::PollPolicy;
use powerbook::exec::{RunControl, RunOptions};
use powerbook::report::RunReport;
use powerbook::sim::{MutationRecord, SimConfig, SimHandle, SimUser};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A simulator with a custom inventory and short tasks.
fn inventory(toml: &str) -> SimConfig {
    SimConfig::from_inventory_str("test-inventory.toml", toml).unwrap()
}

/// `n` generated VMs (vapps of 20: vapp-001, vapp-002...), tasks of ~`ms` milliseconds.
fn generated(n: usize, ms: u64) -> SimConfig {
    let mut c = SimConfig::generated(n);
    c.task_duration = Duration::from_millis(ms);
    c.task_jitter = Duration::from_millis(ms / 5);
    c.durations.clear();
    c
}

fn run_args(runbook: &Path) -> Vec<String> {
    [
        "run",
        runbook.to_str().unwrap(),
        "--yes",
        "--poll-initial",
        "20ms",
        "--poll-max",
        "100ms",
        "--lock-wait",
        "20s",
        "--request-timeout",
        "5s",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a runbook through the library against `sim`.
async fn run_lib(sim: &SimHandle, runbook_toml: &str) -> (RunReport, Summary) {
    run_lib_with(sim, runbook_toml, RunControl::new()).await
}

async fn run_lib_with(
    sim: &SimHandle,
    runbook_toml: &str,
    control: RunControl,
) -> (RunReport, Summary) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let runbook = powerbook::runbook::parse("test.toml", runbook_toml)
        .unwrap_or_else(|f| panic!("invalid test runbook: {f}"))
        .runbook;
    let mut config = ClientConfig::new(
        sim.base_url(),
        "5.0",
        Credentials::Basic {
            user: "admin".into(),
            password: "xabiquo".into(),
        },
    );
    config.retry = RetryPolicy {
        initial: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    // Short bounds: a stall must fail the test, not hang it.
    config.request_timeout = Duration::from_secs(5);
    config.reconcile_wait = Duration::from_secs(10);
    let client = Client::new(config).unwrap();
    client.login().await.unwrap();
    let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
    let options = RunOptions {
        poll: PollPolicy {
            initial: Duration::from_millis(20),
            factor: 1.5,
            max: Duration::from_millis(100),
            ..PollPolicy::default()
        },
        lock_wait: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
        ..RunOptions::default()
    };
    execute_with_reporters(&client, &plan, &options, &control, false).await
}

fn result<'a>(report: &'a RunReport, step: &str, vm: &str) -> &'a VmResult {
    report
        .results
        .iter()
        .find(|r| r.step_name == step && r.vm.name == vm)
        .unwrap_or_else(|| panic!("no result for {vm} in step {step}"))
}

fn mutations(sim: &SimHandle) -> BTreeMap<String, Vec<MutationRecord>> {
    sim.stats().mutations
}

/// Most intervals [accepted, finished] open at once.
fn max_overlap(records: &[&MutationRecord]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for r in records {
        edges.push((r.accepted_ms, 1));
        edges.push((r.finished_ms.unwrap(), -1));
    }
    // Ends before starts at the same instant.
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        max = max.max(open);
    }
    usize::try_from(max).unwrap()
}

fn uuid_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[uuid]",
        ),
        // Shortened job ids in the failed-jobs table.
        (r"[0-9a-f]{8}…", "[job]…"),
        // Journals are named after the runbook and the start time.
        (r"(powerbook resume ).*", "${1}[journal]"),
    ]
}

const TWO_TIER: &str = r#"
[settings]
task_duration = "150ms"
task_jitter = "30ms"

[[vdc]]
name = "dc1"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "front"
    [[vdc.vapp.vm]]
    name = "front-1"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "front-2"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "front-3"
    state = "OFF"
    [[vdc.vapp.vm]]
    name = "legacy"
    state = "ON"
    guest_tools = false
  [[vdc.vapp]]
  name = "back"
    [[vdc.vapp.vm]]
    name = "back-1"
    state = "ON"
    fail_actions = ["off", "shutdown"]
    [[vdc.vapp.vm]]
    name = "back-2"
    state = "ON"
    fail_actions = ["off", "shutdown"]
    [[vdc.vapp.vm]]
    name = "back-3"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "back-4"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "back-5"
    state = "ON"
  [[vdc.vapp]]
  name = "other"
    [[vdc.vapp.vm]]
    name = "other-1"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "other-2"
    state = "ON"
"#;

// ---------------------------------------------------------------------------------------
// Acceptance
// ---------------------------------------------------------------------------------------

#[test]
fn failed_graceful_shutdown_shows_its_job_with_rollback_done() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "graceful.toml",
        r#"
name = "graceful only"
[[step]]
name = "front down"
action = "shutdown"
targets = [{ vapp = "front" }]
on_failure = "continue"
"#,
    );
    let out = against(&sim).args(run_args(&rb)).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let legacy_id = sim
        .vm_states()
        .into_iter()
        .find(|v| v.name == "legacy")
        .unwrap()
        .id;
    let json = against(&sim)
        .args(run_args(&rb))
        .args(["--output", "json"])
        .output()
        .unwrap();
    let report: RunReport = serde_json::from_slice(&json.stdout).unwrap();
    let job = &report.failed_jobs[0];
    assert_eq!(
        job.description,
        format!("Shutdown task's shutdown on virtual machine with id {legacy_id}")
    );
    assert_eq!(
        (
            job.job_type.as_str(),
            job.state.as_str(),
            job.rollback_state.as_str()
        ),
        ("SHUTDOWN", "FAILED", "ROLLBACK_DONE")
    );
    assert_eq!(job.vm, "legacy");
    insta::with_settings!({ filters => uuid_filters() }, {
        insta::assert_snapshot!("graceful_shutdown_failed_job", stdout);
    });
}

#[test]
fn in_flight_tasks_never_exceed_run_and_step_concurrency() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(60, 150))).unwrap();
    let (report, summary) = rt.block_on(run_lib(
        &sim,
        r#"
name = "concurrency"
[limits]
concurrency = 6
[[step]]
name = "a"
action = "off"
concurrency = 4
targets = [{ vapp = "vapp-001" }, { vapp = "vapp-002" }]
[[step]]
name = "b"
after = []
action = "off"
concurrency = 4
targets = [{ vapp = "vapp-003" }]
"#,
    ));
    assert_eq!(summary.counts.ok, 60, "{:#?}", report.results);
    let stats = sim.stats();
    assert!(
        stats.max_tasks_in_flight <= 6,
        "max in flight {}",
        stats.max_tasks_in_flight
    );
    assert!(
        stats.max_tasks_in_flight >= 5,
        "the run should use its concurrency ({})",
        stats.max_tasks_in_flight
    );
    let of_step = |vapp_nums: &[u64]| -> usize {
        let ids: Vec<u64> = sim
            .vm_states()
            .into_iter()
            .filter(|v| vapp_nums.iter().any(|n| v.vapp == format!("vapp-{n:03}")))
            .map(|v| v.id)
            .collect();
        let records: Vec<&MutationRecord> = stats
            .mutations
            .values()
            .flatten()
            .filter(|m| ids.contains(&m.vm_id))
            .collect();
        max_overlap(&records)
    };
    assert!(of_step(&[1, 2]) <= 4, "step a over its limit");
    assert!(of_step(&[3]) <= 4, "step b over its limit");
    assert!(stats.mutations.values().all(|m| m.len() == 1));
}

#[test]
fn sequential_step_starts_tasks_in_list_order_one_at_a_time() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let (report, _) = rt.block_on(run_lib(
        &sim,
        r#"
name = "sequential"
[[step]]
name = "seq"
action = "off"
order = "sequential"
targets = [{ vm = "back-5" }, { vm = "back-3" }, { vm = "other-*" }, { vm = "back-4" }]
"#,
    ));
    assert!(report.results.iter().all(|r| r.outcome == VmOutcome::Ok));
    let m = mutations(&sim);
    let order = ["back-5", "back-3", "other-1", "other-2", "back-4"];
    let records: Vec<&MutationRecord> = order.iter().map(|n| &m[*n][0]).collect();
    for pair in records.windows(2) {
        assert!(
            pair[1].accepted_ms >= pair[0].finished_ms.unwrap(),
            "a task started before the previous one finished: {pair:#?}"
        );
    }
    assert_eq!(m.len(), order.len());
}

#[test]
fn after_orders_steps_and_independent_steps_run_in_parallel() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(60, 300))).unwrap();
    let (_, summary) = rt.block_on(run_lib(
        &sim,
        r#"
name = "graph"
[[step]]
name = "first"
action = "off"
targets = [{ vapp = "vapp-001" }]
[[step]]
name = "second"
action = "off"
targets = [{ vapp = "vapp-002" }]
[[step]]
name = "side"
after = []
action = "off"
targets = [{ vapp = "vapp-003" }]
"#,
    ));
    assert_eq!(summary.counts.ok, 60);
    let stats = sim.stats();
    let vapp_of: BTreeMap<u64, String> = sim
        .vm_states()
        .into_iter()
        .map(|v| (v.id, v.vapp))
        .collect();
    let span = |vapp: &str| {
        let recs: Vec<&MutationRecord> = stats
            .mutations
            .values()
            .flatten()
            .filter(|m| vapp_of[&m.vm_id] == vapp)
            .collect();
        let first_start = recs.iter().map(|r| r.accepted_ms).min().unwrap();
        let last_end = recs.iter().map(|r| r.finished_ms.unwrap()).max().unwrap();
        (first_start, last_end)
    };
    let (first_start, first_end) = span("vapp-001");
    let (second_start, _) = span("vapp-002");
    let (side_start, side_end) = span("vapp-003");
    assert!(
        second_start >= first_end,
        "`second` started at {second_start} ms before `first` ended at {first_end} ms"
    );
    assert!(
        side_start < first_end && first_start < side_end,
        "`side` ({side_start}..{side_end}) should overlap `first` ({first_start}..{first_end})"
    );
}

#[test]
fn threshold_abort_leaves_the_rest_not_started_and_exits_3() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "abort.toml",
        r#"
name = "abort at two failures"
[[step]]
name = "back down"
action = "off"
order = "sequential"
max_failures = 1
targets = [{ vapp = "back" }]
[[step]]
name = "other down"
action = "off"
targets = [{ vapp = "other" }]
"#,
    );
    let out = against(&sim).args(run_args(&rb)).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let m = mutations(&sim);
    let touched: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        touched,
        ["back-1", "back-2"],
        "only the first two were started"
    );
    insta::with_settings!({ filters => uuid_filters() }, {
        insta::assert_snapshot!("threshold_abort", stdout);
    });
}

#[test]
fn rerunning_a_finished_runbook_skips_every_vm_and_mutates_nothing() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let runbook = r#"
name = "idempotent"
[[step]]
name = "front off"
action = "shutdown"
targets = [{ vapp = "front" }]
fallback = { action = "off", after = "5s" }
[[step]]
name = "others paused"
action = "pause"
targets = [{ vapp = "other" }, { vm = "back-3" }]
"#;
    let (first, summary) = rt.block_on(run_lib(&sim, runbook));
    assert_eq!(summary.counts.failed, 0, "{:#?}", first.results);
    let before = mutations(&sim);
    let (second, summary) = rt.block_on(run_lib(&sim, runbook));
    assert_eq!(mutations(&sim), before, "the second run must not mutate");
    assert_eq!(summary.counts.skipped, second.results.len());
    assert!(
        second
            .results
            .iter()
            .all(|r| r.path == PathTaken::Skipped && matches!(r.outcome, VmOutcome::Skipped { .. }))
    );
    assert_eq!(
        result(&second, "front off", "front-1").outcome,
        VmOutcome::Skipped {
            reason: "already OFF".into()
        }
    );
    assert_eq!(
        result(&second, "others paused", "other-2").outcome,
        VmOutcome::Skipped {
            reason: "already PAUSED".into()
        }
    );
}

#[test]
fn under_503_429_drops_and_lost_answers_every_vm_ends_definitively_with_one_mutation() {
    let rt = runtime();
    let mut config = generated(40, 120);
    config.faults.http_503 = 0.1;
    config.faults.http_429 = 0.05;
    config.faults.retry_after = Duration::from_secs(1);
    config.faults.drop_connection = 0.1;
    config.faults.lose_answer = 0.3;
    config.faults.malformed_json = 0.05;
    config.seed = 7;
    let sim = rt.block_on(SimHandle::start(config)).unwrap();
    let (report, summary) = rt.block_on(run_lib(
        &sim,
        r#"
name = "faults"
[limits]
concurrency = 20
[[step]]
name = "off"
action = "off"
targets = [{ vm = "vm-*" }]
[[step]]
name = "on"
action = "on"
targets = [{ vm = "vm-*" }]
[[step]]
name = "reset"
action = "reset"
targets = [{ vm = "vm-*" }]
"#,
    ));
    assert_eq!(
        summary.counts.ok,
        120,
        "every VM must end ok: {:#?}",
        report
            .results
            .iter()
            .filter(|r| r.outcome != VmOutcome::Ok)
            .collect::<Vec<_>>()
    );
    let stats = sim.stats();
    assert_eq!(stats.mutations.len(), 40);
    for (vm, records) in &stats.mutations {
        let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["OFF", "ON", "reset"], "{vm}");
    }
    assert!(
        summary.api.adopted > 0,
        "lost answers must have been reconciled by adoption ({:?})",
        summary.api
    );
    assert!(
        stats.rejected.keys().any(|k| k.starts_with("503")),
        "faults were on: {:?}",
        stats.rejected
    );
}

#[test]
fn deallocate_leaves_azure_vms_deallocated() {
    let rt = runtime();
    let mut lab = SimConfig::lab();
    lab.speed = 20.0;
    let sim = rt.block_on(SimHandle::start(lab)).unwrap();
    let rb = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/azure-deallocate.toml");
    let out = against(&sim)
        .args(run_args(&rb))
        .args(["--output", "json"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let report: RunReport =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let states: BTreeMap<String, (VmState, Option<bool>)> = sim
        .vm_states()
        .into_iter()
        .map(|v| (v.name, (v.state, v.deallocated)))
        .collect();
    for vm in ["spark-master", "spark-worker-1", "spark-worker-2"] {
        assert_eq!(states[vm], (VmState::Off, Some(true)), "{vm}");
        let r = report.results.iter().find(|r| r.vm.name == vm).unwrap();
        assert_eq!(r.outcome, VmOutcome::Ok);
        assert_eq!(r.deallocated_after, Some(true));
    }
    // Stopped but not deallocated: the API would answer VM-4, so it is refused up front.
    let w3 = report
        .results
        .iter()
        .find(|r| r.vm.name == "spark-worker-3")
        .unwrap();
    assert!(
        matches!(&w3.outcome, VmOutcome::Failed { reason } if reason.starts_with("VM-4")),
        "{w3:?}"
    );
    assert!(!sim.stats().mutations.contains_key("spark-worker-3"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn deadline_stops_launching_and_exits_3() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(8, 400))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "deadline.toml",
        r#"
name = "deadline"
[limits]
deadline = "1s"
[[step]]
name = "slowly"
action = "off"
order = "sequential"
targets = [{ vm = "vm-*" }]
"#,
    );
    let out = against(&sim)
        .args(run_args(&rb))
        .args(["--output", "json"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let report: RunReport = serde_json::from_str(&stdout).unwrap();
    let summary = report.summary.unwrap();
    assert_eq!(
        summary.aborted.as_deref(),
        Some("the run's deadline of 1s was reached")
    );
    let c = summary.counts;
    assert!(c.ok >= 1 && c.ok <= 4, "{c:?}");
    assert_eq!(c.ok + c.not_started, 8, "in-flight VMs finish: {c:?}");
    assert_eq!(
        sim.stats().mutations.len(),
        c.ok,
        "exactly the finished VMs were touched"
    );
    let first_not_started = report
        .results
        .iter()
        .position(|r| matches!(r.outcome, VmOutcome::NotStarted { .. }))
        .unwrap();
    assert!(
        report.results[first_not_started..]
            .iter()
            .all(|r| matches!(r.outcome, VmOutcome::NotStarted { .. })),
        "not started VMs are the tail of the sequence"
    );
}

#[test]
fn the_password_never_appears_in_any_output() {
    let rt = runtime();
    let secret = "Pw-Sekret-9d3f77";
    let mut config = inventory(TWO_TIER);
    config.users = vec![SimUser {
        name: "operator".into(),
        password: secret.into(),
    }];
    let sim = rt.block_on(SimHandle::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "p.toml",
        r#"
name = "secrets"
[[step]]
name = "s"
action = "shutdown"
on_failure = "continue"
targets = [{ vapp = "front" }, { vapp = "back" }]
"#,
    );
    let report_file = dir.path().join("report.json");
    let mut outputs = Vec::new();
    for extra in [
        vec![],
        vec!["--output", "json"],
        vec!["--report", report_file.to_str().unwrap()],
    ] {
        let out = against(&sim)
            .env("ABIQUO_API_USERNAME", "operator")
            .env("ABIQUO_API_PASSWORD", secret)
            .env("RUST_LOG", "trace")
            .args(run_args(&rb))
            .args(extra)
            .output()
            .unwrap();
        let (o, e) = text(&out);
        assert!(out.status.code() == Some(1), "{o}\n{e}");
        outputs.push(o);
        outputs.push(e);
    }
    // Refused credentials: the error must not echo them either.
    let out = against(&sim)
        .env("ABIQUO_API_USERNAME", "operator")
        .env("ABIQUO_API_PASSWORD", format!("{secret}-wrong"))
        .args(run_args(&rb))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let (o, e) = text(&out);
    assert!(e.contains("authentication refused"), "{e}");
    outputs.push(o);
    outputs.push(e);
    outputs.push(std::fs::read_to_string(&report_file).unwrap());
    for text in &outputs {
        assert!(!text.contains(secret), "the password leaked:\n{text}");
        assert!(
            !text.contains("Basic "),
            "an Authorization header leaked:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// CLI behaviour
// ---------------------------------------------------------------------------------------

#[test]
fn readme_demo_shows_success_skip_fallback_and_rolled_back_job() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/maintenance-shutdown.toml"),
    )
    .unwrap();
    // Same runbook with short wave pauses, so the test stays fast.
    let fast: String = original
        .lines()
        .map(|l| {
            if let Some(at) = l.find("pause = \"") {
                let end = l[at + 9..].find('"').map_or(l.len(), |e| at + 9 + e + 1);
                format!("{}pause = \"50ms\"{}", &l[..at], &l[end..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rb = write(dir.path(), "maintenance-shutdown.toml", &fast);
    let out = Command::new(BIN)
        .args(run_args(&rb))
        .args(["--simulate", "--simulate-speed", "20"])
        .env("POWERBOOK_TEST_MODE", "1")
        .env("POWERBOOK_RUNS_DIR", dir.path().join("runs"))
        .env_remove("ABIQUO_API_URL")
        .env_remove("ABIQUO_API_USERNAME")
        .env_remove("ABIQUO_API_PASSWORD")
        .env_remove("ABIQUO_API_TOKEN")
        .env_remove("ABIQUO_API_BEARER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("running against the built-in simulator at http://127.0.0.1:"));
    let row = |vm: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!(" {vm} ")))
            .unwrap_or_else(|| panic!("no row for {vm}:\n{stdout}"))
            .to_owned()
    };
    assert!(row("web-01").contains("graceful") && row("web-01").contains(" ok "));
    assert!(row("web-04").contains("skipped: already OFF"));
    assert!(row("web-legacy").contains("forced") && row("web-legacy").contains(" ok "));
    assert!(row("batch-worker-2").contains("failed"));
    assert!(stdout.contains("Failed jobs:"));
    assert!(stdout.contains("ROLLBACK_DONE"));
    assert!(stdout.contains("Summary: "));
}

#[test]
fn without_yes_and_without_a_terminal_run_refuses_with_exit_2() {
    let out = Command::new(BIN)
        .args(["run", "runbooks/maintenance-shutdown.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("pass --yes"), "{stderr}");
}

#[test]
fn json_report_is_versioned_and_matches_the_run() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "j.toml",
        r#"
name = "json"
[[step]]
name = "back pause"
action = "pause"
on_failure = "continue"
targets = [{ vapp = "back" }]
exclude = [{ vm = "back-5" }]
"#,
    );
    let file = dir.path().join("out.json");
    let out = against(&sim)
        .args(run_args(&rb))
        .args(["--output", "json", "--report", file.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: RunReport = serde_json::from_str(&stdout).unwrap();
    let from_file: RunReport =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(report, from_file);
    assert_eq!(report.format, 1);
    assert_eq!(report.runbook, "json");
    assert_eq!(report.results.len(), 5);
    let summary = report.summary.unwrap();
    assert_eq!((summary.counts.ok, summary.counts.skipped), (4, 1));
    let raw: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(raw["results"][4]["result"], "skipped");
    assert_eq!(raw["results"][4]["reason"], "excluded");
}

#[test]
fn ctrl_c_drains_in_flight_tasks_and_exits_130() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(12, 800))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "c.toml",
        r#"
name = "interrupt me"
[limits]
concurrency = 3
[[step]]
name = "all off"
action = "off"
targets = [{ vm = "vm-*" }]
"#,
    );
    let child = against(&sim)
        .args(run_args(&rb))
        .args(["--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while sim.stats().mutations.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    let report: RunReport = serde_json::from_str(&stdout).unwrap();
    let summary = report.summary.unwrap();
    assert!(summary.interrupted);
    let c = summary.counts;
    assert!(c.not_started >= 6, "{c:?}");
    assert_eq!(
        c.ok + c.not_started,
        12,
        "in-flight VMs were drained: {c:?}"
    );
    assert_eq!(sim.stats().mutations.len(), c.ok);
    assert!(stderr.contains("interrupted"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Executor corner cases (library)
// ---------------------------------------------------------------------------------------

const CORNERS: &str = r#"
[settings]
task_duration = "150ms"
task_jitter = "20ms"
[settings.durations]
shutdown = "1200ms"

[[vdc]]
name = "dc1"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "a"
    [[vdc.vapp.vm]]
    name = "slow-shutdown"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "busy"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "forbidden"
    state = "ON"
    forbidden = true
    [[vdc.vapp.vm]]
    name = "fine"
    state = "ON"
"#;

#[test]
fn a_slow_graceful_shutdown_holding_the_lock_is_followed_not_doubled() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(CORNERS))).unwrap();
    let (report, _) = rt.block_on(run_lib(
        &sim,
        r#"
name = "slow"
[[step]]
name = "down"
action = "shutdown"
targets = [{ vm = "slow-shutdown" }]
fallback = { action = "off", after = "300ms" }
"#,
    ));
    let r = result(&report, "down", "slow-shutdown");
    assert_eq!(r.outcome, VmOutcome::Ok);
    // The hard off was refused while the graceful task held the VM: it finished gracefully.
    assert_eq!(r.path, PathTaken::Graceful);
    let m = mutations(&sim);
    let actions: Vec<&str> = m["slow-shutdown"]
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(actions, ["OFF graceful"]);
}

#[test]
fn a_locked_vm_is_waited_for_then_acted_on() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(CORNERS))).unwrap();
    assert!(sim.set_vm_state("busy", VmState::Locked));
    let (report, _) = rt.block_on(async {
        let unlock = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(sim.set_vm_state("busy", VmState::On));
        };
        let run = run_lib(
            &sim,
            r#"
name = "locked"
[[step]]
name = "off"
action = "off"
targets = [{ vm = "busy" }]
"#,
        );
        tokio::join!(run, unlock).0
    });
    let r = result(&report, "off", "busy");
    assert_eq!(r.outcome, VmOutcome::Ok, "{r:?}");
    assert_eq!(
        r.state_before,
        Some(VmState::On),
        "decided on the state after the wait"
    );
    assert!(r.duration_ms >= 400);
    assert_eq!(mutations(&sim)["busy"].len(), 1);
}

#[test]
fn a_forbidden_vm_fails_with_the_api_reason_and_the_run_goes_on() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(CORNERS))).unwrap();
    let (report, summary) = rt.block_on(run_lib(
        &sim,
        r#"
name = "forbidden"
[[step]]
name = "off"
action = "off"
on_failure = "continue"
order = "sequential"
targets = [{ vm = "forbidden" }, { vm = "fine" }]
"#,
    ));
    match &result(&report, "off", "forbidden").outcome {
        VmOutcome::Failed { reason } => assert!(reason.starts_with("forbidden (403)"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(result(&report, "off", "fine").outcome, VmOutcome::Ok);
    assert_eq!(summary.aborted, None);
}

#[test]
fn a_task_that_never_finishes_fails_at_the_task_timeout() {
    let rt = runtime();
    let mut config = inventory(CORNERS);
    config.faults.stuck_task = 1.0;
    let sim = rt.block_on(SimHandle::start(config)).unwrap();
    let (report, _) = rt.block_on(run_lib(
        &sim,
        r#"
name = "stuck"
[[step]]
name = "reset"
action = "reset"
task_timeout = "600ms"
on_failure = "continue"
targets = [{ vm = "fine" }]
"#,
    ));
    let r = result(&report, "reset", "fine");
    match &r.outcome {
        VmOutcome::Failed { reason } => {
            assert!(
                reason.starts_with("task not finished after 600ms"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(r.task_href.is_some());
    assert_eq!(mutations(&sim)["fine"].len(), 1, "no second reset");
}

#[test]
fn the_run_wide_failure_threshold_stops_later_steps() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    let (report, summary) = rt.block_on(run_lib(
        &sim,
        r#"
name = "run-wide"
[limits]
max_failures = 1
[[step]]
name = "back down"
action = "off"
on_failure = "continue"
targets = [{ vapp = "back" }]
[[step]]
name = "other down"
action = "off"
targets = [{ vapp = "other" }]
"#,
    ));
    assert_eq!(
        summary.aborted.as_deref(),
        Some("2 failures in the run exceed limits.max_failures = 1")
    );
    assert_eq!(summary.counts.failed, 2);
    for vm in ["other-1", "other-2"] {
        assert!(matches!(
            result(&report, "other down", vm).outcome,
            VmOutcome::NotStarted { .. }
        ));
    }
    assert!(!mutations(&sim).contains_key("other-1"));
}

#[test]
fn a_step_that_finishes_at_once_still_releases_the_steps_after_it() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(inventory(TWO_TIER))).unwrap();
    // The first step has nothing to read: it is over within its first poll.
    let run = run_lib(
        &sim,
        r#"
name = "instant first step"
[[step]]
name = "nothing"
action = "off"
targets = [{ vapp = "front" }]
exclude = [{ vm = "*" }]
[[step]]
name = "then"
action = "off"
targets = [{ vm = "other-1" }]
"#,
    );
    let (report, summary) = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), run).await })
        .expect("the second step never started");
    assert_eq!(summary.counts.skipped, 4);
    assert_eq!(result(&report, "then", "other-1").outcome, VmOutcome::Ok);
}
