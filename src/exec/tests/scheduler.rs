//! The scheduler: concurrency limits, `after` ordering, waves, failure thresholds and the
//! deadline.

use super::*;
use crate::exec::fake::{CallKind, Reply, TaskScript};

/// A fake with `n` VMs `{prefix}-{i}`, all `state`, whose tasks take `took`.
fn vms(fake: FakeCloud, prefix: &str, n: usize, state: VmState) -> FakeCloud {
    (1..=n).fold(fake, |f, i| {
        f.with_vm(&format!("{prefix}-{i}"), state.clone())
    })
}

/// `toml` with a `[limits]` table.
fn limited(limits: &str, toml: String) -> String {
    toml.replacen("[[step]]", &format!("[limits]\n{limits}\n[[step]]"), 1)
}

fn sequential(action: &str, vm: &str) -> String {
    one_step(action, vm, "order = \"sequential\"")
}

fn slow_tasks(fake: &FakeCloud, prefix: &str, n: usize, took: Duration) {
    for i in 1..=n {
        fake.script(
            &format!("{prefix}-{i}"),
            [Reply::Accept(TaskScript::ok_after(took))],
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_run_wide_concurrency_is_never_exceeded() {
    let fake = vms(FakeCloud::new(), "vm", 7, VmState::On);
    slow_tasks(&fake, "vm", 7, secs(10));
    let h = harness(
        fake,
        &limited("concurrency = 2", one_step("off", "vm-*", "")),
    );
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 7);
    assert_eq!(h.fake.max_in_flight(|_| true), 2);
}

#[tokio::test(start_paused = true)]
async fn step_limits_hold_within_the_run_wide_limit() {
    let fake = vms(FakeCloud::new(), "a", 6, VmState::On);
    let fake = vms(fake, "b", 6, VmState::On);
    slow_tasks(&fake, "a", 6, secs(10));
    slow_tasks(&fake, "b", 6, secs(7));
    let toml = r#"
name = "t"
[limits]
concurrency = 4
[[step]]
name = "a"
action = "off"
targets = [{ vm = "a-*" }]
concurrency = 2
[[step]]
name = "b"
after = []
action = "off"
targets = [{ vm = "b-*" }]
concurrency = 3
"#;
    let h = harness(fake, toml);
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 12);
    assert!(h.fake.max_in_flight(|v| v.starts_with("a-")) <= 2);
    assert!(h.fake.max_in_flight(|v| v.starts_with("b-")) <= 3);
    assert_eq!(h.fake.max_in_flight(|_| true), 4, "both steps side by side");
}

#[tokio::test(start_paused = true)]
async fn a_sequential_step_runs_one_vm_at_a_time_in_order() {
    let fake = vms(FakeCloud::new(), "vm", 3, VmState::On);
    slow_tasks(&fake, "vm", 3, secs(5));
    let h = harness(fake, &one_step("off", "vm-*", "order = \"sequential\""));
    h.run().await;
    assert_eq!(h.fake.max_in_flight(|_| true), 1);
    let order: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.kind == CallKind::Power)
        .map(|c| c.vm)
        .collect();
    assert_eq!(order, ["vm-1", "vm-2", "vm-3"]);
}

#[tokio::test(start_paused = true)]
async fn a_step_starts_only_after_the_steps_it_comes_after() {
    let fake = vms(FakeCloud::new(), "a", 3, VmState::On);
    let fake = vms(fake, "b", 3, VmState::Off);
    slow_tasks(&fake, "a", 3, secs(10));
    let toml = r#"
name = "t"
[[step]]
name = "down"
action = "off"
targets = [{ vm = "a-*" }]
[[step]]
name = "up"
action = "on"
targets = [{ vm = "b-*" }]
"#;
    let h = harness(fake, toml);
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 6);
    let calls = h.fake.calls();
    let last_a = calls.iter().rposition(|c| c.vm.starts_with("a-"));
    let first_b = calls.iter().position(|c| c.vm.starts_with("b-"));
    assert!(last_a < first_b, "{calls:?}");
    let finished = run
        .events
        .iter()
        .position(|e| matches!(e, Event::StepFinished { step: 0, .. }));
    let started = run
        .events
        .iter()
        .position(|e| matches!(e, Event::StepStarted { step: 1, .. }));
    assert!(finished < started);
}

#[tokio::test(start_paused = true)]
async fn waves_run_one_after_the_other_with_the_pause_between() {
    let fake = vms(FakeCloud::new(), "vm", 4, VmState::On);
    slow_tasks(&fake, "vm", 4, secs(5));
    let h = harness(
        fake,
        &one_step("off", "vm-*", "waves = { size = 2, pause = \"1m\" }"),
    );
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 4);
    let span = |vm: &str| h.fake.task_spans(vm)[0];
    let wave1_end = [span("vm-1").1, span("vm-2").1].into_iter().flatten().max();
    let wave2_start = span("vm-3").0.min(span("vm-4").0);
    assert!(wave1_end.is_some_and(|e| wave2_start - e >= secs(60)));
    assert_eq!(run.count(|e| matches!(e, Event::WaveStarted { .. })), 2);
}

