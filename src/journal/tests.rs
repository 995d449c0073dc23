//! Journal reading, folding, resume planning and restore generation, on journals built
//! record by record (no API).

use super::restore::restore_runbook;
use super::resume::plan_resume;
use super::writer::JournalWriter;
use super::*;
use crate::abiquo::model::VmState;
use crate::exec::event::{Intent, PathTaken, VmOutcome, VmResult};
use crate::exec::resume::ResumeVm;
use crate::plan::tests::{runbook, sel_vm, step, vm};
use crate::runbook::model::Action;

fn header() -> Header {
    Header {
        format: JOURNAL_FORMAT,
        powerbook: "0.1.0".into(),
        runbook_path: "/tmp/rb.toml".into(),
        runbook_name: "test".into(),
        source_hash: "0".repeat(64),
        endpoint: "http://127.0.0.1:9/api".into(),
        started_at: "2026-11-26T20:00:00Z".into(),
        started_ms: 1_000,
        estimate: None,
    }
}

/// Two steps over three VMs: `down` (off) then `up` (on), `c` is PAUSED and refused by off.
fn plan() -> Plan {
    let rb = runbook(vec![
        step("down", Action::Off, vec![sel_vm("*")]),
        step("up", Action::On, vec![sel_vm("*")]),
    ]);
    let vms = [
        vm(1, "a", "app", VmState::On, "KVM"),
        vm(2, "b", "app", VmState::On, "KVM"),
        vm(3, "c", "app", VmState::Paused, "KVM"),
    ];
    crate::plan::tests::build(&rb, &vms, "http://127.0.0.1:9/api")
}

fn vmref(plan: &Plan, step: usize, target: usize) -> VmRef {
    plan.steps[step].targets[target].vm.clone()
}

fn intent(action: Action, from: VmState, to: VmState) -> Intent {
    Intent {
        action,
        request: crate::abiquo::model::PowerRequest::State {
            target: crate::abiquo::model::PowerState::of(&to).unwrap(),
            graceful: false,
        },
        from,
        to,
        path: PathTaken::Direct,
    }
}

fn result(plan: &Plan, step: usize, target: usize, outcome: VmOutcome) -> VmResult {
    let s = &plan.steps[step];
    VmResult {
        step,
        step_name: s.name.clone(),
        target,
        vm: vmref(plan, step, target),
        action: s.action,
        state_before: Some(VmState::On),
        state_after: Some(VmState::Off),
        deallocated_after: None,
        path: PathTaken::Direct,
        task_state: None,
        task_href: Some(format!("http://127.0.0.1:9/api/t/{step}-{target}")),
        duration_ms: 5,
        started_at: Some(1_764_000_000_000),
        finished_at: Some(1_764_000_000_005),
        outcome,
        failed_jobs: Vec::new(),
    }
}

fn ev(at_ms: u64, event: Event) -> Record {
    Record::Event { at_ms, event }
}

fn acting(plan: &Plan, at: u64, step: usize, target: usize, i: Intent) -> Record {
    ev(
        at,
        Event::VmActing {
            step,
            target,
            vm: vmref(plan, step, target),
            intent: i,
        },
    )
}

fn accepted(at: u64, step: usize, target: usize, href: &str) -> Record {
    ev(
        at,
        Event::TaskAccepted {
            step,
            target,
            vm: String::new(),
            task_href: href.into(),
            adopted: false,
        },
    )
}

fn finished(at: u64, r: VmResult) -> Record {
    ev(
        at,
        Event::VmFinished {
            result: Box::new(r),
        },
    )
}

fn text(records: &[Record]) -> String {
    let mut out = serde_json::to_string(&Record::Header(header())).unwrap() + "\n";
    for r in records {
        out.push_str(&serde_json::to_string(r).unwrap());
        out.push('\n');
    }
    out
}

fn started(plan: &Plan) -> Record {
    ev(
        1_001,
        Event::RunStarted {
            started_at: "2026-11-26T20:00:00Z".into(),
            plan: std::sync::Arc::new(plan.clone()),
            partial: false,
        },
    )
}

fn journal_of(records: &[Record]) -> Journal {
    parse(Path::new("j.jsonl"), text(records).as_bytes()).unwrap()
}

#[test]
fn a_torn_last_line_is_ignored_and_reported() {
    let p = plan();
    let whole = text(&[started(&p)]);
    let torn = format!("{whole}{{\"record\":\"event\",\"at_ms\":12,\"ev");
    let j = parse(Path::new("j.jsonl"), torn.as_bytes()).unwrap();
    assert!(j.torn);
    assert_eq!(j.records.len(), 1);
    assert_eq!(j.valid_len, whole.len() as u64);
    let j = parse(Path::new("j.jsonl"), whole.as_bytes()).unwrap();
    assert!(!j.torn);
    assert_eq!(j.valid_len, whole.len() as u64);
}

