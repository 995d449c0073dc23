//! `powerbook run` against the in-process simulator over HTTP on loopback: the real binary
//! where exit codes and output matter, the library where timing and counts need detail.
//! Long because it is one command's whole acceptance suite; its helpers are shared by all.

use crate::support::{FAST_POLLING, Running, Test, root, wait_until};
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::abiquo::model::VmState;
use powerbook::abiquo::retry::RetryPolicy;
use powerbook::commands::session::execute_with_reporters;
use powerbook::exec::event::{Event, PathTaken, Summary, VmOutcome, VmResult};
use powerbook::exec::poll::PollPolicy;
use powerbook::exec::{RunControl, RunOptions};
use powerbook::journal::Record;
use powerbook::report::RunReport;
use powerbook::runbook::model::{Action, Runbook};
use powerbook::sim::{MutationRecord, SimHandle, SimUser};
use std::collections::BTreeMap;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `run RUNBOOK --yes` with fast polling.
fn run(t: &Test, runbook: &str) -> Test {
    t.clone().args(["run", runbook, "--yes"]).args(FAST_POLLING)
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
    let (client, runbook) = lib_session(sim, runbook_toml).await;
    let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
    execute_with_reporters(&client, &plan, &lib_options(), &control, false).await
}

/// A logged-in client with short bounds, and the parsed runbook.
async fn lib_session(sim: &SimHandle, runbook_toml: &str) -> (Client, Runbook) {
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
    (client, runbook)
}

/// Fast polling and short lock and drain bounds.
fn lib_options() -> RunOptions {
    RunOptions {
        poll: PollPolicy {
            initial: Duration::from_millis(20),
            factor: 1.5,
            max: Duration::from_millis(100),
            ..PollPolicy::default()
        },
        lock_wait: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
        ..RunOptions::default()
    }
}

fn result<'a>(report: &'a RunReport, step: &str, vm: &str) -> &'a VmResult {
    report
        .results
        .iter()
        .find(|r| *r.step_name == *step && *r.vm.name == *vm)
        .unwrap_or_else(|| panic!("no result for {vm} in step {step}"))
}

fn mutations(t: &Test) -> BTreeMap<String, Vec<MutationRecord>> {
    t.stats().mutations
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
    let t = Test::new().inventory(TWO_TIER).runbook(
        r#"
name = "graceful only"
[[step]]
name = "front down"
action = "shutdown"
targets = [{ vapp = "front" }]
on_failure = "continue"
"#,
    );
    let out = run(&t, "runbook.toml").failure().run();
    let legacy_id = t
        .sim()
        .vm_states()
        .into_iter()
        .find(|v| v.name == "legacy")
        .unwrap()
        .id;
    let report: RunReport = run(&t, "runbook.toml")
        .args(["--output", "json"])
        .run()
        .json();
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
        insta::assert_snapshot!("graceful_shutdown_failed_job", out.stdout);
    });
}

