use super::*;
use crate::abiquo::client::ClientStats;
use crate::abiquo::model::JobState;
use crate::plan::{StepCounts, VmRef};
use crate::report::REPORT_FORMAT;
use crate::report::style::{FULL_LISTING_MAX, STABLE_WIDTH};
use crate::runbook::model::Action;
use std::sync::Arc;

const TASK: &str = "e15b0aec-0a9c-4e37-bc68-10da7e5ec742";
const JOB: &str = "e15b0aec-0a9c-4e37-bc68-10da7e5ec742.1fae8217-e3d0-4ed8-bed1-f34c80c0aaee";

fn vm(i: usize) -> VmRef {
    VmRef {
        id: i as u64,
        name: format!("web-{i:05}").into(),
        label: None,
        href: format!("http://127.0.0.1:9/api/cloud/virtualdatacenters/1/virtualappliances/1/virtualmachines/{i}").into(),
        vdc: Some("dc-1".into()),
        vapp: Some("web".into()),
        hypervisor: Some("KVM".into()),
        ip: None,
    }
}

/// A finished shutdown of `n` VMs (every `fail_every`th failed with a rolled-back job,
/// every 10th already off), then a power-on of the first half.
fn report(n: usize, fail_every: usize) -> RunReport {
    let step_name: Arc<str> = "stop web".into();
    let mut results = Vec::new();
    let mut failed_jobs = Vec::new();
    let mut counts = ResultCounts::default();
    for i in 0..n {
        let failed = fail_every > 0 && i % fail_every == fail_every - 1;
        let skipped = !failed && i % 10 == 3;
        let outcome = if failed {
            VmOutcome::Failed {
                reason: "SHUTDOWN task FINISHED_UNSUCCESSFULLY (job SHUTDOWN FAILED, rollback \
                         ROLLBACK_DONE)"
                    .into(),
            }
        } else if skipped {
            VmOutcome::Skipped {
                reason: "already OFF".into(),
            }
        } else {
            VmOutcome::Ok
        };
        let jobs = if failed {
            vec![FailedJob {
                vm: vm(i).name.to_string(),
                task_id: TASK.into(),
                task_type: "SHUTDOWN".into(),
                job_id: JOB.into(),
                job_type: "SHUTDOWN".into(),
                description: format!("Shutdown task's shutdown on virtual machine with id {i}"),
                state: JobState::Failed,
                rollback_state: JobState::RollbackDone,
            }]
        } else {
            Vec::new()
        };
        failed_jobs.extend(jobs.iter().cloned());
        counts.add(&outcome);
        results.push(VmResult {
            step: 0,
            step_name: step_name.clone(),
            target: i,
            vm: vm(i),
            action: Action::Shutdown,
            state_before: Some(if skipped { VmState::Off } else { VmState::On }),
            state_after: Some(if failed { VmState::On } else { VmState::Off }),
            deallocated_after: None,
            path: if skipped {
                PathTaken::Skipped
            } else {
                PathTaken::Graceful
            },
            task_state: (!skipped).then_some(if failed {
                TaskState::FinishedUnsuccessfully
            } else {
                TaskState::FinishedSuccessfully
            }),
            task_href: None,
            duration_ms: 2_000,
            started_at: Some(1_764_000_000_000 + i as u64),
            finished_at: Some(1_764_000_002_000 + i as u64),
            outcome,
            failed_jobs: jobs,
        });
    }
    let on_name: Arc<str> = "start web".into();
    for i in 0..n / 2 {
        let outcome = VmOutcome::Ok;
        counts.add(&outcome);
        results.push(VmResult {
            step: 1,
            step_name: on_name.clone(),
            target: i,
            vm: vm(i),
            action: Action::On,
            state_before: Some(VmState::Off),
            state_after: Some(VmState::On),
            deallocated_after: None,
            path: PathTaken::Direct,
            task_state: Some(TaskState::FinishedSuccessfully),
            task_href: None,
            duration_ms: 1_000,
            started_at: Some(1_764_000_010_000),
            finished_at: Some(1_764_000_011_000),
            outcome,
            failed_jobs: Vec::new(),
        });
    }
    let step = |index: usize, name: &str, action, vms: usize| StepInfo {
        index,
        name: name.into(),
        action,
        counts: StepCounts {
            act: vms,
            ..StepCounts::default()
        },
        waves: 1,
    };
    RunReport {
        format: REPORT_FORMAT,
        kind: crate::report::kind::RUN_REPORT.into(),
        powerbook: "test".into(),
        runbook: "web".into(),
        source_hash: String::new(),
        endpoint: "http://127.0.0.1:9/api".into(),
        started_at: String::new(),
        steps: vec![
            step(0, "stop web", Action::Shutdown, n),
            step(1, "start web", Action::On, n / 2),
        ],
        results,
        failed_jobs,
        gates: Vec::new(),
        summary: Some(Summary {
            counts,
            wall_ms: 12_000,
            aborted: None,
            interrupted: false,
            api: ClientStats::default(),
        }),
    }
}

fn test_opts() -> RenderOptions {
    RenderOptions {
        test_mode: true,
        ..RenderOptions::default()
    }
}

