//! Rehearsals: a `--simulate` run keeps its simulator's world beside the journal, so a crash
//! can be rehearsed too: `resume --simulate` brings that world back and finishes the run.

use crate::support::{FAST_POLLING, Test, wait_until};
use std::collections::BTreeMap;
use std::time::Duration;

const INVENTORY: &str = r#"
[settings]
task_duration = "600ms"
task_jitter = "100ms"

[[vdc]]
name = "dc"
[[vdc.vapp]]
name = "web"
vm = [
  { name = "web-01" }, { name = "web-02" }, { name = "web-03" }, { name = "web-04" },
  { name = "web-05" }, { name = "web-06" }, { name = "web-07" }, { name = "web-08" },
  { name = "web-09" }, { name = "web-10" }, { name = "web-11" }, { name = "web-12" },
]
"#;

const RESTART: &str = r#"
name = "rehearsed restart"
[limits]
concurrency = 4
[[step]]
name = "restart web"
action = "restart"
targets = [{ vdc = "dc", vapp = "web" }]
"#;

fn rehearsal() -> Test {
    Test::new()
        .file("inventory.toml", INVENTORY)
        .runbook(RESTART)
}

/// The power requests the rehearsal's world accepted, per VM id, in order, read from the
/// world file (it outlives both processes).
fn requests(t: &Test) -> BTreeMap<u64, Vec<String>> {
    let mut per_vm: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in t.read("run.jsonl.world").lines().skip(1) {
        let change: serde_json::Value = serde_json::from_str(line).unwrap();
        if change["kind"] == "power" {
            let request = &change["request"];
            let text = format!(
                "{}{}",
                request["target"].as_str().unwrap_or("reset"),
                if request["graceful"] == true {
                    " graceful"
                } else {
                    ""
                }
            );
            per_vm
                .entry(change["vm"].as_u64().unwrap())
                .or_default()
                .push(text);
        }
    }
    per_vm
}

#[test]
fn a_rehearsal_killed_mid_run_resumes_with_simulate_to_every_vm_done_without_a_second_action() {
    for kill_after_ms in [200u64, 1500] {
        let t = rehearsal();
        let child = t
            .clone()
            .args(["run", "runbook.toml", "--yes", "--journal", "run.jsonl"])
            .args(["--simulate", "--simulate-inventory", "inventory.toml"])
            .args(FAST_POLLING)
            .spawn();
        wait_until("the rehearsal acts", Duration::from_secs(30), || {
            std::fs::read_to_string(t.path("run.jsonl.world")).is_ok_and(|w| w.lines().count() > 1)
        });
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill(); // SIGKILL: the simulator dies with it
        let before = requests(&t);
        assert!(
            before.len() < 12 || before.values().any(|r| r.len() < 2),
            "killed after the run ended ({kill_after_ms} ms)"
        );
        // Tasks in flight at the crash finish while nothing runs: time catches up.
        std::thread::sleep(Duration::from_millis(700));

        let out = t
            .clone()
            .args([
                "resume",
                "run.jsonl",
                "--simulate",
                "--yes",
                "--output",
                "json",
            ])
            .args(FAST_POLLING)
            .code(0)
            .stderr_contains("the rehearsal's simulator is back at")
            .run();
        let report: serde_json::Value = out.json();
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), 12, "{}", out.context());
        for r in results {
            assert_eq!(r["state_after"], "ON", "{r}");
        }
        let counts = &report["summary"]["counts"];
        assert_eq!(counts["ok"], 12, "{counts}");
        let after = requests(&t);
        assert_eq!(after.len(), 12);
        for (vm, actions) in &after {
            assert_eq!(
                actions,
                &["OFF graceful", "ON"],
                "VM {vm}, killed after {kill_after_ms} ms"
            );
        }
    }
}

#[test]
fn a_rehearsals_journal_is_not_resumed_against_a_cloud_and_a_real_runs_not_against_the_simulator() {
    let t = rehearsal();
    t.clone()
        .args(["run", "runbook.toml", "--yes", "--journal", "run.jsonl"])
        .args(["--simulate", "--simulate-inventory", "inventory.toml"])
        .args(["--simulate-speed", "20"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    assert!(t.path("run.jsonl.world").exists());
    // Cut the journal after its plan so that something is left to resume.
    let journal = t.read("run.jsonl");
    let kept: Vec<&str> = journal.lines().take(2).collect();
    t.write("cut.jsonl", &(kept.join("\n") + "\n"));
    std::fs::copy(t.path("run.jsonl.world"), t.path("cut.jsonl.world")).unwrap();
    t.clone()
        .args(["resume", "cut.jsonl", "--yes"])
        .code(2)
        .stderr_contains("resume it with --simulate")
        .run();

    let real = Test::new().inventory(INVENTORY).runbook(RESTART);
    real.clone()
        .args(["run", "runbook.toml", "--yes", "--journal", "real.jsonl"])
        .args(FAST_POLLING)
        .run();
    let journal = real.read("real.jsonl");
    let kept: Vec<&str> = journal.lines().take(2).collect();
    real.write("cut.jsonl", &(kept.join("\n") + "\n"));
    real.clone()
        .args(["resume", "cut.jsonl", "--simulate", "--yes"])
        .code(2)
        .stderr_contains("only a run made with --simulate can be resumed with --simulate")
        .run();
}
