//! `run --yes` starts its first step on the first pages of a long listing: the cloud works
//! while the last pages are read, every VM is still acted on once, and a run killed before
//! its plan was whole is resumed for what it started.
use crate::support::{ALL_OFF, FAST_POLLING, Test, wait_until};
use std::path::Path;
use std::time::Duration;

/// The journal's events, in order.
fn events(journal: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["record"] == "event")
        .map(|r| r["event"].clone())
        .collect()
}

fn position(events: &[serde_json::Value], kind: &str) -> Option<usize> {
    events.iter().position(|e| e["event"] == kind)
}

/// 500 VMs over 5 pages, each answer 40 ms late: the listing takes a few round trips.
fn slow_listing() -> Test {
    Test::new()
        .generated(500, 300)
        .configure(|c| c.latency = Duration::from_millis(40))
        .runbook(ALL_OFF)
}

#[test]
fn a_run_with_yes_acts_on_the_first_pages_before_the_last_is_listed() {
    let t = slow_listing();
    let journal = t.path("run.jsonl");
    let out = t
        .clone()
        .args([
            "run",
            "runbook.toml",
            "--yes",
            "--output",
            "json",
            "--journal",
        ])
        .arg(&journal)
        .args(FAST_POLLING)
        .code(0)
        .stderr_contains("Step 'off' starts on the first VMs listed")
        .stderr_contains("500 VMs selected; 500 to act on in 1 step")
        .mutations(500)
        .actions_per_vm(&["OFF"])
        .run();
    let events = events(&journal);
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events[0]["partial"], true);
    let planned = position(&events, "planned").expect("the whole plan is journaled");
    let acting = position(&events, "vm_acting").unwrap();
    assert!(
        acting < planned,
        "a request went out before the plan was whole"
    );
    let early = events[..planned]
        .iter()
        .filter(|e| e["event"] == "vm_acting")
        .count();
    assert!(early < 500, "the rest waited for the whole plan");
    // Each VM reported once, under its own number in the whole plan.
    let report: serde_json::Value = out.json();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 500);
    let targets = &events[planned]["plan"]["steps"][0]["targets"];
    for r in results {
        let t = r["target"].as_u64().unwrap() as usize;
        assert_eq!(targets[t]["vm"]["name"], r["vm"]["name"]);
        assert_eq!(r["result"], "ok");
    }
}

#[test]
fn whole_plan_first_lists_every_vm_before_acting() {
    let t = slow_listing();
    let journal = t.path("run.jsonl");
    t.clone()
        .args([
            "run",
            "runbook.toml",
            "--yes",
            "--whole-plan-first",
            "--journal",
        ])
        .arg(&journal)
        .args(FAST_POLLING)
        .code(0)
        .stderr_lacks("starts on the first VMs listed")
        .mutations(500)
        .run();
    let events = events(&journal);
    assert_eq!(events[0]["event"], "run_started");
    assert!(events[0].get("partial").is_none());
    assert_eq!(position(&events, "target_listed"), None);
    assert_eq!(position(&events, "planned"), None);
}

#[test]
fn the_event_stream_of_a_run_that_started_early_opens_with_the_whole_plan() {
    let t = slow_listing();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "ndjson"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "run_started");
    assert_eq!(lines[0]["targets"], 500);
    assert_eq!(lines[1]["event"], "step_started");
    assert!(
        lines
            .iter()
            .all(|l| l["event"] != "target_listed" && l["event"] != "planned")
    );
    let finished = lines.iter().filter(|l| l["event"] == "vm_finished").count();
    assert_eq!(finished, 500);
}

#[test]
fn a_run_killed_before_its_plan_was_whole_is_resumed_for_what_it_started() {
    // 1,000 VMs over 10 pages read one after the other on the listings' one connection,
    // each answer 200 ms late: the run acts on the first page seconds before the last.
    let t = Test::new()
        .generated(1_000, 2_000)
        .configure(|c| c.latency = Duration::from_millis(200))
        .runbook(ALL_OFF);
    let journal = t.path("run.jsonl");
    let child = t
        .clone()
        .args([
            "run",
            "runbook.toml",
            "--yes",
            "--max-connections",
            "4",
            "--journal",
        ])
        .arg(&journal)
        .args(FAST_POLLING)
        .spawn();
    wait_until(
        "the run sends a request before its plan is whole",
        Duration::from_secs(30),
        || position(&events(&journal), "vm_acting").is_some(),
    );
    child.kill();
    let events = events(&journal);
    assert_eq!(
        position(&events, "planned"),
        None,
        "killed before the whole plan"
    );
    let handed = events
        .iter()
        .filter(|e| e["event"] == "target_listed")
        .count();
    assert!(handed > 0 && handed < 1_000, "{handed}");
    t.clone()
        .args(["resume"])
        .arg(&journal)
        .args(["--yes"])
        .args(FAST_POLLING)
        .code(0)
        .stderr_contains("the run stopped while its VMs were still being listed")
        .stderr_contains("Run the runbook again for the rest")
        // It finished the VMs the run had taken, once each, and started no other.
        .mutations(handed)
        .actions_per_vm(&["OFF"])
        .run();
    // Run again, the rest is what is left to do.
    t.clone()
        .args(["plan", "runbook.toml"])
        .code(0)
        .stdout_contains(format!("{} to act on", 1_000 - handed))
        .run();
}