#[test]
fn damage_before_the_last_line_or_a_missing_header_is_an_error() {
    let p = plan();
    let whole = text(&[started(&p)]);
    let mut lines: Vec<&str> = whole.lines().collect();
    lines.insert(1, "not json");
    let damaged = lines.join("\n") + "\n";
    let e = parse(Path::new("j.jsonl"), damaged.as_bytes()).unwrap_err();
    assert!(e.contains("j.jsonl:2: not a journal record"), "{e}");
    let no_header = serde_json::to_string(&started(&p)).unwrap() + "\n";
    let e = parse(Path::new("j.jsonl"), no_header.as_bytes()).unwrap_err();
    assert!(e.contains("not a powerbook journal"), "{e}");
    assert!(parse(Path::new("j.jsonl"), b"").is_err());
}

#[test]
fn resume_replays_finished_reattaches_in_flight_and_inspects_unanswered() {
    let p = plan();
    let off = intent(Action::Off, VmState::On, VmState::Off);
    let j = journal_of(&[
        started(&p),
        // a: done; b: task accepted, no result; c: refused (failed).
        acting(&p, 2_000, 0, 0, off.clone()),
        accepted(2_001, 0, 0, "http://127.0.0.1:9/api/t/a1"),
        finished(2_500, result(&p, 0, 0, VmOutcome::Ok)),
        acting(&p, 2_000, 0, 1, off.clone()),
        accepted(2_002, 0, 1, "http://127.0.0.1:9/api/t/b1"),
        finished(
            2_003,
            result(
                &p,
                0,
                2,
                VmOutcome::Failed {
                    reason: "VM-4".into(),
                },
            ),
        ),
        // step up, a: intent only (the crash hit between request and answer).
        acting(
            &p,
            3_000,
            1,
            0,
            intent(Action::On, VmState::Off, VmState::On),
        ),
    ]);
    let view = RunView::of(&j);
    assert!(!view.finished());
    let (state, counts) = plan_resume(&view, false);
    assert!(matches!(state.get(0, 0), Some(ResumeVm::Done(_))));
    assert!(matches!(state.get(0, 2), Some(ResumeVm::Done(_))));
    assert_eq!(
        state.get(0, 1),
        Some(&ResumeVm::Reattach {
            href: "http://127.0.0.1:9/api/t/b1".into(),
            intent: off,
        })
    );
    match state.get(1, 0) {
        Some(ResumeVm::Inspect {
            at_ms, known_tasks, ..
        }) => {
            assert_eq!(*at_ms, 3_000);
            assert_eq!(known_tasks, &["http://127.0.0.1:9/api/t/a1".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.get(1, 1), None, "never started: runs as planned");
    assert_eq!((counts.done, counts.reattach, counts.inspect), (2, 1, 1));
    let (state, counts) = plan_resume(&view, true);
    assert_eq!(state.get(0, 2), None, "--retry-failed runs it again");
    assert_eq!(counts.retried, 1);
}

#[test]
fn interrupted_results_are_followed_again_not_replayed() {
    let p = plan();
    let off = intent(Action::Off, VmState::On, VmState::Off);
    let j = journal_of(&[
        started(&p),
        acting(&p, 2_000, 0, 0, off.clone()),
        accepted(2_001, 0, 0, "http://127.0.0.1:9/api/t/a1"),
        finished(
            2_500,
            result(
                &p,
                0,
                0,
                VmOutcome::Interrupted {
                    reason: "task still STARTED".into(),
                },
            ),
        ),
    ]);
    let (state, _) = plan_resume(&RunView::of(&j), false);
    assert!(matches!(state.get(0, 0), Some(ResumeVm::Reattach { .. })));
}

#[test]
fn the_latest_segment_decides_results_and_the_end() {
    let p = plan();
    let off = intent(Action::Off, VmState::On, VmState::Off);
    let failed = VmOutcome::Failed { reason: "x".into() };
    let j = journal_of(&[
        started(&p),
        acting(&p, 2_000, 0, 0, off.clone()),
        finished(2_100, result(&p, 0, 0, failed)),
        Record::Resumed(Resumed {
            powerbook: "0.1.0".into(),
            at: String::new(),
            at_ms: 5_000,
            source_hash: "0".repeat(64),
            retry_failed: true,
            forced: false,
        }),
        started(&p),
        acting(&p, 5_100, 0, 0, off),
        finished(5_200, result(&p, 0, 0, VmOutcome::Ok)),
    ]);
    let view = RunView::of(&j);
    assert_eq!(view.resumes, 1);
    assert_eq!(view.results()[0].outcome, VmOutcome::Ok);
    assert_eq!(view.last_ms, 5_200);
    let report = runs::report_of(&view);
    assert_eq!(report.summary.unwrap().counts.ok, 1);
}

#[test]
fn restore_undoes_steps_in_reverse_with_actions_from_the_state_before() {
    let p = plan();
    let j = journal_of(&[
        started(&p),
        // down: a and b were ON.
        acting(
            &p,
            2_000,
            0,
            0,
            intent(Action::Off, VmState::On, VmState::Off),
        ),
        accepted(2_001, 0, 0, "http://127.0.0.1:9/api/t/a1"),
        finished(2_100, result(&p, 0, 0, VmOutcome::Ok)),
        acting(
            &p,
            2_000,
            0,
            1,
            intent(Action::Off, VmState::On, VmState::Off),
        ),
        accepted(2_001, 0, 1, "http://127.0.0.1:9/api/t/b1"),
        finished(2_100, result(&p, 0, 1, VmOutcome::Ok)),
        // up: a again (it was ON before the run: restore stays `on` in the `down` undo).
        acting(
            &p,
            3_000,
            1,
            0,
            intent(Action::On, VmState::Off, VmState::On),
        ),
        accepted(3_001, 1, 0, "http://127.0.0.1:9/api/t/a2"),
        // up: c (PAUSED before; made ON by a resume-like action for the test).
        acting(
            &p,
            3_000,
            1,
            2,
            intent(Action::On, VmState::Paused, VmState::On),
        ),
        accepted(3_001, 1, 2, "http://127.0.0.1:9/api/t/c2"),
    ]);
    let toml = restore_runbook(&RunView::of(&j), "j.jsonl")
        .unwrap()
        .unwrap();
    assert!(toml.starts_with("#:schema "), "{toml}");
    let rb = crate::runbook::parse("restore.toml", &toml)
        .unwrap_or_else(|f| panic!("{f}\n{toml}"))
        .runbook;
    let steps: Vec<(&str, Action)> = rb
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.action))
        .collect();
    assert_eq!(
        steps,
        [
            ("undo 'up': pause", Action::Pause),
            ("undo 'down': on", Action::On)
        ]
    );
    let hrefs = |i: usize| -> Vec<String> {
        rb.steps[i]
            .targets
            .iter()
            .map(|s| s.href.clone().unwrap())
            .collect()
    };
    assert_eq!(hrefs(0), [vmref(&p, 1, 2).href.to_string()]);
    assert_eq!(
        hrefs(1),
        [
            vmref(&p, 0, 0).href.to_string(),
            vmref(&p, 0, 1).href.to_string()
        ]
    );
    assert_eq!(rb.api.endpoint.as_deref(), Some("http://127.0.0.1:9/api"));
}

#[test]
fn a_run_that_touched_nothing_has_no_restore_runbook() {
    let p = plan();
    let j = journal_of(&[
        started(&p),
        finished(
            2_100,
            VmResult {
                path: PathTaken::Skipped,
                ..result(
                    &p,
                    0,
                    0,
                    VmOutcome::Skipped {
                        reason: "already OFF".into(),
                    },
                )
            },
        ),
    ]);
    assert_eq!(restore_runbook(&RunView::of(&j), "j.jsonl"), Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_syncs_records_never_overwrites_and_appends_after_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/j.jsonl");
    let p = plan();
    let w = JournalWriter::create(&path, &Record::Header(header())).unwrap();
    let sink = w.sink();
    sink.record(&Event::RunAborted { reason: "a".into() }).await;
    sink.record_durable(&Event::RunAborted { reason: "b".into() })
        .await
        .unwrap();
    // Durable means readable now, before the writer is closed.
    assert_eq!(load(&path).unwrap().records.len(), 2);
    // While it is open, nobody else may append (a resume during the run).
    let e = JournalWriter::append(&path, 0, &started(&p)).unwrap_err();
    assert!(e.contains("another powerbook process"), "{e}");
    drop(sink);
    w.close().await.unwrap();
    assert!(JournalWriter::create(&path, &Record::Header(header())).is_err());

    // A crash mid-write: half a record at the end. Appending cuts it first.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"record\":\"ev");
    std::fs::write(&path, &bytes).unwrap();
    let j = load(&path).unwrap();
    assert!(j.torn);
    let w = JournalWriter::append(&path, j.valid_len, &started(&p)).unwrap();
    w.close().await.unwrap();
    let j = load(&path).unwrap();
    assert!(!j.torn);
    assert_eq!(j.records.len(), 3);
    assert!(RunView::of(&j).plan.is_some());
}

#[test]
fn default_paths_are_named_after_the_runbook_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let a = default_path(dir.path(), "Tier 2: storage/maintenance");
    let name = a.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("tier-2-storage-maintenance-2"), "{name}");
    assert!(name.ends_with("Z.jsonl"), "{name}");
    std::fs::write(&a, "").unwrap();
    let b = default_path(dir.path(), "Tier 2: storage/maintenance");
    assert_ne!(a, b);
}

