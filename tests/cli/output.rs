//! Operator output at scale: what a run and a plan of hundreds of VMs print, colours, and
//! the verbosity flags.

use crate::support::{ALL_OFF, FAST_POLLING, Running, Test};
use powerbook::sim::SimAction;
use std::time::Duration;

/// Names of the VMs whose power-off always fails: every 100th of 500.
fn failing() -> Vec<String> {
    (1..=5).map(|i| format!("vm-{:05}", i * 100)).collect()
}

/// 500 VMs, all ON, short tasks; five of them fail to power off.
fn five_hundred_with_five_failures() -> Test {
    Test::new()
        .generated(500, 20)
        .configure(|c| {
            for vm in c
                .vdcs
                .iter_mut()
                .flat_map(|d| d.vapps.iter_mut())
                .flat_map(|a| a.vms.iter_mut())
            {
                if vm.id % 100 == 0 {
                    vm.fail_actions = vec![SimAction::Off];
                }
            }
        })
        .runbook(ALL_OFF)
}

fn longest_line(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn a_500_vm_run_with_5_failures_prints_a_screenful_of_120_columns_failures_first() {
    let t = five_hundred_with_five_failures();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(1)
        .run();
    let lines = out.stdout.lines().count();
    assert!(lines <= 60, "{lines} lines\n{}", out.context());
    assert!(longest_line(&out.stdout) <= 120, "{}", out.context());
    let first_screen: Vec<&str> = out.stdout.lines().take(40).collect();
    for name in failing() {
        assert!(
            first_screen.iter().any(|l| l.contains(&name)),
            "{name} is not on the first screen\n{}",
            out.context()
        );
    }
    assert!(
        out.stdout
            .contains("495 more VM results not listed: 495 ok. `--show all` lists every one"),
        "{}",
        out.context()
    );
    assert!(
        out.stdout
            .contains("Summary: 500 VMs: 495 ok, 0 skipped, 5 failed"),
        "{}",
        out.context()
    );
}

#[test]
fn runs_show_all_lists_every_vm_of_a_large_run() {
    let t = five_hundred_with_five_failures();
    t.clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(1)
        .run();
    let journal = crate::support::only_journal(&t);
    let out = t
        .clone()
        .args(["runs", "show"])
        .arg(&journal)
        .args(["--show", "all"])
        .code(0)
        .run();
    for i in 1..=500 {
        let name = format!("vm-{i:05}");
        assert!(
            out.stdout.contains(&name),
            "{name} missing\n{}",
            out.context()
        );
    }
    assert!(!out.stdout.contains("not listed"), "{}", out.context());
}

#[test]
fn a_500_vm_plan_prints_a_summary_per_step_and_every_vm_only_when_asked() {
    let t = Test::new().generated(500, 20).runbook(ALL_OFF);
    let out = t.clone().args(["plan", "runbook.toml"]).code(0).run();
    assert!(
        out.stdout.lines().count() <= 30,
        "{} lines\n{}",
        out.stdout.lines().count(),
        out.context()
    );
    assert!(
        out.stdout
            .contains("500 VMs not listed (`--show all` lists every one):"),
        "{}",
        out.context()
    );
    assert!(longest_line(&out.stdout) <= 120, "{}", out.context());
    let all = t
        .clone()
        .args(["plan", "runbook.toml", "--show", "all"])
        .code(0)
        .run();
    assert!(all.stdout.contains("vm-00001") && all.stdout.contains("vm-00500"));
    assert!(all.stdout.lines().count() > 500, "{}", all.context());
}

#[test]
fn colour_is_off_in_a_pipe_and_on_when_forced() {
    let t = Test::new().generated(3, 20).runbook(ALL_OFF);
    let plain = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .env_remove("NO_COLOR")
        .code(0)
        .run();
    assert!(!plain.stdout.contains('\x1b'), "{}", plain.context());
    let t = Test::new().generated(3, 20).runbook(ALL_OFF);
    let coloured = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--color", "always"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    assert!(coloured.stdout.contains("\x1b["), "{}", coloured.context());
}

#[test]
fn verbose_logs_every_request_without_credentials_and_quiet_logs_nothing() {
    let t = Test::new().generated(3, 20).runbook(ALL_OFF);
    let out = t
        .clone()
        .args(["-v", "run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    assert!(
        out.stderr.contains("PUT ") && out.stderr.contains("/state -> 202"),
        "{}",
        out.context()
    );
    assert!(out.stderr.contains("GET "), "{}", out.context());
    assert!(!out.stderr.contains("xabiquo"), "{}", out.context());
    let t = Test::new().generated(3, 20).runbook(ALL_OFF);
    let quiet = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "-q"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    assert!(!quiet.stderr.contains("PUT "), "{}", quiet.context());
    t.clone()
        .args(["run", "runbook.toml", "--yes", "-q", "-v"])
        .code(2)
        .run();
}

#[test]
fn the_question_comes_after_the_plan_summary_and_no_exits_4_having_sent_nothing() {
    let t = Test::new().lab(20.0);
    let runbook = crate::support::root().join("runbooks/maintenance-shutdown.toml");
    let before = t.stats().mutations.len();
    let (code, text) =
        crate::support::on_a_terminal(&t, &format!("run {}", runbook.display()), "n\n");
    assert_eq!(code, 4, "{text}");
    let asked = text.find("Proceed? [y/N]").expect("asked");
    for needle in [
        "16 VMs selected; 14 to act on, 1 skipped, 1 excluded in 4 steps",
        "Step graph, in execution order:",
        "Waves: 2 waves of 5, 3 VMs",
        "Concurrency: at most 50 VMs in flight",
        "Failures: abort at 2 failures of 8",
        "Estimate: about",
    ] {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?}\n{text}"));
        assert!(at < asked, "{needle:?} after the question\n{text}");
    }
    assert!(text.contains("Nothing was changed."), "{text}");
    assert_eq!(t.stats().mutations.len(), before, "{text}");
}

fn validator(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(crate::support::root().join("runbooks").join(file)).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn ndjson_streams_every_event_as_a_line_that_matches_its_schema() {
    let t = Test::new()
        .generated(20, 40)
        .configure(|c| {
            if let Some(vm) = c.vdcs[0].vapps[0].vms.get_mut(4) {
                vm.fail_actions = vec![SimAction::Off];
            }
        })
        .runbook(ALL_OFF);
    let out = t
        .clone()
        .args([
            "run",
            "runbook.toml",
            "--yes",
            "--output",
            "ndjson",
            "--report",
            "r.json",
        ])
        .args(FAST_POLLING)
        .code(1)
        .run();
    let events = validator("events.schema.json");
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        let errors = schema_errors(&events, line);
        assert!(errors.is_empty(), "{line}: {errors:#?}");
        assert_eq!(
            (line["format"].as_u64(), line["kind"].as_str()),
            (Some(1), Some("event"))
        );
    }
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(count("vm_finished"), 20, "{kinds:?}");
    assert_eq!(count("task_accepted"), 20, "{kinds:?}");
    assert_eq!(count("task_finished"), 20, "{kinds:?}");
    for kind in [
        "step_started",
        "wave_started",
        "vm_started",
        "vm_acting",
        "step_finished",
    ] {
        assert!(count(kind) > 0, "no {kind}: {kinds:?}");
    }
    // Times never go back, and each VM's task is accepted before it finishes.
    let at: Vec<&str> = lines.iter().map(|l| l["at"].as_str().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    for vm in 1..=20 {
        let name = format!("vm-{vm:05}");
        let pos = |k: &str| {
            lines
                .iter()
                .position(|l| l["event"] == k && l["vm"] == name.as_str())
                .unwrap_or_else(|| panic!("no {k} of {name}"))
        };
        assert!(pos("task_accepted") < pos("task_finished"), "{name}");
    }
    let failed = lines
        .iter()
        .find(|l| l["event"] == "vm_finished" && l["result"]["result"] == "failed")
        .expect("the failed VM's result");
    assert!(failed["result"]["failed_jobs"][0]["rollback_state"].is_string());
    assert!(
        failed["result"]["started_at"].as_str().unwrap()
            <= failed["result"]["finished_at"].as_str().unwrap()
    );
    // The report file still has everything, and matches its own schema.
    let report: serde_json::Value = serde_json::from_str(&t.read("r.json")).unwrap();
    let errors = schema_errors(&validator("report.schema.json"), &report);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        (report["format"].as_u64(), report["kind"].as_str()),
        (Some(1), Some("run_report"))
    );
    // The schema has teeth.
    let mut broken = lines[0].clone();
    broken["event"] = "run_paused".into();
    assert!(!events.is_valid(&broken));
}

/// A run of 5 s tasks that has recorded its plan in `run.jsonl` and is still going.
fn slow_run_under_way() -> (Test, std::path::PathBuf, Running) {
    let t = Test::new().generated(4, 5_000).runbook(ALL_OFF);
    let journal = t.path("run.jsonl");
    let child = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--journal"])
        .arg(&journal)
        .args(FAST_POLLING)
        .spawn();
    crate::support::wait_until("the run records its plan", Duration::from_secs(20), || {
        powerbook::journal::load(&journal)
            .is_ok_and(|j| powerbook::journal::RunView::of(&j).plan.is_some())
    });
    (t, journal, child)
}

#[test]
fn runs_tells_a_run_in_progress_from_one_that_crashed() {
    let (t, _, child) = slow_run_under_way();
    let status = |t: &Test| -> String {
        let v: serde_json::Value = t
            .clone()
            .args(["runs", "--runs-dir", ".", "--output", "json"])
            .code(0)
            .run()
            .json();
        v["runs"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status(&t), "running");
    let table = t.clone().args(["runs", "--runs-dir", "."]).code(0).run();
    assert!(table.stdout.contains("running"), "{}", table.context());
    child.kill(); // SIGKILL: no end record
    assert_eq!(status(&t), "crashed");
}

#[test]
fn off_a_terminal_progress_is_a_line_per_step_start_wave_pause_and_end() {
    let t = Test::new().generated(6, 40).runbook(
        r#"
name = "waves"
[[step]]
name = "off"
action = "off"
targets = [{ vdc = "*" }]
waves = { size = 3, pause = "50ms" }
[[step]]
name = "on"
action = "on"
after = ["off"]
targets = [{ vdc = "*" }]
"#,
    );
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    for line in [
        "step 'off' started: 6 VMs in 2 waves",
        "step 'off': wave 2/2 starts after a 50ms pause",
        "step 'off' finished: 6 ok, 0 skipped, 0 failed, 0 not done",
        "step 'on' started: 6 VMs in 1 wave",
        "step 'on' finished: 6 ok, 0 skipped, 0 failed, 0 not done",
    ] {
        assert!(
            out.stderr.lines().any(|l| l == line),
            "no {line:?}\n{}",
            out.context()
        );
    }
    let quiet = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "-q"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    assert!(!quiet.stderr.contains("step 'off'"), "{}", quiet.context());
}

#[test]
fn runs_watch_follows_a_run_to_its_end_and_exits_as_it_did() {
    let t = five_hundred_with_five_failures();
    let journal = t.path("run.jsonl");
    let run = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--journal"])
        .arg(&journal)
        .args(FAST_POLLING)
        .code(1)
        .spawn();
    crate::support::wait_until(
        "the run writes its journal",
        Duration::from_secs(20),
        || journal.exists(),
    );
    let watched = t
        .clone()
        .args(["runs", "watch"])
        .arg(&journal)
        .code(1)
        .stderr_contains("step 'off' started: 500 VMs in 1 wave")
        .stderr_contains("step 'off' finished: 495 ok, 0 skipped, 5 failed, 0 not done")
        .stdout_contains("Summary: 500 VMs: 495 ok, 0 skipped, 5 failed")
        .run();
    let ran = run.wait();
    // The watcher saw the run while it went: it ended after the run's plan was recorded.
    assert!(watched.stdout.contains("vm-00100"), "{}", watched.context());
    assert_eq!(ran.code, 1);
}

#[test]
fn runs_watch_of_a_killed_run_says_so_instead_of_waiting_forever() {
    let (t, journal, child) = slow_run_under_way();
    child.kill();
    t.clone()
        .args(["runs", "watch"])
        .arg(&journal)
        .timeout(Duration::from_secs(20))
        .code(3)
        .stderr_contains("step 'off' started: 4 VMs in 1 wave")
        .stderr_contains("it crashed or was killed")
        .stdout_contains("Resume with: powerbook resume")
        .run();
}
