use super::*;
use crate::abiquo::client::ClientStats;
use crate::abiquo::model::{JobState, TaskState, VmState};
use crate::exec::event::{
    FailedJob, PathTaken, ResultCounts, StepInfo, Summary, VmOutcome, VmResult,
};
use crate::plan::{PlannedStep, StepCounts, VmRef};
use crate::report::REPORT_FORMAT;
use crate::runbook::model::Action;
use crate::runbook::model::{OnFailure, Order};

const T0: u64 = 1_764_000_000_000;

fn vm(i: usize, name: &str) -> VmRef {
    VmRef {
        id: i as u64,
        name: name.into(),
        label: None,
        href: format!("http://127.0.0.1:9/api/cloud/virtualdatacenters/1/virtualappliances/1/virtualmachines/{i}").into(),
        vdc: None,
        vapp: None,
        hypervisor: None,
        ip: None,
    }
}

/// A shutdown of `n` VMs in two waves, each VM taking 2s, 50 at a time; every tenth fails
/// with a rolled-back job. `name` names VM `i`.
fn run(n: usize, name: impl Fn(usize) -> String) -> (RunReport, Plan, Marks) {
    let step_name: Arc<str> = "stop web".into();
    let mut results = Vec::new();
    let mut counts = ResultCounts::default();
    let mut marks = Marks::default();
    let half = n / 2;
    for i in 0..n {
        let failed = i % 10 == 9;
        let outcome = if failed {
            VmOutcome::Failed {
                reason: "SHUTDOWN task FINISHED_UNSUCCESSFULLY".into(),
            }
        } else {
            VmOutcome::Ok
        };
        counts.add(&outcome);
        let start = T0 + (i as u64 / 50) * 2_000 + if i >= half { 5_000 } else { 0 };
        let vm = vm(i, &name(i));
        marks.note(
            start,
            &Event::VmActing {
                step: 0,
                target: i,
                vm: vm.clone(),
                intent: crate::exec::event::Intent {
                    action: Action::Shutdown,
                    request: crate::abiquo::model::PowerRequest::HARD_OFF,
                    from: VmState::On,
                    to: VmState::Off,
                    path: PathTaken::Graceful,
                },
            },
        );
        results.push(VmResult {
            step: 0,
            step_name: step_name.clone(),
            target: i,
            vm: vm.clone(),
            action: Action::Shutdown,
            state_before: Some(VmState::On),
            state_after: Some(if failed { VmState::On } else { VmState::Off }),
            deallocated_after: None,
            path: PathTaken::Graceful,
            task_state: Some(if failed {
                TaskState::FinishedUnsuccessfully
            } else {
                TaskState::FinishedSuccessfully
            }),
            task_href: None,
            duration_ms: 2_000,
            started_at: Some(start),
            finished_at: Some(start + 2_000),
            failed_jobs: if failed {
                vec![FailedJob {
                    vm: vm.name.to_string(),
                    task_id: "t".into(),
                    task_type: "SHUTDOWN".into(),
                    job_id: "j".into(),
                    job_type: "SHUTDOWN".into(),
                    description: format!("Shutdown of {}", vm.name),
                    state: JobState::Failed,
                    rollback_state: JobState::RollbackDone,
                }]
            } else {
                Vec::new()
            },
            outcome,
        });
    }
    marks.note(
        T0 + 4_000,
        &Event::WavePaused {
            step: 0,
            wave: 1,
            pause_ms: 1_000,
        },
    );
    let plan = Plan {
        format: crate::plan::PLAN_FORMAT,
        runbook_name: "web".into(),
        source_hash: String::new(),
        endpoint: "http://127.0.0.1:9/api".into(),
        created_at: String::new(),
        concurrency: 50,
        max_failures: None,
        deadline_ms: Some(9_000),
        steps: vec![PlannedStep {
            index: 0,
            name: step_name.clone(),
            action: Action::Shutdown,
            order: Order::Parallel,
            after: Vec::new(),
            after_gates: Vec::new(),
            concurrency: 50,
            waves: vec![(0..half).collect(), (half..n).collect()],
            wave_pause_ms: 1_000,
            gate: None,
            wave_gate: None,
            task_timeout_ms: 600_000,
            fallback: None,
            max_failures: None,
            on_failure: OnFailure::Abort,
            targets: Vec::new(),
        }],
        listed: crate::plan::Listed::default(),
    };
    let report = RunReport {
        format: REPORT_FORMAT,
        kind: crate::report::kind::RUN_REPORT.into(),
        powerbook: "test".into(),
        runbook: "web".into(),
        source_hash: String::new(),
        endpoint: "http://127.0.0.1:9/api".into(),
        started_at: "2025-11-24T16:00:00Z".into(),
        steps: vec![StepInfo {
            index: 0,
            name: step_name.to_string(),
            action: Action::Shutdown,
            counts: StepCounts {
                act: n,
                ..StepCounts::default()
            },
            waves: 2,
        }],
        failed_jobs: results
            .iter()
            .flat_map(|r| r.failed_jobs.iter().cloned())
            .collect(),
        results,
        gates: Vec::new(),
        summary: Some(Summary {
            counts,
            wall_ms: 0,
            aborted: None,
            interrupted: false,
            api: ClientStats::default(),
        }),
    };
    (report, plan, marks)
}