/// Journal throughput, for the record (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_journal_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let ev = Event::RunAborted {
        reason: "x".repeat(300),
    };
    let w = JournalWriter::create(&dir.path().join("a.jsonl"), &Record::Header(header())).unwrap();
    let sink = w.sink();
    let t = std::time::Instant::now();
    for _ in 0..2000 {
        sink.record_durable(&ev).await.unwrap();
    }
    let one_by_one = t.elapsed();
    let t = std::time::Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let sink = sink.clone();
            let ev = ev.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    sink.record_durable(&ev).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let concurrent = t.elapsed();
    drop(sink);
    w.close().await.unwrap();
    eprintln!(
        "2000 durable records one by one: {one_by_one:?}; 2000 from 50 tasks at once: {concurrent:?}"
    );
}

#[test]
fn a_journal_of_an_older_format_is_refused_with_the_version_that_wrote_it() {
    let p = plan();
    let typed = text(&[
        started(&p),
        accepted(2_001, 0, 0, "http://127.0.0.1:9/api/t/a1"),
    ]);
    let old = typed.replacen(&format!("\"format\":{JOURNAL_FORMAT}"), "\"format\":1", 1);
    assert_ne!(old, typed);
    let err = parse(Path::new("j.jsonl"), old.as_bytes()).unwrap_err();
    assert!(
        err.contains("written by an older powerbook (journal format 1; this one reads 2)")
            && err.contains("with powerbook 0.1.0, which wrote it"),
        "{err}"
    );
    assert!(parse(Path::new("j.jsonl"), typed.as_bytes()).is_ok());
}

