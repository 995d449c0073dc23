//! The estimate of whole plans.

use super::*;
use crate::abiquo::model::VmState;
use crate::plan::tests::{build, runbook, sel_vm, step, vm};
use crate::runbook::model::Fallback;
use std::num::NonZeroUsize;

fn four_on() -> Vec<crate::abiquo::model::VirtualMachine> {
    (1..=4)
        .map(|i| vm(i, &format!("web-{i}"), "web", VmState::On, "KVM"))
        .collect()
}

#[test]
fn a_plan_takes_rounds_of_per_vm_time_and_counts_its_requests() {
    let mut s = step("down", Action::Off, vec![sel_vm("web-*")]);
    s.concurrency = NonZeroUsize::new(2);
    let mut rb = runbook(vec![s]);
    rb.estimates.insert(Action::Off, Duration::from_secs(10));
    let plan = build(&rb, &four_on(), "http://x/api");
    let inputs = EstimateInputs {
        listed_vms: 250,
        ..EstimateInputs::default()
    };
    let e = estimate(&plan, &rb, &inputs);
    let step = &e.steps[0];
    assert_eq!(step.task_source, DurationSource::Runbook);
    assert!(step.vm_ms >= 10_000 + 3 * 50, "{step:?}");
    let task = Duration::from_secs(10);
    let (cold_at, cold_polls) = detection(task, &inputs.poll, inputs.request, None);
    let warm = Some(learned_window(task));
    let (_, warm_polls) = detection(task, &inputs.poll, inputs.request, warm);
    // The first round polls cold; once a task finished, the rest poll near the finish.
    assert!(warm_polls < cold_polls, "{warm_polls} vs {cold_polls}");
    let cold_vm = ms(cold_at + inputs.request * 3);
    assert!(cold_vm >= step.vm_ms, "{cold_vm} vs {step:?}");
    // (each figure is rounded down to the millisecond on its own)
    assert!(e.total_ms.abs_diff(cold_vm + step.vm_ms) <= 1, "{e:?}");
    // login + 3 listing pages + per VM: read, mutation, polls, confirming read
    assert_eq!(
        e.api_requests,
        1 + 3 + 2 * (3 + cold_polls) + 2 * (3 + warm_polls)
    );
    assert!(!e.rate_limited);
}

#[test]
fn the_request_rate_limit_is_a_floor_under_the_run() {
    let mut rb = runbook(vec![step("down", Action::Off, vec![sel_vm("web-*")])]);
    rb.estimates.insert(Action::Off, Duration::from_secs(1));
    rb.limits.requests_per_second = NonZeroUsize::new(1);
    let plan = build(&rb, &four_on(), "http://x/api");
    let e = estimate(&plan, &rb, &EstimateInputs::default());
    assert!(e.rate_limited);
    assert_eq!(e.total_ms, e.api_requests * 1000);
}

#[test]
fn a_graceful_shutdown_slower_than_its_fallback_ends_with_the_hard_off() {
    let mut s = step("down", Action::Shutdown, vec![sel_vm("web-1")]);
    s.fallback = Some(Fallback {
        action: Action::Off,
        after: Duration::from_secs(60),
    });
    let mut rb = runbook(vec![s]);
    rb.estimates
        .insert(Action::Shutdown, Duration::from_secs(600));
    rb.estimates.insert(Action::Off, Duration::from_secs(10));
    let plan = build(&rb, &four_on(), "http://x/api");
    let e = estimate(&plan, &rb, &EstimateInputs::default());
    let vm = e.steps[0].vm_ms;
    assert!((70_000..80_000).contains(&vm), "{vm}");
}

#[test]
fn history_is_used_when_the_runbook_says_nothing_and_defaults_otherwise() {
    let rb = runbook(vec![
        step("down", Action::Off, vec![sel_vm("web-*")]),
        step("up", Action::On, vec![sel_vm("web-*")]),
    ]);
    let h = TaskDurations::new();
    h.record_vm(Action::Off, Duration::from_secs(7));
    let plan = build(&rb, &four_on(), "http://x/api");
    let inputs = EstimateInputs {
        history: Some(&h),
        ..EstimateInputs::default()
    };
    let e = estimate(&plan, &rb, &inputs);
    assert_eq!(e.steps[0].task_source, DurationSource::History);
    assert_eq!(e.steps[0].history_samples, Some(1));
    assert_eq!(e.steps[0].vm_ms, 7_000);
    assert_eq!(e.steps[1].task_source, DurationSource::Default);
}