fn page_of(report: &RunReport, plan: &Plan, marks: &Marks) -> String {
    let last_ms = report
        .results
        .iter()
        .filter_map(|r| r.finished_at)
        .max()
        .unwrap_or(T0);
    render(&RunSource {
        report,
        plan: Some(plan),
        runbook_path: "/srv/runbooks/web.toml",
        started_ms: T0,
        last_ms,
        estimate: None,
        marks,
        ended: true,
        resumes: 0,
    })
}

#[test]
fn a_small_run_draws_one_bar_per_vm_in_a_lane_per_step_and_per_wave() {
    let (report, plan, marks) = run(10, |i| format!("web-{i}"));
    let page = page_of(&report, &plan, &marks);
    assert_eq!(page.matches("class=\"lane step\"").count(), 1);
    assert_eq!(page.matches("class=\"lane wave\"").count(), 2);
    assert_eq!(page.matches("class=\"bar ok\"").count(), 9);
    assert_eq!(page.matches("class=\"bar failed\"").count(), 1);
    assert!(!page.contains("class=\"density\""));
    assert!(page.contains("class=\"pause\""), "the pause before wave 2");
    assert!(
        page.contains("class=\"marker deadline\""),
        "the deadline at 9s"
    );
    assert!(page.contains("data-verdict=\"failed\""));
    assert!(page.contains("<tr class=\"failed-vm\" data-vm=\"web-9\">"));
    assert!(page.contains("ROLLBACK_DONE"));
}

#[test]
fn hostile_vm_names_are_escaped_as_text() {
    let (report, plan, marks) = run(10, |i| {
        if i == 9 {
            "<script>alert(1)</script>".into()
        } else {
            format!("\"><img src=x onerror=alert({i})>")
        }
    });
    let page = page_of(&report, &plan, &marks);
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("data-vm=\"&quot;&gt;&lt;img src=x onerror=alert(0)&gt;\""));
}

#[test]
fn the_page_fetches_nothing_from_anywhere() {
    let (report, plan, marks) = run(10, |i| format!("web-{i}"));
    let page = page_of(&report, &plan, &marks).to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(http",
        "url(//",
        "@import",
        "<link",
    ] {
        assert!(!page.contains(external), "{external}");
    }
    assert!(page.contains("content-security-policy"));
    assert!(page.contains("default-src 'none'"));
    // The endpoint is shown, as text.
    assert!(page.contains("<code>http://127.0.0.1:9/api</code>"));
}

#[test]
fn ten_thousand_vms_are_drawn_as_density_bands_in_a_small_file() {
    let (report, plan, marks) = run(10_000, |i| format!("vm-{i:05}"));
    let page = page_of(&report, &plan, &marks);
    assert_eq!(
        page.matches("class=\"density\"").count(),
        2,
        "one band per wave"
    );
    assert!(
        !page.contains("class=\"bar "),
        "no single bars past the threshold"
    );
    assert!(page.contains("data-bars=\"5000\""));
    // 1,000 failed VMs are listed in the table.
    assert_eq!(page.matches("class=\"failed-vm\"").count(), 1_000);
    assert!(page.len() < 2_000_000, "{} bytes", page.len());
}

