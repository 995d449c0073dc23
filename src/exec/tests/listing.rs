//! Acting on the plan's listing: no read while it is fresh, a read and a new decision when
//! the API says the VM moved, and a read whenever the listing is too old or says "skip".

use super::*;
use crate::exec::fake::{CallKind, Reply, TaskScript};

fn kinds(h: &Harness, vm: &str) -> Vec<CallKind> {
    h.fake
        .calls()
        .iter()
        .filter(|c| c.vm == vm)
        .map(|c| c.kind)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_freshly_listed_vm_is_sent_its_request_without_a_read_first() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let h = harness(fake, &one_step("off", "vm", "")).with_listing();
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    let calls = kinds(&h, "vm");
    assert_eq!(calls.first(), Some(&CallKind::Power), "{calls:?}");
    assert_eq!(run.result("vm").state_before, Some(VmState::On));
    assert_eq!(run.result("vm").state_after, Some(VmState::Off));
}

#[tokio::test(start_paused = true)]
async fn a_vm_that_moved_since_the_listing_is_read_and_decided_again() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    // Someone else powered it off after the listing: the API refuses with VM-4.
    fake.set_state_at(CallKind::Power, "vm", 1, VmState::Off);
    let h = harness(fake, &one_step("off", "vm", "")).with_listing();
    let run = h.run().await;
    assert!(
        matches!(run.outcome("vm"), VmOutcome::Skipped { .. }),
        "{:?}",
        run.outcome("vm")
    );
    assert_eq!(h.fake.mutations("vm").len(), 1, "refused once, not resent");
    assert_eq!(run.result("vm").state_after, Some(VmState::Off));
}

#[tokio::test(start_paused = true)]
async fn a_reset_refused_because_the_vm_went_off_fails_with_the_reason_read() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.set_state_at(CallKind::Power, "vm", 1, VmState::Off);
    let h = harness(fake, &one_step("reset", "vm", "")).with_listing();
    let run = h.run().await;
    assert!(run.failure("vm").contains("VM-26"), "{}", run.failure("vm"));
    assert_eq!(h.fake.mutations("vm"), [PowerRequest::Reset], "not resent");
    assert_eq!(run.result("vm").state_after, Some(VmState::Off));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_from_a_state_that_did_not_move_is_final() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script("vm", [Reply::refuse("VM-4")]);
    let h = harness(fake, &one_step("off", "vm", "")).with_listing();
    let run = h.run().await;
    assert!(
        run.failure("vm").starts_with("VM-4"),
        "{}",
        run.failure("vm")
    );
    assert_eq!(h.fake.mutations("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_listing_older_than_state_max_age_is_read_again_before_acting() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let h = harness(fake, &one_step("off", "vm", "")).with_listing();
    tokio::time::advance(h.options.state_max_age + Duration::from_secs(1)).await;
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(kinds(&h, "vm").first(), Some(&CallKind::GetVm));
}

#[tokio::test(start_paused = true)]
async fn state_max_age_zero_reads_every_vm_before_acting() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", "")).with_listing();
    h.options.state_max_age = Duration::ZERO;
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(kinds(&h, "vm").first(), Some(&CallKind::GetVm));
}

#[tokio::test(start_paused = true)]
async fn a_vm_the_listing_says_needs_nothing_is_read_before_it_is_skipped() {
    let fake = FakeCloud::new().with_vm("vm", VmState::Off);
    // Powered on after the listing: the read sees it and the step acts after all.
    fake.set_state_at(CallKind::GetVm, "vm", 1, VmState::On);
    let h = harness(fake, &one_step("off", "vm", "")).with_listing();
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_first_step_on_a_vm_acts_on_its_listed_state() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.script(
        "vm",
        [
            Reply::Accept(TaskScript::ok_after_polls(1)),
            Reply::Accept(TaskScript::ok_after_polls(1)),
        ],
    );
    let toml = "name = \"t\"\n[[step]]\nname = \"down\"\naction = \"off\"\n\
                targets = [{ vm = \"vm\" }]\n[[step]]\nname = \"up\"\naction = \"on\"\n\
                targets = [{ vm = \"vm\" }]\n";
    let h = harness(fake, toml).with_listing();
    let run = h.run().await;
    assert!(run.results().iter().all(|r| r.outcome == VmOutcome::Ok));
    let calls = kinds(&h, "vm");
    let second_power = calls
        .iter()
        .enumerate()
        .filter(|(_, k)| **k == CallKind::Power)
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(calls[second_power - 1], CallKind::GetVm, "{calls:?}");
}

fn fleet(n: usize, state: VmState) -> FakeCloud {
    (0..n).fold(FakeCloud::new(), |f, i| {
        f.with_vm(&format!("vm-{i}"), state.clone())
    })
}

#[tokio::test(start_paused = true)]
async fn a_wave_is_confirmed_by_one_listing_instead_of_a_read_per_vm() {
    let mut h = harness(fleet(8, VmState::On), &one_step("off", "vm-*", "")).with_listing();
    // The tasks' ends seen by polls alone, not by the watch's looks.
    h.options.watch = false;
    let run = h.run().await;
    assert!(run.results().iter().all(|r| r.outcome == VmOutcome::Ok));
    assert!(
        run.results()
            .iter()
            .all(|r| r.state_after == Some(VmState::Off))
    );
    let calls = h.fake.calls();
    assert_eq!(
        calls.iter().filter(|c| c.kind == CallKind::GetVm).count(),
        0,
        "no read before or after"
    );
    // The one page of the listing the VMs stood on, not the whole listing.
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.kind == CallKind::ListPage)
            .count(),
        1
    );
    assert_eq!(
        calls.iter().filter(|c| c.kind == CallKind::ListVms).count(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_vm_the_confirming_listing_shows_elsewhere_fails_as_a_read_would_say() {
    let fake = fleet(8, VmState::On);
    fake.script(
        "vm-3",
        [Reply::Accept(
            TaskScript::ok_after_polls(1).leaves(VmState::On),
        )],
    );
    let h = harness(fake, &one_step("off", "vm-*", "")).with_listing();
    let run = h.run().await;
    assert_eq!(
        run.failure("vm-3"),
        "the task succeeded but the VM is ON",
        "{:?}",
        run.result("vm-3")
    );
    assert_eq!(run.result("vm-3").state_after, Some(VmState::On));
    assert_eq!(run.summary.counts.ok, 7);
}