#[tokio::test(start_paused = true)]
async fn crossing_a_step_threshold_stops_launching() {
    let fake = vms(FakeCloud::new(), "vm", 3, VmState::On);
    fake.script("vm-1", [Reply::refuse("VM-4")]);
    let h = harness(
        fake,
        &one_step("off", "vm-*", "order = \"sequential\"\nmax_failures = 0"),
    );
    let run = h.run().await;
    assert!(run.failure("vm-1").starts_with("VM-4"));
    for vm in ["vm-2", "vm-3"] {
        assert!(
            matches!(run.outcome(vm), VmOutcome::NotStarted { reason } if reason == "run aborted")
        );
        assert_eq!(h.fake.reads(vm), 0);
    }
    let aborted = run.summary.aborted.clone().unwrap_or_default();
    assert!(
        aborted.contains("1 failures exceed max_failures = 0"),
        "{aborted}"
    );
    assert_eq!(run.count(|e| matches!(e, Event::RunAborted { .. })), 1);
    assert!(!run.summary.interrupted);
}

#[tokio::test(start_paused = true)]
async fn on_failure_continue_keeps_going_past_the_threshold() {
    let fake = vms(FakeCloud::new(), "vm", 3, VmState::On);
    fake.script("vm-1", [Reply::refuse("VM-4")]);
    let h = harness(
        fake,
        &one_step(
            "off",
            "vm-*",
            "order = \"sequential\"\nmax_failures = 0\non_failure = \"continue\"",
        ),
    );
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 2);
    assert_eq!(run.summary.aborted, None);
}

#[tokio::test(start_paused = true)]
async fn crossing_the_run_wide_threshold_stops_launching() {
    let fake = vms(FakeCloud::new(), "vm", 4, VmState::On);
    fake.script("vm-1", [Reply::refuse("VM-4")]);
    fake.script("vm-2", [Reply::refuse("VM-4")]);
    let toml = limited("max_failures = 1", sequential("off", "vm-*"));
    let h = harness(fake, &toml);
    let run = h.run().await;
    assert_eq!(run.summary.counts.failed, 2);
    assert_eq!(run.summary.counts.not_started, 2);
    let aborted = run.summary.aborted.clone().unwrap_or_default();
    assert!(aborted.contains("limits.max_failures = 1"), "{aborted}");
    assert_eq!(h.fake.total_mutations(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_launching_and_lets_the_vm_in_flight_finish() {
    let fake = vms(FakeCloud::new(), "vm", 3, VmState::On);
    slow_tasks(&fake, "vm", 3, secs(20));
    let toml = limited("deadline = \"30s\"", sequential("off", "vm-*"));
    let h = harness(fake, &toml);
    let run = h.run().await;
    assert_eq!(run.outcome("vm-1"), &VmOutcome::Ok);
    assert_eq!(
        run.outcome("vm-2"),
        &VmOutcome::Ok,
        "in flight at the deadline"
    );
    assert!(
        matches!(run.outcome("vm-3"), VmOutcome::NotStarted { reason } if reason == "run aborted")
    );
    assert!(h.fake.mutations("vm-3").is_empty());
    let aborted = run.summary.aborted.clone().unwrap_or_default();
    assert_eq!(aborted, "the run's deadline of 30s was reached");
}

/// The run-wide slot is held only while a task is in flight: the next VM is read and decided
/// while the first one's task runs, so it is sent the instant the slot frees.
#[tokio::test(start_paused = true)]
async fn the_next_vm_is_read_while_the_slot_is_busy_and_sent_when_it_frees() {
    let fake = FakeCloud::new()
        .with_vm("a", VmState::On)
        .with_vm("b", VmState::On);
    fake.script("a", [Reply::Accept(TaskScript::ok_after(secs(1)))]);
    fake.script("b", [Reply::Accept(TaskScript::ok_after(secs(1)))]);
    let toml =
        one_step("off", "*", "").replacen("[[step]]", "[limits]\nconcurrency = 1\n[[step]]", 1);
    let h = harness(fake, &toml);
    let run = h.run().await;
    assert_eq!(run.outcome("a"), &VmOutcome::Ok);
    assert_eq!(run.outcome("b"), &VmOutcome::Ok);
    let (a, b) = (h.fake.task_spans("a"), h.fake.task_spans("b"));
    let a_end = a[0].1.unwrap();
    assert!(b[0].0 >= a_end, "one task at a time");
    let first_read_of_b = h
        .fake
        .calls()
        .iter()
        .find(|c| c.vm == "b" && matches!(c.kind, CallKind::GetVm))
        .map(|c| c.at)
        .unwrap();
    assert!(first_read_of_b < a_end, "b was read while a's task ran");
    assert_eq!(h.fake.max_in_flight(|_| true), 1);
}
