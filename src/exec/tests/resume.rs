//! Resume: re-attach to a recorded task, or inspect the VM when only the intent was recorded.

use super::*;
use crate::exec::fake::{Reply, TaskScript};

#[tokio::test(start_paused = true)]
async fn reattach_follows_the_recorded_task_and_sends_nothing() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    let href = h
        .fake
        .start_task("vm", HARD_OFF, TaskScript::ok_after_polls(2));
    h.resume_reattach(
        "vm",
        &href,
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
    );
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.state_before, Some(VmState::On), "from the intent");
    assert_eq!(r.state_after, Some(VmState::Off));
    assert_eq!(r.task_href.as_deref(), Some(href.as_str()));
    assert_eq!(h.fake.total_mutations(), 0);
    assert_eq!(h.fake.polls("vm"), 2);
    assert_eq!(run.accepted("vm"), [(href, true)]);
}

#[tokio::test(start_paused = true)]
async fn reattach_to_a_slow_graceful_task_still_falls_back_to_a_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let toml = one_step(
        "shutdown",
        "vm",
        "fallback = { action = \"off\", after = \"30s\" }",
    );
    let mut h = harness(fake, &toml);
    let href = h
        .fake
        .start_task("vm", SHUTDOWN, TaskScript::never().unlocked());
    h.resume_reattach(
        "vm",
        &href,
        intent(Action::Shutdown, SHUTDOWN, VmState::On, PathTaken::Graceful),
    );
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Forced);
    assert_eq!(
        h.fake.mutations("vm"),
        [HARD_OFF],
        "only the fallback is sent"
    );
}

#[tokio::test(start_paused = true)]
async fn reattach_to_a_failed_task_reports_its_jobs() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("pause", "vm", ""));
    let pause = state(PowerState::Paused, false);
    let href = h
        .fake
        .start_task("vm", pause, TaskScript::fails_after_polls(1, "PAUSE"));
    h.resume_reattach(
        "vm",
        &href,
        intent(Action::Pause, pause, VmState::On, PathTaken::Direct),
    );
    let run = h.run().await;
    assert!(run.failure("vm").contains("rollback ROLLBACK_DONE"));
    assert_eq!(run.result("vm").failed_jobs.len(), 1);
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn inspect_adopts_the_task_the_request_created() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    let href = h
        .fake
        .start_task("vm", HARD_OFF, TaskScript::ok_after_polls(1));
    h.resume_inspect(
        "vm",
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
        Vec::new(),
    );
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(run.result("vm").task_href.as_deref(), Some(href.as_str()));
    assert_eq!(h.fake.total_mutations(), 0);
    assert_eq!(h.fake.task_lists("vm"), 1);
}

#[tokio::test(start_paused = true)]
async fn inspect_finds_the_vm_already_there_and_sends_nothing() {
    let fake = FakeCloud::new().with_vm("vm", VmState::Off);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.resume_inspect(
        "vm",
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
        Vec::new(),
    );
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.state_before, Some(VmState::On), "from the intent");
    assert_eq!(r.path, PathTaken::Direct);
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn inspect_judges_a_forced_intent_as_a_hard_off() {
    let fake = FakeCloud::new().with_vm("vm", VmState::Off);
    let toml = one_step(
        "shutdown",
        "vm",
        "fallback = { action = \"off\", after = \"30s\" }",
    );
    let mut h = harness(fake, &toml);
    h.resume_inspect(
        "vm",
        intent(Action::Shutdown, HARD_OFF, VmState::On, PathTaken::Forced),
        Vec::new(),
    );
    let run = h.run().await;
    let r = run.result("vm");
    assert_eq!(r.outcome, VmOutcome::Ok);
    assert_eq!(r.path, PathTaken::Forced);
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn inspect_sends_once_when_the_request_never_arrived() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.resume_inspect(
        "vm",
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
        Vec::new(),
    );
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
}

