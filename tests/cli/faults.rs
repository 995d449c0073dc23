//! The fault matrix: `powerbook run` powers off 2,000 simulated VMs while the simulator
//! injects one fault, or all of them at once. Whatever the faults,
//! the run ends, every VM has a definite result that matches what the simulator did, and
//! every VM had exactly one power action accepted.

use crate::support::{Test, generated};
use powerbook::abiquo::model::{JobState, TaskState, VmState};
use powerbook::exec::event::VmOutcome;
use powerbook::report::RunReport;
use powerbook::sim::SimConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// VMs of every scenario.
const ALL_VMS: usize = 2000;
const ONE_FAULT_VMS: usize = ALL_VMS;
/// Tasks take 30–80 ms.
const TASK_MS: u64 = 55;
const TASK_JITTER_MS: u64 = 25;
/// The client's request timeout when answers are not slowed: long enough that a loaded
/// machine never hits it, so only injected faults are in play.
const REQUEST_TIMEOUT: &str = "10s";
/// With slow answers: the client gives up on a request after this long...
const SHORT_REQUEST_TIMEOUT: &str = "1s";
/// ...and a slow answer comes this much later (after the request was processed).
const SLOW_DELAY: Duration = Duration::from_secs(3);
/// A run that takes longer has hung.
const RUN_LIMIT: Duration = Duration::from_secs(150);
/// Scenarios run one at a time: each drives a few hundred requests in flight, and two at
/// once on a small machine measure the machine rather than the client.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const RUNBOOK: &str = r#"
name = "fault-matrix"
[limits]
concurrency = 200
[[step]]
name = "off"
action = "off"
targets = [{ vm = "vm-*" }]
on_failure = "continue"
"#;

/// Kinds of `faults_injected` a scenario must have produced (so none passes unharmed).
fn injected_kinds(cfg: &SimConfig) -> Vec<&'static str> {
    let f = &cfg.faults;
    [
        (f.http_503, "503"),
        (f.http_429, "429"),
        (f.drop_connection, "drop"),
        (f.lose_answer, "lose_answer"),
        (f.slow, "slow"),
        (f.job_failure, "job_failure"),
        (f.no_status_link, "no_status_link"),
    ]
    .into_iter()
    .filter(|(rate, _)| *rate > 0.0)
    .map(|(_, kind)| kind)
    .chain(cfg.token_ttl.map(|_| "token_expired"))
    .collect()
}

