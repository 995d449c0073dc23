//! Ctrl-C (`interrupt`: stop launching, drain) and `kill` (stop following) in every phase of
//! a VM.

use super::*;
use crate::exec::fake::{CallKind, Finish, Reply, TaskScript};

fn not_started(reason: &str) -> VmOutcome {
    VmOutcome::NotStarted {
        reason: reason.into(),
    }
}

#[tokio::test(start_paused = true)]
async fn interrupted_before_the_first_read_nothing_starts() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    let h = harness(fake, &one_step("off", "*", ""));
    h.control.interrupt();
    let run = h.run().await;
    assert_eq!(run.outcome("a"), &not_started("interrupted"));
    assert_eq!(run.outcome("b"), &not_started("interrupted"));
    assert!(h.fake.calls().is_empty());
    assert!(run.summary.interrupted);
    assert_eq!(run.summary.counts.not_started, 2);
}

#[tokio::test(start_paused = true)]
async fn interrupted_during_the_first_read_nothing_is_sent() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake.when(CallKind::GetVm, "vm", 1, move || c.interrupt());
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, not_started("interrupted"));
    assert_eq!(r.state_before, Some(VmState::On));
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn interrupted_while_waiting_for_a_lock_nothing_is_sent() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.hold("vm", Finish::Never, VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.options.lock_wait = secs(600);
    let c = h.control.clone();
    h.fake.when(CallKind::GetVm, "vm", 2, move || c.interrupt());
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &not_started("interrupted"));
    assert_eq!(h.fake.total_mutations(), 0);
    // The wait ended with the drain (10 s), long before the lock wait.
    let calls = h.fake.calls();
    assert!(calls[calls.len() - 1].at - calls[1].at <= secs(10));
    assert_eq!(run.count(|e| matches!(e, Event::RunInterrupted { .. })), 1);
}

#[tokio::test(start_paused = true)]
async fn interrupted_while_sending_the_outcome_is_unknown() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Slow(
            secs(120),
            Box::new(Reply::Accept(TaskScript::default())),
        )],
    );
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake.when(CallKind::Power, "vm", 1, move || c.interrupt());
    let run = h.run().await;
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Interrupted {
            reason: "while sending PUT state OFF; its outcome is unknown".into()
        }
    );
    assert_eq!(h.fake.mutations("vm").len(), 1);
    assert_eq!(run.summary.counts.interrupted, 1);
}

#[tokio::test(start_paused = true)]
async fn interrupted_while_polling_names_the_task_still_running() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::never())]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake
        .when(CallKind::GetTask, "vm", 1, move || c.interrupt());
    let run = h.run().await;
    let href = run.accepted("vm")[0].0.clone();
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Interrupted {
            reason: format!("task still STARTED ({href})")
        }
    );
    assert_eq!(run.result("vm").task_href.as_deref(), Some(href.as_str()));
    assert!(run.summary.interrupted);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_during_the_drain_is_reported_and_the_rest_not_started() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script("a", [Reply::Accept(TaskScript::ok_after(secs(5)))]);
    let h = harness(fake, &one_step("off", "*", "order = \"sequential\""));
    let c = h.control.clone();
    h.fake
        .when(CallKind::GetTask, "a", 1, move || c.interrupt());
    let run = h.run().await;
    assert_eq!(run.outcome("a"), &VmOutcome::Ok);
    assert_eq!(run.outcome("b"), &not_started("interrupted"));
    // Read ahead, to be ready when a slot frees, but never sent anything.
    assert!(h.fake.mutations("b").is_empty());
    assert!(run.summary.interrupted);
    assert_eq!(
        (run.summary.counts.ok, run.summary.counts.not_started),
        (1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_vm_waiting_for_a_run_wide_slot_is_not_started() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script("a", [Reply::Accept(TaskScript::ok_after(secs(5)))]);
    let toml =
        one_step("off", "*", "").replacen("[[step]]", "[limits]\nconcurrency = 1\n[[step]]", 1);
    let h = harness(fake, &toml);
    let c = h.control.clone();
    h.fake
        .when(CallKind::GetTask, "a", 1, move || c.interrupt());
    let run = h.run().await;
    assert_eq!(run.outcome("a"), &VmOutcome::Ok);
    assert_eq!(run.outcome("b"), &not_started("interrupted"));
    // Read ahead, to be ready when a slot frees, but never sent anything.
    assert!(h.fake.mutations("b").is_empty());
}

#[tokio::test(start_paused = true)]
async fn kill_stops_following_at_once() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::Accept(TaskScript::never())]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake.when(CallKind::GetTask, "vm", 1, move || c.kill());
    let run = h.run().await;
    assert!(
        matches!(run.outcome("vm"), VmOutcome::Interrupted { reason }
            if reason.starts_with("task still STARTED"))
    );
    assert_eq!(h.fake.polls("vm"), 1);
}