#[tokio::test(start_paused = true)]
async fn as_many_unsent_intents_as_slots_are_each_sent_once_without_waiting_on_themselves() {
    // The earlier run recorded an intent for every slot and was killed before sending any:
    // each resumed VM holds a slot while it looks, then sends with that same slot.
    let fake = (0..4).fold(FakeCloud::new(), |f, i| {
        f.with_vm(&format!("vm-{i}"), VmState::On)
    });
    // Every look takes a while, as over a real network: all take their slots first.
    fake.slow_vm_reads(Duration::from_millis(100));
    let mut h = harness(
        fake,
        "name = \"t\"\n[limits]\nconcurrency = 2\n[[step]]\nname = \"s\"\naction = \"off\"\n\
         targets = [{ vm = \"vm-*\" }]\n",
    );
    for vm in ["vm-0", "vm-1"] {
        h.resume_inspect(
            vm,
            intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
            Vec::new(),
        );
    }
    let run = tokio::time::timeout(Duration::from_secs(600), h.run())
        .await
        .expect("the resume finishes");
    assert_eq!(run.summary.counts.ok, 4);
    for i in 0..4 {
        assert_eq!(h.fake.mutations(&format!("vm-{i}")), [HARD_OFF]);
    }
}

#[tokio::test(start_paused = true)]
async fn inspect_does_not_adopt_a_task_the_earlier_run_already_followed() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    // An earlier hard off that ended with the VM back ON.
    let old = h.fake.start_task(
        "vm",
        HARD_OFF,
        TaskScript::ok_after_polls(1).leaves(VmState::On),
    );
    let _ = crate::abiquo::api::CloudApi::get_task(&h.fake, &old).await;
    h.resume_inspect(
        "vm",
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
        vec![old.clone()],
    );
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.mutations("vm"), [HARD_OFF]);
    assert_ne!(run.result("vm").task_href.as_deref(), Some(old.as_str()));
}

#[tokio::test(start_paused = true)]
async fn inspect_of_a_reset_follows_its_task_and_never_resets_again() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    let mut h = harness(fake, &one_step("reset", "vm", ""));
    let href = h
        .fake
        .start_task("vm", PowerRequest::Reset, TaskScript::ok_after_polls(1));
    h.resume_inspect(
        "vm",
        intent(
            Action::Reset,
            PowerRequest::Reset,
            VmState::On,
            PathTaken::Direct,
        ),
        Vec::new(),
    );
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(run.result("vm").task_href.as_deref(), Some(href.as_str()));
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn inspect_waits_for_a_locked_vm_then_looks_for_the_task_again() {
    let fake = FakeCloud::new().with_vm("vm", VmState::On);
    fake.hold("vm", crate::exec::fake::Finish::Polls(3), VmState::Off);
    let mut h = harness(fake, &one_step("off", "vm", ""));
    h.resume_inspect(
        "vm",
        intent(Action::Off, HARD_OFF, VmState::On, PathTaken::Direct),
        Vec::new(),
    );
    let run = h.run().await;
    assert_eq!(run.outcome("vm"), &VmOutcome::Ok);
    assert_eq!(h.fake.task_lists("vm"), 2);
    assert_eq!(h.fake.total_mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_vm_done_earlier_is_replayed_without_a_call() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script("b", [Reply::Accept(TaskScript::default())]);
    let mut h = harness(fake, &one_step("off", "*", ""));
    let first = h.run().await;
    let done = first.result("a").clone();
    h.fake = FakeCloud::new()
        .with_vm("a", VmState::Off)
        .with_vm("b", VmState::On);
    h.resume_done("a", done.clone());
    let run = h.run().await;
    assert_eq!(run.result("a"), &done);
    assert_eq!(h.fake.reads("a"), 0);
    assert_eq!(h.fake.mutations("b"), [HARD_OFF]);
}

#[tokio::test(start_paused = true)]
async fn past_a_failed_gate_a_vm_done_earlier_keeps_its_result() {
    let fleet = || {
        (1..=4).fold(FakeCloud::new(), |f, i| {
            f.with_vm(&format!("vm-{i}"), VmState::On)
        })
    };
    let first = harness(fleet(), &one_step("off", "vm-*", "waves = { size = 2 }"))
        .run()
        .await;
    let done = first.result("vm-3").clone();
    assert_eq!(done.outcome, VmOutcome::Ok);
    // The resumed run finds vm-3 done, but the gate before its wave no longer passes.
    let gated = one_step(
        "off",
        "vm-*",
        "on_failure = \"continue\"\n\
         waves = { size = 2, gate = { command = [\"false\"], timeout = \"1s\", interval = \"200ms\" } }",
    );
    let mut h = harness(fleet(), &gated);
    h.resume_done("vm-3", done.clone());
    let run = h.run().await;
    assert_eq!(run.result("vm-3"), &done);
    assert!(
        matches!(run.outcome("vm-4"), VmOutcome::NotStarted { reason } if reason.contains("gate"))
    );
    assert_eq!(run.outcome("vm-1"), &VmOutcome::Ok);
    assert!(h.fake.mutations("vm-3").is_empty());
}