#[test]
fn a_lane_switches_to_a_density_band_just_past_the_threshold() {
    let (report, plan, marks) = run(2 * DENSITY_THRESHOLD, |i| format!("vm-{i}"));
    let page = page_of(&report, &plan, &marks);
    assert_eq!(page.matches("class=\"density\"").count(), 0);
    let (report, plan, marks) = run(2 * (DENSITY_THRESHOLD + 1), |i| format!("vm-{i}"));
    let page = page_of(&report, &plan, &marks);
    assert_eq!(page.matches("class=\"density\"").count(), 2);
}

#[test]
fn a_vm_requested_but_without_a_result_is_drawn_unfinished() {
    let (mut report, plan, marks) = run(10, |i| format!("web-{i}"));
    report.results.retain(|r| r.target != 3);
    let page = render(&RunSource {
        report: &report,
        plan: Some(&plan),
        runbook_path: "/srv/runbooks/web.toml",
        started_ms: T0,
        last_ms: T0 + 9_000,
        estimate: None,
        marks: &marks,
        ended: false,
        resumes: 0,
    });
    assert_eq!(page.matches("class=\"bar unfinished\"").count(), 1);
    assert!(page.contains("data-verdict=\"incomplete\""));
}

#[test]
fn durations_read_naturally() {
    assert_eq!(duration_text(850), "850ms");
    assert_eq!(duration_text(12_345), "12.3s");
    assert_eq!(duration_text(245_000), "4m05s");
    assert_eq!(duration_text(7_380_000), "2h03m");
}

#[test]
fn the_estimate_is_drawn_when_near_and_kept_to_the_header_when_far() {
    let (report, plan, marks) = run(10, |i| format!("web-{i}"));
    let with = |total_ms: u64| {
        let est = Estimate {
            total_ms,
            api_requests: 0,
            request_ms: 50,
            critical_path: Vec::new(),
            rate_limited: false,
            steps: Vec::new(),
        };
        render(&RunSource {
            report: &report,
            plan: Some(&plan),
            runbook_path: "/srv/runbooks/web.toml",
            started_ms: T0,
            last_ms: T0 + 7_000,
            estimate: Some(&est),
            marks: &marks,
            ended: true,
            resumes: 0,
        })
    };
    let near = with(8_000);
    assert!(near.contains("class=\"marker estimate-end\""));
    assert!(near.contains("8.0s (87% of it taken)"), "{near}");
    let far = with(3_600_000);
    assert!(!far.contains("class=\"marker estimate-end\""));
    assert!(far.contains("1h00m (0% of it taken)"));
}

#[test]
fn gates_are_drawn_on_their_step_and_wave_lanes_and_listed_with_their_outcome() {
    let (mut report, plan, mut marks) = run(10, |i| format!("web-{i}"));
    let gate = |wave, passed, check: &str| GateResult {
        step: 0,
        wave,
        after: None,
        check: check.to_owned(),
        passed,
        attempts: 3,
        elapsed_ms: 400,
        detail: if passed {
            "2 VMs passed".into()
        } else {
            "no answer".into()
        },
    };
    let before_step = gate(None, true, "tcp db-1:5432");
    let before_wave = gate(Some(1), false, "tcp {vm.ip}:443");
    marks.gates.push((T0 + 100, before_step.clone()));
    marks.gates.push((T0 + 2_000, before_wave.clone()));
    report.gates = vec![before_step, before_wave];
    let page = page_of(&report, &plan, &marks);
    assert_eq!(page.matches("class=\"gate passed\"").count(), 1, "{page}");
    assert_eq!(page.matches("class=\"gate refused\"").count(), 1);
    assert!(page.contains("data-gate=\"tcp db-1:5432\""));
    assert!(page.contains("data-gate=\"tcp {vm.ip}:443\""));
    assert!(page.contains("class=\"sortable gates\""), "the gates table");
}
