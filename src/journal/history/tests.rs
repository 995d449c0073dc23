use super::*;
use crate::abiquo::model::TaskState;
use crate::exec::event::{Event, VmOutcome};
use crate::journal::{Header, Record};
use crate::plan::{Plan, PlannedStep};
use crate::runbook::model::{OnFailure, Order};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

use crate::pacing::window_ms as window;

fn header(endpoint: &str, runbook: &str) -> Header {
    Header {
        format: JOURNAL_FORMAT,
        powerbook: "test".into(),
        runbook_path: "/x.toml".into(),
        runbook_name: runbook.into(),
        source_hash: "h".into(),
        endpoint: endpoint.into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        started_ms: 0,
        estimate: None,
    }
}

fn plan(endpoint: &str, actions: &[Action]) -> Plan {
    let step = |index, action| PlannedStep {
        index,
        name: format!("s{index}").into(),
        action,
        order: Order::Parallel,
        after: Vec::new(),
        after_gates: Vec::new(),
        concurrency: 1,
        waves: Vec::new(),
        wave_pause_ms: 0,
        gate: None,
        wave_gate: None,
        task_timeout_ms: 600_000,
        fallback: None,
        max_failures: None,
        on_failure: OnFailure::Abort,
        targets: Vec::new(),
    };
    Plan {
        format: crate::plan::PLAN_FORMAT,
        runbook_name: "r".into(),
        source_hash: String::new(),
        endpoint: endpoint.into(),
        created_at: String::new(),
        concurrency: 1,
        max_failures: None,
        deadline_ms: None,
        steps: actions
            .iter()
            .enumerate()
            .map(|(i, a)| step(i, *a))
            .collect(),
        listed: crate::plan::Listed::default(),
    }
}

/// The event that opens a run of steps with these actions against `endpoint`.
fn started(endpoint: &str, actions: &[Action]) -> Event {
    Event::RunStarted {
        started_at: String::new(),
        plan: std::sync::Arc::new(plan(endpoint, actions)),
        partial: false,
    }
}

fn finished(step: usize, state: Option<TaskState>, elapsed_ms: u64) -> Event {
    Event::TaskFinished {
        step,
        target: 0,
        vm: "vm".into(),
        task_href: "h".into(),
        state,
        polls: 3,
        elapsed_ms,
    }
}

/// A journal as the writer leaves it: the header, then each event in a record.
fn journal_text(endpoint: &str, runbook: &str, events: &[Event]) -> String {
    let mut text = serde_json::to_string(&Record::Header(header(endpoint, runbook))).unwrap();
    text.push('\n');
    for event in events {
        let record = Record::Event {
            at_ms: 1,
            event: event.clone(),
        };
        text.push_str(&serde_json::to_string(&record).unwrap());
        text.push('\n');
    }
    text
}

#[test]
fn journal_events_become_priors_per_step_action() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        started("https://cloud/api", &[Action::Shutdown, Action::On]),
        finished(0, Some(TaskState::FinishedSuccessfully), 40_000),
        finished(0, Some(TaskState::FinishedUnsuccessfully), 1_000),
        finished(1, Some(TaskState::FinishedSuccessfully), 5_000),
        finished(1, None, 99_000),
    ];
    let text = journal_text("https://cloud/api", "r", &events);
    std::fs::write(dir.path().join("a.jsonl"), text).unwrap();
    let d = read_durations(dir.path(), "https://cloud/api", "r");
    assert_eq!(d.window(Action::Shutdown), window(36_000, 44_000));
    assert_eq!(d.window(Action::On), window(4_500, 5_500));
    let other = read_durations(dir.path(), "https://other/api", "r");
    assert_eq!(other.window(Action::On), None);
}

#[test]
fn a_run_started_against_another_cloud_teaches_nothing_until_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        started("https://other/api", &[Action::Off]),
        finished(0, Some(TaskState::FinishedSuccessfully), 99_000),
        started("https://cloud/api", &[Action::Off]),
        finished(0, Some(TaskState::FinishedSuccessfully), 10_000),
    ];
    let text = journal_text("https://cloud/api", "r", &events);
    std::fs::write(dir.path().join("a.jsonl"), text).unwrap();
    let d = read_durations(dir.path(), "https://cloud/api", "r");
    assert_eq!(d.window(Action::Off), window(9_000, 11_000));
}