/// Runs the runbook over `vms` VMs on a simulator `setup` adjusts (its faults) and checks
/// every VM's result against the simulator.
fn matrix(seed: u64, vms: usize, setup: impl FnOnce(&mut SimConfig)) {
    let mut cfg = generated(vms, TASK_MS);
    cfg.task_jitter = Duration::from_millis(TASK_JITTER_MS);
    cfg.seed = seed;
    // Retry-After is whole seconds on the wire: this is answered as `1`.
    cfg.faults.retry_after = Duration::from_millis(100);
    cfg.faults.slow_delay = SLOW_DELAY;
    setup(&mut cfg);
    let kinds = injected_kinds(&cfg);
    let expiring = cfg.token_ttl.is_some();
    let timeout = if cfg.faults.slow > 0.0 {
        SHORT_REQUEST_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    let t = Test::new().sim_config(cfg).runbook(RUNBOOK);
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(["--poll-initial", "20ms", "--poll-max", "100ms"])
        .args(["--lock-wait", "20s", "--request-timeout", timeout])
        .timeout(RUN_LIMIT)
        .run();
    eprintln!(
        "fault matrix seed {seed}, {vms} VMs: run took {:?}",
        started.elapsed()
    );
    let report: RunReport = out.json();
    let stats = t.stats();
    for kind in &kinds {
        assert!(
            stats.faults_injected.get(*kind).is_some_and(|n| *n > 0),
            "no `{kind}` fault was injected: {:?}",
            stats.faults_injected
        );
    }

    if expiring {
        assert!(
            stats.requests_to("GET /api/login") >= 2,
            "an expired token must lead to a new login: {:?}",
            stats.requests
        );
    }

    // Exactly one accepted power action per VM.
    let names: BTreeSet<String> = t.sim().vm_states().into_iter().map(|v| v.name).collect();
    assert_eq!(names.len(), vms);
    let not_once: BTreeMap<&String, usize> = names
        .iter()
        .map(|vm| (vm, stats.mutations.get(vm).map_or(0, Vec::len)))
        .filter(|(_, n)| *n != 1)
        .collect();
    let reported = |vm: &str| {
        report
            .results
            .iter()
            .find(|r| *r.vm.name == *vm)
            .map_or_else(|| "no row".to_owned(), |r| r.outcome.text())
    };
    assert!(
        not_once.is_empty(),
        "{} VMs had not exactly one accepted mutation (VM, count, reported): {:#?}",
        not_once.len(),
        not_once
            .iter()
            .take(10)
            .map(|(vm, n)| (vm, n, reported(vm)))
            .collect::<Vec<_>>()
    );

    // One definite result per VM, the one the simulator's task had.
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &report.results {
        *rows.entry(&*r.vm.name).or_default() += 1;
    }
    assert_eq!(
        rows.keys()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
        names,
        "the report must have a row for every VM and no other"
    );
    assert!(rows.values().all(|n| *n == 1), "one row per VM");
    let states: BTreeMap<String, VmState> = t
        .sim()
        .vm_states()
        .into_iter()
        .map(|v| (v.name, v.state))
        .collect();
    let mut failed = 0;
    for r in &report.results {
        let vm = &*r.vm.name;
        let task = stats.mutations[vm][0].outcome.as_deref();
        match (&r.outcome, task) {
            (VmOutcome::Ok, Some("FINISHED_SUCCESSFULLY")) => {
                assert_eq!(states[vm], VmState::Off, "{vm} reported ok");
            }
            (VmOutcome::Failed { reason }, Some("FINISHED_UNSUCCESSFULLY")) => {
                failed += 1;
                assert!(!reason.is_empty(), "{vm}: a failure needs a reason");
                assert_eq!(
                    r.task_state,
                    Some(TaskState::FinishedUnsuccessfully),
                    "{vm}"
                );
                assert!(
                    !r.failed_jobs.is_empty()
                        && r.failed_jobs.iter().all(|j| {
                            j.state == JobState::Failed
                                && j.rollback_state == JobState::RollbackDone
                        }),
                    "{vm}: the failed job and its rollback must be reported: {:?}",
                    r.failed_jobs
                );
                assert_eq!(states[vm], VmState::On, "{vm} was rolled back");
            }
            (outcome, task) => panic!(
                "{vm}: reported {} but its task ended {task:?}\n{}",
                outcome.text(),
                tail(&out.stderr)
            ),
        }
    }
    let job_failures = stats
        .faults_injected
        .get("job_failure")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        failed as u64, job_failures,
        "failed VMs are the failed jobs"
    );
    assert_eq!(
        out.code,
        if failed > 0 { 1 } else { 0 },
        "{}",
        tail(&out.stderr)
    );
}

#[test]
fn http_503_on_5_percent_of_requests() {
    matrix(11, ONE_FAULT_VMS, |c| c.faults.http_503 = 0.05);
}

#[test]
fn http_429_with_retry_after_on_5_percent_of_requests() {
    matrix(12, ONE_FAULT_VMS, |c| c.faults.http_429 = 0.05);
}

#[test]
fn dropped_connections_on_2_percent_of_requests() {
    matrix(13, ONE_FAULT_VMS, |c| c.faults.drop_connection = 0.02);
}

#[test]
fn answers_lost_after_commit_on_2_percent_of_mutations() {
    matrix(14, ONE_FAULT_VMS, |c| c.faults.lose_answer = 0.02);
}

#[test]
fn slow_answers_past_the_request_timeout_on_10_percent_of_requests() {
    matrix(15, ONE_FAULT_VMS, |c| c.faults.slow = 0.10);
}

#[test]
fn job_failures_on_10_percent_of_tasks() {
    matrix(16, ONE_FAULT_VMS, |c| c.faults.job_failure = 0.10);
}

#[test]
fn every_fault_at_once() {
    matrix(17, ALL_VMS, |c| {
        let f = &mut c.faults;
        f.http_503 = 0.05;
        f.http_429 = 0.05;
        f.drop_connection = 0.02;
        f.lose_answer = 0.02;
        f.slow = 0.10;
        f.job_failure = 0.10;
    });
}

/// The end of stderr, for assertion messages (the JSON report of 2,000 VMs is too long to
/// print).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!("--- stderr (last lines)\n{}", lines[from..].join("\n"))
}

#[test]
fn session_token_expiring_mid_run() {
    matrix(18, ONE_FAULT_VMS, |c| {
        c.token_ttl = Some(Duration::from_secs(1))
    });
}

#[test]
fn accepted_answers_without_status_link_on_10_percent_of_mutations() {
    matrix(19, ONE_FAULT_VMS, |c| c.faults.no_status_link = 0.10);
}