#[tokio::test(start_paused = true)]
async fn kill_while_confirming_the_state_is_an_interruption() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    // The task succeeds but the VM stays LOCKED for a while.
    fake.script(
        "vm",
        [Reply::Accept(
            TaskScript::ok_after_polls(1).leaves(VmState::Locked),
        )],
    );
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake.when(CallKind::GetVm, "vm", 2, move || c.kill());
    let run = h.run().await;
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Interrupted {
            reason: "while confirming the VM's state".into()
        }
    );
    assert_eq!(run.result("vm").task_state, ok_task());
}

#[tokio::test(start_paused = true)]
async fn kill_before_the_fallback_hard_off_sends_no_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [Reply::Accept(
            TaskScript::fails_after_polls(1, "SHUTDOWN").leaves(VmState::Locked),
        )],
    );
    let toml = one_step(
        "shutdown",
        "vm",
        "fallback = { action = \"off\", after = \"30s\" }",
    );
    let h = harness(fake, &toml);
    let c = h.control.clone();
    h.fake.when(CallKind::GetVm, "vm", 2, move || c.kill());
    let run = h.run().await;
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Interrupted {
            reason: "before the fallback hard off".into()
        }
    );
    assert_eq!(h.fake.mutations("vm"), [SHUTDOWN]);
}

#[tokio::test(start_paused = true)]
async fn a_busy_retry_is_not_sent_after_ctrl_c() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("VM-2")]);
    // Another operation holds the VM for a few reads, then leaves it ON.
    fake.set_state_at(CallKind::GetVm, "vm", 2, VmState::Locked);
    fake.set_state_at(CallKind::GetVm, "vm", 4, VmState::On);
    let h = harness(fake, &one_step("off", "vm", ""));
    let c = h.control.clone();
    h.fake.when(CallKind::GetVm, "vm", 2, move || c.interrupt());
    let run = h.run().await;
    assert_eq!(h.fake.mutations("vm").len(), 1, "nothing new after Ctrl-C");
    assert!(!matches!(run.outcome("vm"), VmOutcome::Ok));
    assert_eq!(run.outcome("vm"), &not_started("interrupted"));
}

#[tokio::test(start_paused = true)]
async fn a_busy_retry_is_not_sent_after_a_threshold_abort() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script("a", [Reply::refuse("VM-2")]);
    // While another operation holds `a`, `b` fails and crosses `max_failures = 0`.
    fake.set_state_at(CallKind::GetVm, "a", 2, VmState::Locked);
    fake.set_state_at(CallKind::GetVm, "a", 4, VmState::On);
    fake.script("b", [Reply::refuse("VM-4")]);
    let h = harness(fake, &one_step("off", "*", "max_failures = 0"));
    let run = h.run().await;
    assert!(run.failure("b").starts_with("VM-4"));
    assert_eq!(
        h.fake.mutations("a").len(),
        1,
        "nothing new after the abort"
    );
    assert_eq!(run.outcome("a"), &not_started("run aborted"));
    assert!(run.summary.aborted.is_some());
}
