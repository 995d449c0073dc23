//! Lost answers: what the client reconciled is followed, what it could not is never resent.

use super::*;
use crate::exec::fake::{Reply, TaskScript};

#[tokio::test(start_paused = true)]
async fn an_adopted_task_is_followed_with_exactly_one_mutation() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::LostAdopted(TaskScript::ok_after_polls(2))]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.task_state, ok_task());
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
    assert_eq!(h.fake.polls("vm"), 2);
    let accepted = run.accepted("vm");
    assert_eq!(accepted.len(), 1);
    assert!(accepted[0].1, "marked adopted");
    assert_eq!(r.task_href.as_deref(), Some(accepted[0].0.as_str()));
}

#[tokio::test(start_paused = true)]
async fn an_answer_lost_on_a_vm_already_there_is_a_success_without_a_task() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::LostAlreadyDone]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.state_after, Some(VmState::Off));
    assert_eq!(r.task_href, None);
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
    assert_eq!(h.fake.polls("vm"), 0);
    assert!(run.accepted("vm").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unreconciled_loss_fails_the_vm_and_is_not_resent() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::LostTransport(Some(TaskScript::default()))]);
    let h = harness(fake, &one_step("off", "vm", ""));
    let run = h.run().await;
    assert!(
        run.failure("vm").starts_with("cannot reach the API"),
        "{}",
        run.failure("vm")
    );
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
}

#[tokio::test(start_paused = true)]
async fn a_reset_whose_answer_is_lost_is_never_sent_twice() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    // The API processed it; the client could not tell.
    fake.script("vm", [Reply::LostTransport(Some(TaskScript::default()))]);
    let h = harness(fake, &one_step("reset", "vm", ""));
    let run = h.run().await;
    assert!(run.failure("vm").starts_with("cannot reach the API"));
    assert_eq!(h.fake.mutations("vm"), [PowerRequest::Reset]);
    assert_eq!(
        h.fake.state("vm"),
        VmState::Locked,
        "the reset runs in the cloud"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reset_whose_answer_is_lost_but_adopted_is_followed_once() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::LostAdopted(TaskScript::ok_after_polls(1))]);
    let h = harness(fake, &one_step("reset", "vm", ""));
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm"), [PowerRequest::Reset]);
    assert_eq!(run.accepted("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_is_waited_for() {
    let fake = FakeCloud::new().with_vm("vm", VmState::Off);
    fake.script(
        "vm",
        [Reply::Slow(
            secs(40),
            Box::new(Reply::Accept(TaskScript::default())),
        )],
    );
    let h = harness(fake, &one_step("on", "vm", ""));
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm").len(), 1);
}
