//! LOCKED VMs and busy answers: bounded waits, then a decision on the state found.

use super::*;
use crate::exec::fake::{CallKind, Finish, Reply, api_error};

#[tokio::test(start_paused = true)]
async fn a_vm_locked_at_first_read_is_waited_for_then_acted_on() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.hold("vm", Finish::After(secs(20)), VmState::On);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(
        r.state_before,
        Some(VmState::On),
        "the state found after the wait"
    );
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
    assert!(h.fake.reads("vm") > 2, "read again while LOCKED");
    // Nothing was sent while the VM was LOCKED.
    let first_power = h.fake.task_spans("vm")[0].0;
    let first_read = h.fake.calls()[0].at;
    assert!(first_power - first_read >= secs(20));
}

#[tokio::test(start_paused = true)]
async fn a_lock_that_leaves_the_vm_in_the_target_state_means_a_skip() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.hold("vm", Finish::Polls(3), VmState::Off);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Skipped {
            reason: "already OFF".into()
        }
    );
    assert_eq!(h.fake.reads("vm"), 3);
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_vm_locked_forever_fails_after_the_lock_wait() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.hold("vm", Finish::Never, VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.options.lock_wait = secs(45);
    let run = h.run().await;
    assert_eq!(
        run.failure("vm"),
        "still LOCKED after 45s: another operation is running on the VM"
    );
    assert_eq!(h.fake.total_mutations(), 0);
    let reads = h.fake.calls();
    let span = reads[reads.len() - 1].at - reads[0].at;
    assert_eq!(span, secs(45), "the last read is right at the bound");
}

#[tokio::test(start_paused = true)]
async fn a_busy_answer_waits_for_the_lock_and_sends_again() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("VM-2")]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF, HARD_OFF]);
    // Every attempt is recorded as an intent before it is sent.
    let intents = run.count(|e| matches!(e, Event::VmActing { .. }));
    assert_eq!(intents, 2);
}

#[tokio::test(start_paused = true)]
async fn busy_answers_are_retried_a_bounded_number_of_times() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", std::iter::repeat_n(Reply::refuse("VM-2"), 5));
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert_eq!(run.failure("vm"), api_error(409, "VM-2").to_string());
    assert_eq!(h.fake.mutations("vm").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn vm11_on_a_vm_still_in_the_hypervisor_counts_as_busy() {
    // Abiquo 2.0 answers VM-11 for a LOCKED VM: re-read, and send again while it reads ON.
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", std::iter::repeat_n(Reply::refuse("VM-11"), 5));
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert!(run.failure("vm").starts_with("VM-11: "));
    assert_eq!(h.fake.mutations("vm").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_busy_vm_found_in_the_target_state_is_skipped() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("ASYNC-TASK-2")]);
    // Another operation turned it off meanwhile.
    fake.set_state_at(CallKind::GetVm, "vm", 2, VmState::Off);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert_eq!(
        run.outcome("vm"),
        &VmOutcome::Skipped {
            reason: "already OFF".into()
        }
    );
    assert_eq!(run.result("vm").path, PathTaken::Skipped);
    assert_eq!(h.fake.mutations("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_busy_vm_that_stays_locked_fails_after_the_lock_wait() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("VM-2")]);
    fake.set_state_at(CallKind::GetVm, "vm", 2, VmState::Locked);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.options.lock_wait = secs(30);
    let run = h.run().await;
    assert!(run.failure("vm").starts_with("still LOCKED after 30s"));
    assert_eq!(h.fake.mutations("vm").len(), 1);
}