fn longest_line(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn ten_vms_are_listed_in_full() {
    let text = render(&report(10, 5), test_opts());
    insta::assert_snapshot!("results_10_vms", text);
    assert!(text.contains("web-00000"), "{text}");
    assert!(!text.contains("not listed"), "{text}");
}

#[test]
fn five_hundred_vms_with_five_failures_fit_a_screen_and_120_columns() {
    let text = render(&report(500, 100), test_opts());
    insta::assert_snapshot!("results_500_vms", text);
    assert!(text.lines().count() <= 60, "{} lines", text.lines().count());
    assert!(longest_line(&text) <= usize::from(STABLE_WIDTH), "{text}");
    // Every failed VM is on the first screen.
    let first_screen: String = text.lines().take(40).collect::<Vec<_>>().join("\n");
    for i in [99, 199, 299, 399, 499] {
        assert!(
            first_screen.contains(&format!("web-{i:05}")),
            "{first_screen}"
        );
    }
}

#[test]
fn ten_thousand_vms_collapse_to_their_failures_and_counts() {
    let text = render(&report(10_000, 2_000), test_opts());
    insta::assert_snapshot!("results_10000_vms", text);
    assert!(longest_line(&text) <= usize::from(STABLE_WIDTH), "{text}");
    assert!(
        text.contains("14995 more VM results not listed: 13995 ok, 1000 skipped"),
        "{text}"
    );
}

#[test]
fn show_all_lists_every_result_and_problems_only_the_failures() {
    let r = report(FULL_LISTING_MAX * 2, 7);
    let all = render(
        &r,
        RenderOptions {
            show: Show::All,
            ..test_opts()
        },
    );
    for result in &r.results {
        assert!(all.contains(&*result.vm.name));
    }
    assert!(!all.contains("not listed"), "{all}");
    let small = report(6, 3);
    let problems = render(
        &small,
        RenderOptions {
            show: Show::Problems,
            ..test_opts()
        },
    );
    assert!(
        problems.contains("web-00002") && problems.contains("web-00005"),
        "{problems}"
    );
    assert!(!problems.contains("web-00000 "), "{problems}");
}

#[test]
fn failed_jobs_show_whole_task_and_job_ids_each_on_its_own_line() {
    let text = render(&report(10, 5), test_opts());
    assert!(
        text.lines().any(|l| l.trim() == format!("job  {JOB}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("task {TASK} (SHUTDOWN)")),
        "{text}"
    );
}

#[test]
fn the_summary_counts_vms_once_however_many_steps_they_were_in() {
    let text = render(&report(40, 0), test_opts());
    assert!(
        text.contains("Summary: 40 VMs in 2 steps (60 results): 56 ok, 4 skipped, 0 failed"),
        "{text}"
    );
}

#[test]
fn colours_mark_outcomes_only_when_asked() {
    let r = report(10, 5);
    let plain = render(&r, test_opts());
    assert!(!plain.contains('\x1b'), "{plain}");
    let coloured = render(
        &r,
        RenderOptions {
            color: true,
            ..test_opts()
        },
    );
    assert!(coloured.contains("\x1b["), "{coloured}");
}

#[test]
fn a_narrow_terminal_is_respected() {
    let text = render(
        &report(10, 5),
        RenderOptions {
            width: 80,
            ..test_opts()
        },
    );
    // Whole ids are never cut: a job id is 73 characters.
    let widest = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("job "))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    assert!(widest <= 80, "{text}");
}

#[test]
fn durations_read_naturally() {
    let o = RenderOptions::default();
    assert_eq!(duration_text(1234, o), "1.2s");
    assert_eq!(duration_text(61_000, o), "1m01s");
    assert_eq!(duration_text(61_000, test_opts()), "~");
}

#[test]
fn task_states_are_a_word_in_the_table() {
    assert_eq!(task_text(Some(&TaskState::FinishedSuccessfully)), "done");
    assert_eq!(
        task_text(Some(&TaskState::FinishedUnsuccessfully)),
        "failed"
    );
    assert_eq!(task_text(Some(&TaskState::Other("WEIRD".into()))), "weird");
    assert_eq!(task_text(None), "-");
}

#[test]
fn deallocation_is_shown_with_the_state() {
    assert_eq!(
        state_text(Some(&VmState::Off), Some(true)),
        "OFF (deallocated)"
    );
    assert_eq!(state_text(Some(&VmState::Off), Some(false)), "OFF");
    assert_eq!(state_text(None, None), "-");
}

#[test]
fn jobs_of_vms_that_recovered_are_counted_in_a_large_run_and_listed_in_a_small_one() {
    // A failed graceful job on a VM that then went off by the fallback: ok in the end.
    let recovered = |mut r: RunReport| {
        let job = r.failed_jobs[0].clone();
        for i in [0, 1, 2] {
            r.failed_jobs.push(FailedJob {
                vm: format!("web-{i:05}"),
                ..job.clone()
            });
        }
        r
    };
    let large = render(&recovered(report(500, 100)), test_opts());
    assert!(large.contains("Failed jobs (5):"), "{large}");
    assert!(large.contains("… 3 more of VMs that ended ok"), "{large}");
    assert!(!large.contains("  web-00000: SHUTDOWN job"), "{large}");
    let small = render(&recovered(report(6, 3)), test_opts());
    assert!(small.contains("Failed jobs (5):"), "{small}");
    assert!(small.contains("  web-00000: SHUTDOWN job"), "{small}");
}

#[test]
fn a_gate_on_an_after_edge_is_told_by_the_edge_it_was_on() {
    let mut r = report(10, 0);
    let gate = |wave, after, passed| crate::exec::event::GateResult {
        step: 1,
        wave,
        after,
        check: "tcp db:5432".into(),
        passed,
        attempts: 3,
        elapsed_ms: 10_000,
        detail: "db:5432 accepted a connection".into(),
    };
    r.gates = vec![
        gate(None, Some(0), true),
        gate(None, None, true),
        gate(Some(1), None, false),
    ];
    let text = render(&r, test_opts());
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Gates:")
        .skip(1)
        .take(3)
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        lines,
        [
            "  after 'stop web', before 'start web'",
            "  before 'start web'",
            "  before wave 2 of 'start web'"
        ],
        "{text}"
    );
}
