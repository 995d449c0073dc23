//! Graceful shutdown with a hard-off fallback: after the graceful task is too slow, after it
//! failed, and when it got there after all.

use super::*;
use crate::abiquo::model::JobState;
use crate::exec::fake::{CallKind, Reply, TaskScript};

/// Shutdown of `vm` with a 30 s fallback and a 5 min task timeout.
fn shutdown_with_fallback() -> String {
    one_step(
        "shutdown",
        "vm",
        "fallback = { action = \"off\", after = \"30s\" }\ntask_timeout = \"5m\"",
    )
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_in_time_needs_no_fallback() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::ok_after(secs(10)))]);
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Graceful);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_task_too_slow_is_followed_by_a_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    // The guest ignores the shutdown, and the API does not hold the lock for it.
    fake.script(
        "vm",
        [
            Reply::Accept(TaskScript::never().unlocked()),
            Reply::Accept(TaskScript::ok_after_polls(2)),
        ],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Forced);
    assert_eq!(r.state_after, Some(VmState::Off));
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN, HARD_OFF]);
    let spans = h.fake.task_spans("vm");
    assert_eq!(
        spans[1].0 - spans[0].0,
        secs(30),
        "hard off at the fallback delay"
    );
    // The hard off's task is the one reported.
    let accepted = run.accepted("vm");
    assert_eq!(accepted.len(), 2);
    assert_eq!(r.task_href.as_deref(), Some(accepted[1].0.as_str()));
    let intents: Vec<PathTaken> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::VmActing { intent, .. } => Some(intent.path),
            _ => None,
        })
        .collect();
    assert_eq!(intents, [PathTaken::Graceful, PathTaken::Forced]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_graceful_task_holding_the_lock_is_followed_to_its_end() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::ok_after(secs(90)))]);
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Graceful);
    assert_eq!(
        h.fake.mutations("vm"),
        [SHUTDOWN],
        "no hard off on a LOCKED VM"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hard_off_refused_as_busy_keeps_following_the_graceful_task() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [
            Reply::Accept(TaskScript::ok_after(secs(60)).unlocked()),
            Reply::refuse("VM-2"),
        ],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Graceful);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN, HARD_OFF]);
    assert_eq!(
        r.task_href.as_deref(),
        Some(run.accepted("vm")[0].0.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_task_that_never_ends_fails_at_the_task_timeout() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::never())]);
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    assert_eq!(
        run.failure("vm"),
        "task not finished after 5m (still STARTED)"
    );
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_graceful_task_is_followed_by_a_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(TaskScript::fails_after_polls(2, "SHUTDOWN"))],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Forced);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN, HARD_OFF]);
    // The graceful task's failure stays on record.
    assert_eq!(r.failed_jobs.len(), 1);
    assert_eq!(r.failed_jobs[0].job_type, "SHUTDOWN");
    assert_eq!(r.failed_jobs[0].rollback_state, JobState::RollbackDone);
    assert_eq!(r.task_state, ok_task());
}

#[tokio::test(start_paused = true)]
async fn a_failed_graceful_and_failed_hard_off_report_both_jobs() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [
            Reply::Accept(TaskScript::fails_after_polls(1, "SHUTDOWN")),
            Reply::Accept(TaskScript::fails_after_polls(1, "POWER_OFF")),
        ],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    assert_eq!(
        run.failure("vm"),
        "POWER_OFF task FINISHED_UNSUCCESSFULLY (job POWER_OFF FAILED, rollback ROLLBACK_DONE)"
    );
    let r = run.result("vm");
    assert_eq!(r.path, PathTaken::Forced);
    let jobs: Vec<&str> = r.failed_jobs.iter().map(|j| j.job_type.as_str()).collect();
    assert_eq!(jobs, ["SHUTDOWN", "POWER_OFF"]);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_task_slow_to_report_but_done_needs_no_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::never().unlocked())]);
    // The guest is off by the time the fallback looks, though the task still runs.
    fake.set_state_at(CallKind::GetVm, "vm", 2, VmState::Off);
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Graceful);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_graceful_task_that_left_the_vm_off_needs_no_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(
            TaskScript::fails_after_polls(1, "SHUTDOWN").leaves(VmState::Off),
        )],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Graceful);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_waits_for_a_lock_left_by_the_failed_graceful_task() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(
            TaskScript::fails_after_polls(1, "SHUTDOWN").leaves(VmState::Locked),
        )],
    );
    // Unlocked (still ON) at the third read.
    fake.set_state_at(CallKind::GetVm, "vm", 3, VmState::On);
    let h = harness(fake, &shutdown_with_fallback());
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(run.result("vm").path, PathTaken::Forced);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN, HARD_OFF]);
}

#[tokio::test(start_paused = true)]
async fn without_a_fallback_a_failed_shutdown_is_a_failure() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(TaskScript::fails_after_polls(1, "SHUTDOWN"))],
    );
    let h = harness(fake, &one_step("shutdown", "vm", ""));
    let run = h.run().await;
    assert!(
        run.failure("vm")
            .starts_with("SHUTDOWN task FINISHED_UNSUCCESSFULLY")
    );
    assert_eq!(run.result("vm").path, PathTaken::Graceful);
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn no_fallback_hard_off_is_sent_after_an_interruption() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(TaskScript::fails_after_polls(2, "SHUTDOWN"))],
    );
    let h = harness(fake, &shutdown_with_fallback());
    let c = h.control.clone();
    h.fake
        .when(CallKind::GetTask, "vm", 1, move || c.interrupt());
    let run = h.run().await;
    assert!(
        matches!(run.outcome("vm"), VmOutcome::Interrupted { reason }
            if reason.contains("fallback hard off was not sent")),
        "{:?}",
        run.outcome("vm")
    );
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}