#[test]
fn torn_last_lines_and_unknown_records_are_passed_over_and_damaged_journals_teach_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        started("http://x/api", &[Action::Off]),
        finished(0, Some(TaskState::FinishedSuccessfully), 7_000),
    ];
    let whole = journal_text("http://x/api", "r", &events);
    std::fs::write(
        dir.path().join("torn.jsonl"),
        format!("{whole}{{\"record\":\"ev"),
    )
    .unwrap();
    let d = read_durations(dir.path(), "http://x/api", "r");
    assert_eq!(d.window(Action::Off), window(6_300, 7_700));

    let (head, tail) = whole.split_at(whole.find("\n").unwrap() + 1);
    let odd = r#"{"record":"event","at_ms":1,"event":{"event":"vm_finished","result":"odd"}}"#;
    std::fs::write(
        dir.path().join("torn.jsonl"),
        format!("{head}{odd}\n{tail}"),
    )
    .unwrap();
    let d = read_durations(dir.path(), "http://x/api", "r");
    assert_eq!(
        d.window(Action::Off),
        window(6_300, 7_700),
        "a record of another shape"
    );

    let damaged = format!("{head}not json\n{tail}");
    std::fs::write(dir.path().join("torn.jsonl"), damaged).unwrap();
    let d = read_durations(dir.path(), "http://x/api", "r");
    assert_eq!(d.window(Action::Off), None);
}

#[tokio::test]
async fn the_newest_journals_of_the_same_cloud_seed_the_durations() {
    let dir = tempfile::tempdir().unwrap();
    let run = |endpoint: &str, action, ms| {
        [
            started(endpoint, &[action]),
            finished(0, Some(TaskState::FinishedSuccessfully), ms),
        ]
    };
    let journal = journal_text("http://x/api", "r", &run("http://x/api", Action::Off, 7000));
    std::fs::write(dir.path().join("a-1.jsonl"), journal).unwrap();
    let other_cloud = journal_text("http://y/api", "r", &run("http://y/api", Action::On, 9000));
    std::fs::write(dir.path().join("a-2.jsonl"), other_cloud).unwrap();
    let stray = journal_text("http://x/api", "r", &run("http://x/api", Action::On, 1));
    std::fs::write(dir.path().join("notes.txt"), stray).unwrap();
    let d = durations_from_journals(dir.path(), "http://x/api", "r")
        .await
        .unwrap();
    assert_eq!(d.window(Action::Off), window(6300, 7700));
    assert_eq!(d.window(Action::On), None);
    let none = durations_from_journals(&dir.path().join("missing"), "x", "r")
        .await
        .unwrap();
    assert_eq!(none.window(Action::Off), None);
}

#[test]
fn one_read_learns_task_times_of_the_cloud_and_vm_times_of_the_runbook() {
    use crate::exec::event::VmResult;
    use crate::plan::VmRef;
    let dir = tempfile::tempdir().unwrap();
    let result = |duration_ms| VmResult {
        step: 0,
        step_name: "s0".into(),
        target: 0,
        vm: VmRef {
            id: 1,
            name: "vm".into(),
            label: None,
            href: "http://x/api/vm/1".into(),
            vdc: None,
            vapp: None,
            hypervisor: None,
            ip: None,
        },
        action: Action::Off,
        state_before: None,
        state_after: None,
        deallocated_after: None,
        path: PathTaken::Direct,
        task_state: None,
        task_href: None,
        duration_ms,
        started_at: None,
        finished_at: None,
        outcome: VmOutcome::Ok,
        failed_jobs: Vec::new(),
    };
    let run = |task_ms, vm_ms| {
        [
            started("http://x/api", &[Action::Off]),
            finished(0, Some(TaskState::FinishedSuccessfully), task_ms),
            Event::VmFinished {
                result: Box::new(result(vm_ms)),
            },
        ]
    };
    let web = journal_text("http://x/api", "web", &run(2_000, 2_300));
    std::fs::write(dir.path().join("web.jsonl"), web).unwrap();
    let db = journal_text("http://x/api", "db", &run(4_000, 4_300));
    std::fs::write(dir.path().join("db.jsonl"), db).unwrap();

    let d = read_durations(dir.path(), "http://x/api", "web");
    // Task times from both runbooks' runs on this cloud…
    assert_eq!(d.window(Action::Off), window(1_800, 4_400));
    // …VM times from this runbook's only.
    assert_eq!(d.vm_mean(Action::Off), Some((ms(2_300), 1)));
    // A VM acted on again (a resume) and failed there says nothing about the action.
    let mut again = run(2_000, 2_300).to_vec();
    again.push(Event::VmActing {
        step: 0,
        target: 0,
        vm: result(0).vm,
        intent: crate::exec::event::Intent {
            action: Action::Off,
            request: crate::abiquo::model::PowerRequest::State {
                target: crate::abiquo::model::PowerState::Off,
                graceful: false,
            },
            from: crate::abiquo::model::VmState::On,
            to: crate::abiquo::model::VmState::Off,
            path: PathTaken::Direct,
        },
    });
    std::fs::write(
        dir.path().join("web.jsonl"),
        journal_text("http://x/api", "web", &again),
    )
    .unwrap();
    let d = read_durations(dir.path(), "http://x/api", "web");
    assert_eq!(d.vm_mean(Action::Off), None);
}
