//! Datacenter restarts: ramped waves (a canary first), rolling restarts, gates.

use crate::support::{FAST_POLLING, Test};
use powerbook::sim::MutationRecord;

/// Every mutation the simulator accepted, in the order it accepted them.
fn timeline(t: &Test) -> Vec<MutationRecord> {
    let mut all: Vec<MutationRecord> = t.stats().mutations.into_values().flatten().collect();
    all.sort_by_key(|m| m.accepted_ms);
    all
}

#[test]
fn a_ramp_of_one_then_half_runs_the_canary_alone_first() {
    let t = Test::new().generated(9, 150).runbook(
        r#"
name = "canary"
[[step]]
name = "off"
action = "off"
targets = [{ vdc = "*" }]
waves = { sizes = [1, "50%"] }
"#,
    );
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(0)
        .stderr_contains("step 'off' started: 9 VMs in 3 waves")
        .run();
    let all = timeline(&t);
    assert_eq!(all.len(), 9, "{}", out.context());
    let canary_done = all[0].finished_ms.expect("the canary's task finished");
    // Nothing else was sent before the canary's task finished; then waves of 5 and 3.
    assert!(
        all[1..].iter().all(|m| m.accepted_ms >= canary_done),
        "{all:#?}"
    );
    let second_done = all[1..6]
        .iter()
        .filter_map(|m| m.finished_ms)
        .max()
        .unwrap();
    assert!(
        all[6..].iter().all(|m| m.accepted_ms >= second_done),
        "{all:#?}"
    );
    assert!(
        all[1..6]
            .iter()
            .all(|m| m.accepted_ms < all[1].finished_ms.unwrap())
    );
}