#[test]
fn in_flight_tasks_never_exceed_run_and_step_concurrency() {
    let t = Test::new().generated(60, 150);
    let sim = t.sim();
    let (report, summary) = t.block_on(run_lib(
        sim,
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

const WEB_12: &str = r#"
[settings]
task_duration = "100ms"
task_jitter = "20ms"

[[vdc]]
name = "dc1"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "web"
    [[vdc.vapp.vm]]
    name = "web-1"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-2"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-3"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-4"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-5"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-6"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-7"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-8"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-9"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-10"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-11"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-12"
    state = "ON"
"#;

const VM_GET: &str =
    "GET /api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines/{vm}";
const LISTING: &str = "GET /api/cloud/virtualmachines";

const WEB_OFF: &str = r#"
name = "web off"
[[step]]
name = "off"
action = "off"
targets = [{ vapp = "web" }]
"#;

#[test]
fn a_fresh_listing_is_acted_on_without_reads_and_a_vm_changed_since_is_decided_again() {
    let t = Test::new().inventory(WEB_12);
    let sim = t.sim();
    let report = t.block_on(async {
        let (client, runbook) = lib_session(sim, WEB_OFF).await;
        let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
        // Someone powers web-4 off between the listing and the request.
        assert!(sim.set_vm_state("web-4", VmState::Off));
        let control = RunControl::new();
        // Tasks followed at their links, so that the wave's end is confirmed by a listing.
        let options = RunOptions {
            watch: false,
            ..lib_options()
        };
        execute_with_reporters(&client, &plan, &options, &control, false)
            .await
            .0
    });
    let web4 = result(&report, "off", "web-4");
    assert!(
        matches!(&web4.outcome, VmOutcome::Skipped { .. }),
        "{:?}",
        web4.outcome
    );
    assert_eq!(web4.state_after, Some(VmState::Off));
    let ok = report.results.iter().filter(|r| r.outcome == VmOutcome::Ok);
    assert_eq!(ok.count(), 11);
    let stats = t.stats();
    // The refused request is the only reason to read a VM; the wave is confirmed by a
    // second listing instead of 11 reads.
    assert_eq!(
        stats.rejected.get("409 VM-4"),
        Some(&1),
        "{:?}",
        stats.rejected
    );
    assert_eq!(stats.requests_to(VM_GET), 1, "{:?}", stats.requests);
    assert_eq!(stats.requests_to(LISTING), 2, "{:?}", stats.requests);
    assert_eq!(stats.mutation_count(), 11);
    assert!(sim.vm_states().iter().all(|v| v.state == VmState::Off));
}

#[test]
fn the_watch_sees_tasks_end_on_the_listing_page_and_reads_each_task_about_once() {
    // Twelve 1 s tasks at once, their durations known from an earlier run: reads of the
    // listing's one page see them end, each task is read about once, no VM is read.
    let inventory = WEB_12
        .replace("\"100ms\"", "\"1s\"")
        .replace("\"20ms\"", "\"100ms\"");
    let t = Test::new().inventory(&inventory);
    let sim = t.sim();
    let runbook = format!("{WEB_OFF}concurrency = 12\n");
    let report = t.block_on(async {
        let (client, runbook) = lib_session(sim, &runbook).await;
        let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
        let options = lib_options();
        for i in 0..20 {
            options
                .durations
                .record(Action::Off, Duration::from_millis(900 + i * 10));
        }
        let control = RunControl::new();
        execute_with_reporters(&client, &plan, &options, &control, false)
            .await
            .0
    });
    assert!(report.results.iter().all(|r| r.outcome == VmOutcome::Ok));
    assert!(
        report
            .results
            .iter()
            .all(|r| r.state_after == Some(VmState::Off))
    );
    let stats = t.stats();
    let looks = stats.requests_to(LISTING) - 1;
    let task_reads: u64 = stats.task_gets.values().sum();
    assert!(looks >= 1, "{:?}", stats.requests);
    assert!(task_reads <= 15, "{task_reads} task reads for 12 tasks");
    assert_eq!(stats.requests_to(VM_GET), 0, "{:?}", stats.requests);
    assert!(sim.vm_states().iter().all(|v| v.state == VmState::Off));
}

#[test]
fn state_max_age_zero_reads_every_vm_before_its_request() {
    let t = Test::new().inventory(WEB_12);
    let sim = t.sim();
    let report = t.block_on(async {
        let (client, runbook) = lib_session(sim, WEB_OFF).await;
        let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
        let options = RunOptions {
            state_max_age: Duration::ZERO,
            ..lib_options()
        };
        let control = RunControl::new();
        execute_with_reporters(&client, &plan, &options, &control, false)
            .await
            .0
    });
    assert!(report.results.iter().all(|r| r.outcome == VmOutcome::Ok));
    assert_eq!(t.stats().requests_to(VM_GET), 12);
}

#[test]
fn sequential_step_starts_tasks_in_list_order_one_at_a_time() {
    let t = Test::new().inventory(TWO_TIER);
    let (report, _) = t.block_on(run_lib(
        t.sim(),
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
    let stats = t.stats();
    // One at a time: the simulator never had two of these tasks running.
    assert_eq!(
        stats.max_tasks_in_flight, 1,
        "a task started before the previous one finished"
    );
    let mut started: Vec<(&String, u64)> = stats
        .mutations
        .iter()
        .map(|(vm, records)| (vm, records[0].accepted_ms))
        .collect();
    started.sort_by_key(|&(_, at)| at);
    let order: Vec<&str> = started.iter().map(|(vm, _)| vm.as_str()).collect();
    assert_eq!(order, ["back-5", "back-3", "other-1", "other-2", "back-4"]);
    assert_eq!(stats.mutation_count(), order.len());
}

#[test]
fn after_orders_steps_and_independent_steps_run_in_parallel() {
    let t = Test::new().generated(60, 300).runbook(
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
    );
    run(&t, "runbook.toml")
        .args(["--journal", "j.jsonl"])
        .success()
        .mutations(60)
        .run();
    // The order the executor saw things in, from its journal: (record index, event).
    let journal = powerbook::journal::load(&t.path("j.jsonl")).unwrap();
    let events: Vec<(usize, &Event)> = journal
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Record::Event { event, .. } => Some((i, event)),
            _ => None,
        })
        .collect();
    let accepted = |step: usize| -> Vec<usize> {
        events
            .iter()
            .filter(|(_, e)| matches!(e, Event::TaskAccepted { step: s, .. } if *s == step))
            .map(|(i, _)| *i)
            .collect()
    };
    let finished = |step: usize| -> Vec<usize> {
        events
            .iter()
            .filter(|(_, e)| matches!(e, Event::TaskFinished { step: s, .. } if *s == step))
            .map(|(i, _)| *i)
            .collect()
    };
    let (first_start, first_end) = (accepted(0)[0], *finished(0).last().unwrap());
    let second_start = accepted(1)[0];
    let (side_start, side_end) = (accepted(2)[0], *finished(2).last().unwrap());
    assert_eq!(
        accepted(0).len() + accepted(1).len() + accepted(2).len(),
        60
    );
    assert!(
        second_start > first_end,
        "`second` started (record {second_start}) before `first` ended (record {first_end})"
    );
    assert!(
        side_start < first_end && first_start < side_end,
        "`side` ({side_start}..{side_end}) should overlap `first` ({first_start}..{first_end})"
    );
}

#[test]
fn threshold_abort_leaves_the_rest_not_started_and_exits_3() {
    let t = Test::new().inventory(TWO_TIER).runbook(
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
    // Only the first two were started.
    let out = run(&t, "runbook.toml")
        .code(3)
        .touched(&["back-1", "back-2"])
        .run();
    insta::with_settings!({ filters => uuid_filters() }, {
        insta::assert_snapshot!("threshold_abort", out.stdout);
    });
}

#[test]
fn rerunning_a_finished_runbook_skips_every_vm_and_mutates_nothing() {
    let t = Test::new().inventory(TWO_TIER);
    let sim = t.sim();
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
    let (first, summary) = t.block_on(run_lib(sim, runbook));
    assert_eq!(summary.counts.failed, 0, "{:#?}", first.results);
    let before = mutations(&t);
    let (second, summary) = t.block_on(run_lib(sim, runbook));
    assert_eq!(mutations(&t), before, "the second run must not mutate");
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
    let t = Test::new()
        .generated(40, 120)
        .faults(|f| {
            f.http_503 = 0.1;
            f.http_429 = 0.05;
            f.retry_after = Duration::from_secs(1);
            f.drop_connection = 0.1;
            f.lose_answer = 0.3;
            f.malformed_json = 0.05;
        })
        .seed(7);
    let sim = t.sim();
    let (report, summary) = t.block_on(run_lib(
        sim,
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
    let t = Test::new().lab(20.0);
    let rb = root().join("runbooks/azure-deallocate.toml");
    let out = run(&t, rb.to_str().unwrap())
        .args(["--output", "json"])
        .run();
    let report: RunReport = out.json();
    let states: BTreeMap<String, (VmState, Option<bool>)> = t
        .sim()
        .vm_states()
        .into_iter()
        .map(|v| (v.name, (v.state, v.deallocated)))
        .collect();
    for vm in ["spark-master", "spark-worker-1", "spark-worker-2"] {
        assert_eq!(states[vm], (VmState::Off, Some(true)), "{vm}");
        let r = report.results.iter().find(|r| *r.vm.name == *vm).unwrap();
        assert_eq!(r.outcome, VmOutcome::Ok);
        assert_eq!(r.deallocated_after, Some(true));
    }
    // Stopped but not deallocated: the API would answer VM-4, so it is refused up front.
    let w3 = report
        .results
        .iter()
        .find(|r| &*r.vm.name == "spark-worker-3")
        .unwrap();
    assert!(
        matches!(&w3.outcome, VmOutcome::Failed { reason } if reason.starts_with("VM-4")),
        "{w3:?}"
    );
    assert!(!t.stats().mutations.contains_key("spark-worker-3"));
    assert_eq!(out.code, 1);
}

#[test]
fn deadline_stops_launching_and_exits_3() {
    let t = Test::new().generated(8, 400).runbook(
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
    let report: RunReport = run(&t, "runbook.toml")
        .args(["--output", "json"])
        .code(3)
        .run()
        .json();
    let summary = report.summary.unwrap();
    assert_eq!(
        summary.aborted.as_deref(),
        Some("the run's deadline of 1s was reached")
    );
    let c = summary.counts;
    assert!(c.ok >= 1 && c.ok <= 4, "{c:?}");
    assert_eq!(c.ok + c.not_started, 8, "in-flight VMs finish: {c:?}");
    assert_eq!(
        t.stats().mutations.len(),
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
    let secret = "Pw-Sekret-9d3f77";
    let t = Test::new()
        .inventory(TWO_TIER)
        .configure(|c| {
            c.users = vec![SimUser {
                name: "operator".into(),
                password: secret.into(),
            }];
        })
        .runbook(
            r#"
name = "secrets"
[[step]]
name = "s"
action = "shutdown"
on_failure = "continue"
targets = [{ vapp = "front" }, { vapp = "back" }]
"#,
        );
    let report_file = t.path("report.json");
    let mut outputs = Vec::new();
    for extra in [
        vec![],
        vec!["--output", "json"],
        vec!["--report", report_file.to_str().unwrap()],
    ] {
        let out = run(&t, "runbook.toml")
            .env("ABIQUO_API_USERNAME", "operator")
            .env("ABIQUO_API_PASSWORD", secret)
            .env("RUST_LOG", "trace")
            .args(extra)
            .failure()
            .run();
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    // Refused credentials: the error must not echo them either.
    let out = run(&t, "runbook.toml")
        .env("ABIQUO_API_USERNAME", "operator")
        .env("ABIQUO_API_PASSWORD", format!("{secret}-wrong"))
        .code(3)
        .stderr_contains("authentication refused")
        .run();
    outputs.push(out.stdout);
    outputs.push(out.stderr);
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
    let original =
        std::fs::read_to_string(root().join("runbooks/maintenance-shutdown.toml")).unwrap();
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
    // No simulator of the test's own: `--simulate` starts the built-in one.
    let t = Test::new().file("maintenance-shutdown.toml", &fast);
    let out = run(&t, "maintenance-shutdown.toml")
        .args(["--simulate", "--simulate-speed", "20"])
        .failure()
        .stderr_contains("running against the built-in simulator at http://127.0.0.1:")
        .stdout_contains("Failed jobs (")
        .stdout_contains("ROLLBACK_DONE")
        .stdout_contains("Summary: ")
        .run();
    let stdout = &out.stdout;
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
    // The README's excerpt of this run is what the run prints, times and widths aside.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let excerpt = readme
        .split_once("An\nexcerpt:\n\n```\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README's excerpt of the first command's output");
    let printed: Vec<String> = stdout.lines().map(comparable).collect();
    for line in excerpt.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            printed.contains(&comparable(line)),
            "README line not in the output: {line:?}\n{stdout}"
        );
    }
}

/// A line of the results without what differs from run to run: times, request counts,
/// column widths (from the widest cell) and table rules.
fn comparable(line: &str) -> String {
    let mut words: Vec<String> = line
        .split(|c: char| c.is_whitespace() || "│┆┌┐└┘├┤┬┴┼─╞╡╪═".contains(c))
        .filter(|w| !w.is_empty())
        .map(|w| {
            let time = w.trim_end_matches(',');
            let is_time = (time.ends_with('s') || time.ends_with("ms"))
                && time.chars().next().is_some_and(|c| c.is_ascii_digit())
                && time
                    .chars()
                    .all(|c| c.is_ascii_digit() || ".ms".contains(c));
            if is_time || w == "~" || w == "~," {
                "~".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    // `…, 90 API requests` (test mode leaves the count out).
    if words.ends_with(&["API".to_owned(), "requests".to_owned()]) {
        words.truncate(words.len().saturating_sub(3));
    }
    words.join(" ")
}

#[test]
fn without_yes_and_without_a_terminal_run_refuses_with_exit_2() {
    Test::new()
        .current_dir(root())
        .args(["run", "runbooks/maintenance-shutdown.toml"])
        .code(2)
        .stderr_contains("pass --yes")
        .run();
}

#[test]
fn json_report_is_versioned_and_matches_the_run() {
    let t = Test::new().inventory(TWO_TIER).runbook(
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
    let out = run(&t, "runbook.toml")
        .args(["--output", "json", "--report", "out.json"])
        .success()
        .run();
    let report: RunReport = out.json();
    let from_file: RunReport = serde_json::from_str(&t.read("out.json")).unwrap();
    assert_eq!(report, from_file);
    assert_eq!(report.format, 1);
    assert_eq!(report.runbook, "json");
    assert_eq!(report.results.len(), 5);
    let summary = report.summary.unwrap();
    assert_eq!((summary.counts.ok, summary.counts.skipped), (4, 1));
    let raw: serde_json::Value = out.json();
    assert_eq!(raw["results"][4]["result"], "skipped");
    assert_eq!(raw["results"][4]["reason"], "excluded");
}

#[test]
fn ctrl_c_drains_in_flight_tasks_and_exits_130() {
    drains_in_flight_tasks_on(Running::interrupt, "interrupted");
}

#[test]
fn sigterm_drains_like_ctrl_c_and_says_how_to_resume() {
    drains_in_flight_tasks_on(Running::terminate, "SIGTERM: starting nothing new");
}

/// A run stopped by `signal` while tasks are in flight: nothing new starts, the tasks in
/// flight are followed to their end (none left LOCKED), it exits 130 and says how to resume.
fn drains_in_flight_tasks_on(signal: fn(&Running), said: &str) {
    let t = Test::new().generated(12, 800).runbook(
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
    let child = run(&t, "runbook.toml")
        .args(["--output", "json"])
        .code(130)
        .stderr_contains(said)
        .stderr_contains("Resume with: powerbook resume")
        .spawn();
    wait_until("the run starts", Duration::from_secs(20), || {
        !t.stats().mutations.is_empty()
    });
    signal(&child);
    let out = child.wait();
    let report: RunReport = out.json();
    let summary = report.summary.unwrap();
    assert!(summary.interrupted);
    let c = summary.counts;
    assert!(c.not_started >= 6, "{c:?}");
    assert_eq!(
        c.ok + c.not_started,
        12,
        "in-flight VMs were drained: {c:?}"
    );
    assert_eq!(t.stats().mutations.len(), c.ok);
    // Progress tells what really finished: the not started VMs are not counted as done.
    let line = format!(
        "step 'all off' finished: {} ok, 0 skipped, 0 failed, {} not done",
        c.ok, c.not_started
    );
    assert!(
        out.stderr.lines().any(|l| l == line),
        "no {line:?}\n{}",
        out.context()
    );
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
    let t = Test::new().inventory(CORNERS);
    let sim = t.sim();
    let (report, _) = t.block_on(run_lib(
        sim,
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
    let m = mutations(&t);
    let actions: Vec<&str> = m["slow-shutdown"]
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(actions, ["OFF graceful"]);
}

#[test]
fn a_locked_vm_is_waited_for_then_acted_on() {
    let t = Test::new().inventory(CORNERS);
    let sim = t.sim();
    assert!(sim.set_vm_state("busy", VmState::Locked));
    let (report, _) = t.block_on(async {
        let unlock = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(sim.set_vm_state("busy", VmState::On));
        };
        let run = run_lib(
            sim,
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
    // It waited by reading the VM again until the lock was gone, and never sent the
    // action into the lock (which the simulator would have refused).
    let stats = t.stats();
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
    let reads: u64 = stats
        .requests
        .iter()
        .filter(|(k, _)| k.starts_with("GET ") && k.ends_with("/virtualmachines/{vm}"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        reads >= 2,
        "the VM was read {reads} times: {:?}",
        stats.requests
    );
    assert_eq!(mutations(&t)["busy"].len(), 1);
}

#[test]
fn a_forbidden_vm_fails_with_the_api_reason_and_the_run_goes_on() {
    let t = Test::new().inventory(CORNERS);
    let sim = t.sim();
    let (report, summary) = t.block_on(run_lib(
        sim,
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
    let t = Test::new()
        .inventory(CORNERS)
        .faults(|f| f.stuck_task = 1.0);
    let sim = t.sim();
    let (report, _) = t.block_on(run_lib(
        sim,
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
    assert_eq!(mutations(&t)["fine"].len(), 1, "no second reset");
}

#[test]
fn the_run_wide_failure_threshold_stops_later_steps() {
    let t = Test::new().inventory(TWO_TIER);
    let sim = t.sim();
    let (report, summary) = t.block_on(run_lib(
        sim,
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
    assert!(!mutations(&t).contains_key("other-1"));
}

#[test]
fn a_step_that_finishes_at_once_still_releases_the_steps_after_it() {
    let t = Test::new().inventory(TWO_TIER);
    let sim = t.sim();
    // The first step has nothing to read: it is over within its first poll.
    let run = run_lib(
        sim,
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
    let (report, summary) = t
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), run).await })
        .expect("the second step never started");
    assert_eq!(summary.counts.skipped, 4);
    assert_eq!(result(&report, "then", "other-1").outcome, VmOutcome::Ok);
}
