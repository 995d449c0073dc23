//! Gates on `after` edges: checked once their own step is done, before the gated step
//! starts; a failed one fails the gated step as its own gate would.

use super::*;
use crate::exec::fake::{Reply, TaskScript};
use crate::exec::gate::{Approval, Approver};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Answers `approve` gates at once (approving all but the messages in `refuses`) and notes
/// which it was asked, and when.
struct Operator {
    refuses: Vec<&'static str>,
    asked: Mutex<Vec<(String, Instant)>>,
}

impl Operator {
    fn refusing(refuses: &[&'static str]) -> Arc<Operator> {
        Arc::new(Operator {
            refuses: refuses.to_vec(),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<(String, Instant)> {
        self.asked.lock().unwrap().clone()
    }

    fn messages(&self) -> Vec<String> {
        self.asked().into_iter().map(|(m, _)| m).collect()
    }
}

impl Approver for Operator {
    fn approve(&self, message: String) -> BoxFuture<'static, Result<String, String>> {
        let refused = self.refuses.contains(&message.as_str());
        self.asked.lock().unwrap().push((message, Instant::now()));
        Box::pin(async move {
            if refused {
                Err("refused".into())
            } else {
                Ok("approved".into())
            }
        })
    }
}

fn fleet(names: &[&str]) -> FakeCloud {
    names
        .iter()
        .fold(FakeCloud::new(), |f, name| f.with_vm(name, VmState::Off))
}

fn gates(run: &Run) -> Vec<&crate::exec::event::GateResult> {
    run.events
        .iter()
        .filter_map(|e| match e {
            Event::GateChecked(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// Where the first event matching `pred` is in the run's events.
fn position(run: &Run, pred: impl Fn(&Event) -> bool) -> usize {
    run.events.iter().position(pred).expect("no such event")
}

/// `app` waits for `db` (behind a gate) and `slow`, which runs much longer than `db`.
const DB_THEN_APP: &str = r#"
name = "t"
[[step]]
name = "db"
action = "on"
targets = [{ vm = "db-1" }]
[[step]]
name = "slow"
after = []
action = "on"
targets = [{ vm = "slow-1" }]
[[step]]
name = "app"
action = "on"
targets = [{ vm = "app-1" }]
after = [{ step = "db", gate = { approve = "db up?" } }, "slow"]
gate = { approve = "all up?" }
"#;

#[tokio::test(start_paused = true)]
async fn an_edge_gate_is_checked_once_its_step_is_done_while_the_others_still_run() {
    let fake = fleet(&["db-1", "slow-1", "app-1"]);
    fake.script("db-1", [Reply::Accept(TaskScript::ok_after(secs(5)))]);
    fake.script("slow-1", [Reply::Accept(TaskScript::ok_after(secs(60)))]);
    let mut h = harness(fake, DB_THEN_APP);
    let operator = Operator::refusing(&[]);
    h.approval = Some(Approval(operator.clone()));
    let start = Instant::now();
    let run = h.run().await;
    assert_eq!(run.summary.counts.ok, 3);
    let asked = operator.asked();
    let messages: Vec<&str> = asked.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(messages, ["db up?", "all up?"]);
    // The edge gate right after db, long before slow is done; the step's own gate after.
    assert!(asked[0].1 - start < secs(30), "{:?}", asked[0].1 - start);
    assert!(asked[1].1 - start >= secs(60), "{:?}", asked[1].1 - start);
    let slow_done = h.fake.task_spans("slow-1")[0].1.expect("slow finished");
    assert!(h.fake.task_spans("app-1")[0].0 >= slow_done);
    let checked = gates(&run);
    assert_eq!(
        checked
            .iter()
            .map(|g| (g.step, g.after, g.passed))
            .collect::<Vec<_>>(),
        [(2, Some(0), true), (2, None, true)]
    );
    let edge_checked = position(
        &run,
        |e| matches!(e, Event::GateChecked(g) if g.after.is_some()),
    );
    let slow_finished = position(&run, |e| matches!(e, Event::StepFinished { step: 1, .. }));
    assert!(edge_checked < slow_finished);
}

#[tokio::test(start_paused = true)]
async fn a_failed_edge_gate_fails_the_gated_step_and_with_abort_stops_the_run() {
    let toml = r#"
name = "t"
[[step]]
name = "db"
action = "on"
targets = [{ vm = "db-1" }]
[[step]]
name = "app"
action = "on"
targets = [{ vm = "app-1" }]
after = [{ step = "db", gate = { approve = "db up?" } }]
[[step]]
name = "web"
action = "on"
targets = [{ vm = "web-1" }]
"#;
    let mut h = harness(fleet(&["db-1", "app-1", "web-1"]), toml);
    h.approval = Some(Approval(Operator::refusing(&["db up?"])));
    let run = h.run().await;
    assert_eq!(run.outcome("db-1"), &VmOutcome::Ok);
    assert!(
        matches!(run.outcome("app-1"), VmOutcome::NotStarted { reason } if reason.contains("gate")),
        "{:?}",
        run.outcome("app-1")
    );
    assert!(matches!(run.outcome("web-1"), VmOutcome::NotStarted { .. }));
    assert!(h.fake.mutations("app-1").is_empty() && h.fake.mutations("web-1").is_empty());
    let aborted = run.summary.aborted.as_deref().unwrap_or_default();
    assert_eq!(
        aborted,
        "step 'app': gate approve \"db up?\" (after 'db') failed: refused"
    );
    let checked = gates(&run);
    assert_eq!(checked.len(), 1);
    assert_eq!((checked[0].after, checked[0].passed), (Some(0), false));
}

#[tokio::test(start_paused = true)]
async fn past_a_failed_edge_gate_no_other_gate_is_asked_yet_every_step_is_waited_for() {
    let toml = r#"
name = "t"
[[step]]
name = "db"
action = "on"
targets = [{ vm = "db-1" }]
[[step]]
name = "slow"
after = []
action = "on"
targets = [{ vm = "slow-1" }]
[[step]]
name = "app"
action = "on"
on_failure = "continue"
targets = [{ vm = "app-1" }]
after = [{ step = "db", gate = { approve = "db up?" } }, { step = "slow", gate = { approve = "slow ok?" } }]
gate = { approve = "all up?" }
[[step]]
name = "web"
action = "on"
targets = [{ vm = "web-1" }]
"#;
    let fake = fleet(&["db-1", "slow-1", "app-1", "web-1"]);
    fake.script("slow-1", [Reply::Accept(TaskScript::ok_after(secs(60)))]);
    let mut h = harness(fake, toml);
    let operator = Operator::refusing(&["db up?"]);
    h.approval = Some(Approval(operator.clone()));
    let run = h.run().await;
    assert_eq!(operator.messages(), ["db up?"]);
    assert!(matches!(run.outcome("app-1"), VmOutcome::NotStarted { .. }));
    assert!(run.summary.aborted.is_none(), "{:?}", run.summary.aborted);
    // The step after the gated one still starts only once slow (and so app) is done.
    assert_eq!(run.outcome("web-1"), &VmOutcome::Ok);
    let slow_done = h.fake.task_spans("slow-1")[0].1.expect("slow finished");
    assert!(h.fake.task_spans("web-1")[0].0 >= slow_done);
}

#[tokio::test(start_paused = true)]
async fn resume_checks_no_edge_gate_of_a_step_an_earlier_run_finished() {
    let toml = r#"
name = "t"
[[step]]
name = "db"
action = "on"
targets = [{ vm = "db-1" }]
[[step]]
name = "app"
action = "on"
targets = [{ vm = "app-1" }, { vm = "app-2" }]
after = [{ step = "db", gate = { approve = "db up?" } }]
"#;
    let vms = ["db-1", "app-1", "app-2"];
    let mut first = harness(fleet(&vms), toml);
    first.approval = Some(Approval(Operator::refusing(&[])));
    let first = first.run().await;
    assert_eq!(first.summary.counts.ok, 3);
    let operator = Operator::refusing(&[]);
    let mut finished = harness(fleet(&vms), toml);
    finished.approval = Some(Approval(operator.clone()));
    for (step, vm) in [("db", "db-1"), ("app", "app-1"), ("app", "app-2")] {
        finished.resume_done_in(step, vm, first.result(vm).clone());
    }
    let run = finished.run().await;
    assert!(operator.messages().is_empty());
    assert!(gates(&run).is_empty());
    assert_eq!(finished.fake.total_mutations(), 0);
    // A step with VMs left is gated again, on its edges as before it.
    let operator = Operator::refusing(&[]);
    let mut partly = harness(fleet(&vms), toml);
    partly.approval = Some(Approval(operator.clone()));
    partly.resume_done_in("db", "db-1", first.result("db-1").clone());
    partly.resume_done_in("app", "app-1", first.result("app-1").clone());
    let run = partly.run().await;
    assert_eq!(operator.messages(), ["db up?"]);
    assert_eq!(run.outcome("app-2"), &VmOutcome::Ok);
    assert_eq!(partly.fake.mutations("app-2").len(), 1);
}
