//! One VM, one request: success, skips, refusals (by state and by the API), task failures
//! and timeouts, read failures.

use super::*;
use crate::abiquo::model::JobState;
use crate::exec::fake::{CallKind, Reply, TaskScript, api_error};

#[tokio::test(start_paused = true)]
async fn a_successful_action_follows_its_task_and_confirms_the_state() {
    let fake = FakeCloud::new().with_vm("web", VmState::On);
    fake.script("web", [Reply::Accept(TaskScript::ok_after_polls(3))]);
    let h = harness(fake, &one_step("off", "web", ""));
    let run = h.run().await;
    let r = run.result("web");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Direct);
    assert_eq!(r.state_before, Some(VmState::On));
    assert_eq!(r.state_after, Some(VmState::Off));
    assert_eq!(r.task_state, ok_task());
    assert!(r.failed_jobs.is_empty());
    assert_eq!(h.fake.mutations("web"), [HARD_OFF]);
    assert_eq!(h.fake.polls("web"), 3);
    // One read to decide, one to confirm.
    assert_eq!(h.fake.reads("web"), 2);
    let accepted = run.accepted("web");
    assert_eq!(accepted.len(), 1);
    assert!(!accepted[0].1, "not adopted");
    assert_eq!(r.task_href.as_deref(), Some(accepted[0].0.as_str()));
    let polls: Vec<u32> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TaskFinished { polls, .. } => Some(*polls),
            _ => None,
        })
        .collect();
    assert_eq!(polls, [3]);
    assert_eq!(run.summary.counts.ok, 1);
    assert_eq!(run.summary.aborted, None);
    assert!(!run.summary.interrupted);
}

#[tokio::test(start_paused = true)]
async fn every_action_sends_its_request_and_reaches_its_state() {
    let cases = [
        (
            "on",
            VmState::Off,
            state(PowerState::On, false),
            VmState::On,
        ),
        ("off", VmState::On, HARD_OFF, VmState::Off),
        ("shutdown", VmState::On, SHUTDOWN, VmState::Off),
        (
            "pause",
            VmState::On,
            state(PowerState::Paused, false),
            VmState::Paused,
        ),
        (
            "resume",
            VmState::Paused,
            state(PowerState::On, false),
            VmState::On,
        ),
        ("reset", VmState::On, PowerRequest::Reset, VmState::On),
    ];
    for (action, from, request, to) in cases {
        let fake = FakeCloud::new().with_vm("vm", from.clone());
        let h = harness(fake, &one_step(action, "vm", ""));
        let run = h.run().await;
        let r = run.result("vm");
        assert_eq!(r.outcome, VmOutcome::Ok, "{action}");
        let path = if action == "shutdown" {
            PathTaken::Graceful
        } else {
            PathTaken::Direct
        };
        assert_eq!(r.path, path, "{action}");
        assert_eq!(r.state_before, Some(from), "{action}");
        assert_eq!(r.state_after, Some(to), "{action}");
        assert_eq!(h.fake.mutations("vm"), [request], "{action}");
    }
}

#[tokio::test(start_paused = true)]
async fn deallocate_on_azure_ends_deallocated() {
    let fake = FakeCloud::new().with_azure_vm("az", VmState::On);
    let h = harness(fake, &one_step("deallocate", "az", ""));
    let run = h.run().await;
    let r = run.result("az");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.deallocated_after, Some(true));
    assert_eq!(h.fake.mutations("az"), [HARD_OFF]);
}