/// A run that started on the first pages: the head step without VMs, each VM journaled as
/// it was handed out, then (if it got that far) the whole plan.
fn started_early(plan: &Plan, handed: usize, whole: bool) -> Vec<Record> {
    let mut skeleton = plan.clone();
    skeleton.steps.truncate(1);
    skeleton.steps[0].targets.clear();
    skeleton.steps[0].waves.clear();
    let mut records = vec![ev(
        1_001,
        Event::RunStarted {
            started_at: "2026-11-26T20:00:00Z".into(),
            plan: std::sync::Arc::new(skeleton),
            partial: true,
        },
    )];
    for t in 0..handed {
        let planned = &plan.steps[0].targets[t];
        records.push(ev(
            1_002,
            Event::TargetListed {
                step: 0,
                target: t,
                planned: Box::new(planned.clone()),
                pos: planned.disposition.is_live().then_some(t),
            },
        ));
        records.push(acting(
            plan,
            1_003,
            0,
            t,
            intent(Action::Off, VmState::On, VmState::Off),
        ));
    }
    if whole {
        records.push(ev(
            1_010,
            Event::Planned {
                plan: std::sync::Arc::new(plan.clone()),
                estimate: None,
            },
        ));
    }
    records
}

#[test]
fn a_run_that_stopped_before_its_plan_was_whole_has_the_vms_handed_out() {
    let plan = plan();
    let records = started_early(&plan, 2, false);
    let view = RunView::of(&journal_of(&records));
    assert!(view.plan_partial);
    let got = view.plan.as_ref().unwrap();
    assert_eq!(got.steps.len(), 1);
    assert_eq!(got.steps[0].targets, plan.steps[0].targets[..2]);
    assert_eq!(got.steps[0].waves, vec![vec![0, 1]]);
    // A resume follows up both: their requests may be in flight.
    let (state, _) = plan_resume(&view, false);
    assert_eq!(state.vms.len(), 2);
    assert!(matches!(state.get(0, 1), Some(ResumeVm::Inspect { .. })));
}

#[test]
fn the_whole_plan_of_a_run_that_started_early_replaces_what_was_handed_out() {
    let plan = plan();
    let mut records = started_early(&plan, 2, true);
    let view = RunView::of(&journal_of(&records));
    assert!(!view.plan_partial);
    assert_eq!(view.plan.as_ref(), Some(&plan));
    // A VM journaled after the whole plan changes nothing of it.
    records.push(ev(
        1_011,
        Event::TargetListed {
            step: 0,
            target: 3,
            planned: Box::new(plan.steps[0].targets[0].clone()),
            pos: Some(3),
        },
    ));
    assert_eq!(
        RunView::of(&journal_of(&records)).plan.as_ref(),
        Some(&plan)
    );
}