#[tokio::test(start_paused = true)]
async fn a_vm_already_in_the_target_state_is_skipped_without_a_mutation() {
    let fake = FakeCloud::new().with_vm("web", VmState::Off);
    let h = harness(fake, &one_step("off", "web", ""));
    let run = h.run().await;
    let r = run.result("web");
    assert_eq!(
        r.outcome,
        VmOutcome::Skipped {
            reason: "already OFF".into()
        }
    );
    assert_eq!(r.path, PathTaken::Skipped);
    assert_eq!(r.state_before, Some(VmState::Off));
    assert_eq!(h.fake.total_mutations(), 0);
    assert_eq!(h.fake.reads("web"), 1);
    assert_eq!(run.summary.counts.skipped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_vm_that_reached_the_target_since_the_plan_is_skipped() {
    let fake = FakeCloud::new().with_vm("web", VmState::On);
    let mut h = harness(fake, &one_step("off", "web", ""));
    // Planned as ON, found OFF at run time.
    h.fake = FakeCloud::new().with_vm("web", VmState::Off);
    let run = h.run().await;
    assert!(matches!(run.outcome("web"), VmOutcome::Skipped { .. }));
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn states_the_api_would_refuse_fail_with_its_code_and_send_nothing() {
    let cases = [
        (
            "pause",
            VmState::Off,
            "VM-4: The virtual machine cannot change",
        ),
        (
            "on",
            VmState::NotAllocated,
            "VM-11: The virtual machine is not in any hypervisor",
        ),
        (
            "reset",
            VmState::Off,
            "VM-26: The allowed power state for resetting",
        ),
    ];
    for (action, from, reason) in cases {
        let fake = FakeCloud::new().with_vm("vm", from);
        let h = harness(fake, &one_step(action, "vm", ""));
        let run = h.run().await;
        assert!(
            run.failure("vm").starts_with(reason),
            "{action}: {}",
            run.failure("vm")
        );
        assert_eq!(run.result("vm").path, PathTaken::Skipped);
        assert_eq!(h.fake.total_mutations(), 0, "{action}");
        assert_eq!(h.fake.reads("vm"), 1, "{action}");
    }
}

#[tokio::test(start_paused = true)]
async fn api_refusals_fail_with_the_code_and_are_not_retried() {
    for (action, code, request) in [
        ("off", "VM-4", HARD_OFF),
        ("reset", "VM-26", PowerRequest::Reset),
    ] {
        let fake = FakeCloud::new().with_vm("vm", VmState::On);
        fake.script("vm", [Reply::refuse(code)]);
        let h = harness(fake, &one_step(action, "vm", ""));
        let run = h.run().await;
        let want = api_error(409, code).to_string();
        assert_eq!(run.failure("vm"), want, "{action}");
        assert_eq!(h.fake.mutations("vm"), [request], "{action}: no retry");
        assert_eq!(h.fake.polls("vm"), 0);
        assert_eq!(run.result("vm").task_href, None);
    }
}

#[tokio::test(start_paused = true)]
async fn vm11_from_the_api_on_a_vm_out_of_the_hypervisor_fails_without_retry() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("VM-11")]);
    // The VM left the hypervisor between the read and the request.
    fake.set_state_at(CallKind::Power, "vm", 1, VmState::NotAllocated);
    let h = harness(fake, &one_step("pause", "vm", ""));
    let run = h.run().await;
    assert!(
        run.failure("vm").starts_with("VM-11: "),
        "{}",
        run.failure("vm")
    );
    assert_eq!(h.fake.mutations("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn deallocate_off_azure_is_refused_without_a_mutation() {
    let fake = FakeCloud::new().with_vm("web", VmState::On);
    let h = harness(fake, &one_step("deallocate", "web", ""));
    let run = h.run().await;
    assert_eq!(
        run.failure("web"),
        "deallocate needs an Azure VM (hypervisor KVM)"
    );
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_lists_its_rolled_back_job_and_refreshes_the_state() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(TaskScript::fails_after_polls(2, "PAUSE"))],
    );
    let h = harness(fake, &one_step("pause", "vm", ""));
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(
        run.failure("vm"),
        "PAUSE task FINISHED_UNSUCCESSFULLY (job PAUSE FAILED, rollback ROLLBACK_DONE)"
    );
    assert_eq!(r.task_state, Some(TaskState::FinishedUnsuccessfully));
    assert_eq!(r.failed_jobs.len(), 1);
    let job = &r.failed_jobs[0];
    assert_eq!((job.vm.as_str(), job.job_type.as_str()), ("vm", "PAUSE"));
    assert_eq!(job.task_type, "PAUSE");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.rollback_state, JobState::RollbackDone);
    // Rolled back to ON, read again after the failure.
    assert_eq!(r.state_after, Some(VmState::On));
    assert_eq!(h.fake.reads("vm"), 2);
    assert_eq!(h.fake.mutations("vm").len(), 1);
    assert_eq!(run.summary.counts.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_outlives_the_timeout_fails_with_its_last_state() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::never())]);
    let h = harness(fake, &one_step("off", "vm", "task_timeout = \"30s\""));
    let run = h.run().await;
    assert_eq!(
        run.failure("vm"),
        "task not finished after 30s (still STARTED)"
    );
    let r = run.result("vm");
    assert_eq!(r.task_state, Some(TaskState::Started));
    assert_eq!(r.state_after, Some(VmState::Locked));
    assert_eq!(h.fake.mutations("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_succeeds_without_reaching_the_state_is_a_failure() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(
            TaskScript::ok_after_polls(1).leaves(VmState::On),
        )],
    );
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert_eq!(run.failure("vm"), "the task succeeded but the VM is ON");
    assert_eq!(run.result("vm").task_state, ok_task());
}

#[tokio::test(start_paused = true)]
async fn a_vm_that_cannot_be_read_fails_and_is_not_acted_on() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.fail_reads("vm", 1, &api_error(403, "GEN-4"));
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert!(
        run.failure("vm").starts_with("forbidden (403): GEN-4"),
        "{}",
        run.failure("vm")
    );
    assert_eq!(h.fake.total_mutations(), 0);
    assert_eq!(run.summary.aborted, None, "403 is not fatal for the run");
}

#[tokio::test(start_paused = true)]
async fn a_fatal_api_error_aborts_the_run() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script(
        "a",
        [Reply::Refuse {
            status: 401,
            code: "GEN-5",
        }],
    );
    let h = harness(fake, &one_step("off", "*", "order = \"sequential\""));
    let run = h.run().await;
    assert!(run.failure("a").contains("authentication refused"));
    assert!(
        matches!(run.outcome("b"), VmOutcome::NotStarted { reason } if reason == "run aborted")
    );
    let aborted = run.summary.aborted.clone().unwrap_or_default();
    assert!(aborted.starts_with("the API refused us"), "{aborted}");
    assert_eq!(h.fake.reads("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn excluded_and_protected_vms_are_settled_without_a_call() {
    let fake = FakeCloud::new()
        .with_vm("web-1", VmState::On)
        .with_vm("web-2", VmState::On);
    let h = harness(
        fake,
        &one_step("off", "web-*", "exclude = [{ vm = \"web-2\" }]"),
    );
    let run = h.run().await;
    assert_eq!(
        run.outcome("web-2"),
        &VmOutcome::Skipped {
            reason: "excluded".into()
        }
    );
    assert_eq!(h.fake.reads("web-2"), 0);
    assert_eq!(run.outcome("web-1"), &VmOutcome::Ok);
}
