//! Datacenter restarts: ramped waves (a canary first), rolling restarts, gates.

use crate::support::{FAST_POLLING, Test, free_port, open_port_after};
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

const ROLLING: &str = r#"
name = "rolling restart"
[[step]]
name = "restart web"
action = "restart"
targets = [{ vdc = "*" }]
fallback = { action = "off", after = "2s" }
waves = { size = "25%" }
"#;

/// The largest number of VMs down at once: a VM is down from its first request being
/// accepted until its power on's task finished.
fn most_down_at_once(t: &Test) -> usize {
    let mut edges = Vec::new();
    for records in t.stats().mutations.values() {
        let down = records.first().map(|m| m.accepted_ms);
        let up = records
            .iter()
            .rev()
            .find(|m| m.action == "ON")
            .and_then(|m| m.finished_ms);
        if let (Some(down), Some(up)) = (down, up) {
            edges.push((down, 1i64));
            edges.push((up, -1));
        }
    }
    // At the same instant, a VM coming up counts before one going down.
    edges.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

#[test]
fn a_rolling_restart_in_quarter_waves_never_has_more_than_a_quarter_down_and_ends_all_on() {
    let t = Test::new().generated(40, 120).runbook(ROLLING);
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let report: serde_json::Value = out.json();
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["path"], "graceful+on", "{r}");
        assert_eq!(r["state_before"], "ON", "{r}");
        assert_eq!(r["state_after"], "ON", "{r}");
    }
    for (vm, records) in t.stats().mutations {
        let actions: Vec<&str> = records.iter().map(|m| m.action.as_str()).collect();
        assert_eq!(actions, ["OFF graceful", "ON"], "{vm}");
    }
    let runs = t.path("runs");
    let journal = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let table = t.clone().args(["runs", "show"]).arg(&journal).code(0).run();
    assert!(
        table.stdout.contains("40 graceful+on"),
        "{}",
        table.context()
    );
    let most = most_down_at_once(&t);
    assert!(most <= 10, "{most} VMs down at once");
    assert!(most >= 2, "the waves ran in parallel: {most}");
    assert!(
        t.sim()
            .vm_states()
            .iter()
            .all(|v| v.state == powerbook::abiquo::model::VmState::On)
    );
}

#[test]
fn a_restart_falls_back_to_a_hard_off_and_only_powers_on_a_vm_that_is_off() {
    use powerbook::abiquo::model::VmState;
    let t = Test::new()
        .generated(3, 120)
        .configure(|c| {
            let vms = &mut c.vdcs[0].vapps[0].vms;
            vms[1].guest_tools = false;
            vms[2].state = VmState::Off;
        })
        .runbook(ROLLING);
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let report: serde_json::Value = out.json();
    let path = |vm: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["vm"]["name"] == vm)
            .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(path("vm-00001"), "graceful+on", "{}", out.context());
    assert_eq!(path("vm-00002"), "forced+on", "{}", out.context());
    assert_eq!(path("vm-00003"), "direct", "{}", out.context());
    let actions = t.actions();
    assert_eq!(actions["vm-00002"], ["OFF graceful", "OFF", "ON"]);
    assert_eq!(actions["vm-00003"], ["ON"]);
    assert!(t.sim().vm_states().iter().all(|v| v.state == VmState::On));
    // The failed graceful job is reported, though the VM ended ok.
    assert!(
        report["failed_jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["vm"] == "vm-00002" && j["job_type"] == "SHUTDOWN"),
        "{}",
        out.context()
    );
}

#[test]
fn a_restart_killed_at_any_moment_resumes_to_every_vm_on_without_a_second_shutdown() {
    use powerbook::abiquo::model::VmState;
    use std::time::Duration;
    for kill_after_ms in [150u64, 450, 900] {
        let t = Test::new().generated(8, 300).runbook(
            r#"
name = "restart"
[limits]
concurrency = 3
[[step]]
name = "restart"
action = "restart"
targets = [{ vdc = "*" }]
"#,
        );
        let child = t
            .clone()
            .args(["run", "runbook.toml", "--yes", "--journal", "run.jsonl"])
            .args(FAST_POLLING)
            .spawn();
        crate::support::wait_until("the run starts", Duration::from_secs(20), || {
            !t.stats().mutations.is_empty()
        });
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill(); // SIGKILL
        t.clone()
            .args(["resume", "run.jsonl", "--yes"])
            .args(FAST_POLLING)
            .code(0)
            .run();
        for (vm, actions) in t.actions() {
            assert_eq!(
                actions,
                ["OFF graceful", "ON"],
                "{vm}, killed after {kill_after_ms} ms"
            );
        }
        assert_eq!(t.actions().len(), 8);
        assert!(t.sim().vm_states().iter().all(|v| v.state == VmState::On));
    }
}

fn gated(port: u16, timeout: &str) -> String {
    format!(
        r#"
name = "gated"
[[step]]
name = "db off"
action = "off"
targets = [{{ vm = "vm-00001" }}]
[[step]]
name = "app off"
action = "off"
after = ["db off"]
targets = [{{ vm = "vm-0000[2-4]" }}]
gate = {{ tcp = "127.0.0.1:{port}", timeout = "{timeout}", interval = "200ms" }}
"#
    )
}

#[test]
fn a_step_gated_on_a_tcp_port_starts_only_once_the_port_opens() {
    let port = free_port();
    let t = Test::new().generated(4, 50).runbook(&gated(port, "30s"));
    let opener = open_port_after(port, std::time::Duration::from_secs(3));
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let report: serde_json::Value = out.json();
    let gate = &report["gates"][0];
    assert_eq!(gate["passed"], true, "{}", out.context());
    assert_eq!(gate["check"], format!("tcp 127.0.0.1:{port}"));
    assert!(gate["attempts"].as_u64().unwrap() > 5, "{gate}");
    let all = timeline(&t);
    let db = all.iter().find(|m| m.vm_id == 1).unwrap().accepted_ms;
    let app = all
        .iter()
        .filter(|m| m.vm_id != 1)
        .map(|m| m.accepted_ms)
        .min()
        .unwrap();
    assert!(app >= db + 2_500, "app started {} ms after db", app - db);
    drop(opener);
}

#[test]
fn a_gate_that_times_out_fails_its_step_and_stops_the_run() {
    let port = free_port();
    let t = Test::new().generated(4, 50).runbook(&gated(port, "1s"));
    t.clone()
        .args(["plan", "runbook.toml"])
        .code(0)
        .stdout_contains(format!(
            "Gate before the step: tcp 127.0.0.1:{port} (every 200ms, for at most 1.0s)"
        ))
        .run();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(3)
        .stdout_contains("Gates:")
        .stdout_contains(format!("before 'app off': tcp 127.0.0.1:{port} FAILED"))
        .stdout_contains("not started: its gate did not pass")
        .stdout_contains("Run aborted: step 'app off': gate")
        .run();
    assert_eq!(
        t.actions().len(),
        1,
        "only the first step acted\n{}",
        out.context()
    );
    // The journal keeps the gate: `runs show` tells it too.
    let runs = t.path("runs");
    let journal = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    t.clone()
        .args(["runs", "show"])
        .arg(&journal)
        .code(0)
        .stdout_contains(format!("tcp 127.0.0.1:{port} FAILED"))
        .run();
}

/// "Power on db; wait for its port; then app", as one runbook: the gate is on app's edge
/// from db. The VMs start OFF.
fn db_then_app(port: u16, timeout: &str) -> Test {
    use powerbook::abiquo::model::VmState;
    Test::new()
        .generated(4, 50)
        .configure(|c| {
            for vm in c.vdcs.iter_mut().flat_map(|d| &mut d.vapps).flat_map(|a| &mut a.vms) {
                vm.state = VmState::Off;
            }
        })
        .runbook(&format!(
            r#"
name = "db then app"
[[step]]
name = "db on"
action = "on"
targets = [{{ vm = "vm-00001" }}]
[[step]]
name = "app on"
action = "on"
after = [{{ step = "db on", gate = {{ tcp = "127.0.0.1:{port}", timeout = "{timeout}", interval = "200ms" }} }}]
targets = [{{ vm = "vm-0000[2-4]" }}]
"#
        ))
}

#[test]
fn power_on_db_wait_for_its_port_then_app_runs_as_one_runbook() {
    use std::time::Duration;
    let port = free_port();
    let t = db_then_app(port, "30s");
    let run = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .spawn();
    // The port opens 3 s after db's task is done.
    let db_done = || {
        timeline(&t)
            .iter()
            .find(|m| m.vm_id == 1)
            .and_then(|m| m.finished_ms)
    };
    crate::support::wait_until("db is on", Duration::from_secs(20), || db_done().is_some());
    std::thread::sleep(Duration::from_secs(3));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let opener = std::thread::spawn(move || {
        // Accept the gate's connections until the test ends.
        for c in listener.incoming().take(5) {
            drop(c);
        }
    });
    let out = run.wait();
    let report: serde_json::Value = out.json();
    let gate = &report["gates"][0];
    assert_eq!(gate["passed"], true, "{}", out.context());
    assert_eq!(gate["step"], 1, "{gate}");
    assert_eq!(gate["after"], 0, "on the edge from db: {gate}");
    assert_eq!(gate["check"], format!("tcp 127.0.0.1:{port}"));
    assert!(gate["attempts"].as_u64().unwrap() > 5, "{gate}");
    let db = db_done().unwrap();
    let all = timeline(&t);
    assert_eq!(all.len(), 4, "{all:#?}");
    let app = all
        .iter()
        .filter(|m| m.vm_id != 1)
        .map(|m| m.accepted_ms)
        .min()
        .unwrap();
    assert!(
        app >= db + 2_500,
        "app started {} ms after db was on",
        app - db
    );
    drop(opener);
}

#[test]
fn an_edge_gate_that_times_out_fails_the_gated_step_and_stops_the_run() {
    let port = free_port();
    let t = db_then_app(port, "1s");
    t.clone()
        .args(["plan", "runbook.toml"])
        .code(0)
        .stdout_contains(format!("after 'db on' (gate tcp 127.0.0.1:{port})"))
        .stdout_contains(format!(
            "Gate after 'db on': tcp 127.0.0.1:{port} (every 200ms, for at most 1.0s)"
        ))
        .run();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(3)
        .stdout_contains(format!(
            "after 'db on', before 'app on': tcp 127.0.0.1:{port} FAILED"
        ))
        .stdout_contains("not started: its gate did not pass")
        .stdout_contains(format!(
            "Run aborted: step 'app on': gate tcp 127.0.0.1:{port} (after 'db on') failed"
        ))
        .run();
    assert_eq!(
        t.actions().len(),
        1,
        "only db was powered on\n{}",
        out.context()
    );
    let journal = crate::support::only_journal(&t);
    t.clone()
        .args(["runs", "show"])
        .arg(&journal)
        .code(0)
        .stdout_contains(format!(
            "after 'db on', before 'app on': tcp 127.0.0.1:{port} FAILED"
        ))
        .run();
}

#[test]
fn an_approve_gate_on_an_edge_without_a_terminal_is_refused_before_anything_is_sent() {
    let t = Test::new().generated(3, 50).runbook(
        r#"
name = "approved canary"
[[step]]
name = "canary"
action = "off"
targets = [{ vm = "vm-00001" }]
[[step]]
name = "rest"
action = "off"
after = [{ step = "canary", gate = { approve = "the canary is down cleanly: the rest?" } }]
targets = [{ vm = "vm-0000[2-3]" }]
"#,
    );
    t.clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(2)
        .stderr_contains("step 'rest' has an `approve` gate")
        .stderr_contains("--approve-gates")
        .mutations(0)
        .run();
}

const CANARY_APPROVED: &str = r#"
name = "approved canary"
[[step]]
name = "canary"
action = "off"
targets = [{ vm = "vm-00001" }]
[[step]]
name = "rest"
action = "off"
after = ["canary"]
targets = [{ vm = "vm-0000[2-3]" }]
gate = { approve = "the canary is down cleanly: the rest?", timeout = "1m" }
"#;

#[test]
fn an_approve_gate_without_a_terminal_is_refused_before_anything_is_sent() {
    let t = Test::new().generated(3, 50).runbook(CANARY_APPROVED);
    t.clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(2)
        .stderr_contains("step 'rest' has an `approve` gate")
        .stderr_contains("--approve-gates")
        .mutations(0)
        .run();
}

#[test]
fn approve_gates_approves_every_gate_of_an_unattended_run() {
    let t = Test::new().generated(3, 50).runbook(CANARY_APPROVED);
    let out = t
        .clone()
        .args([
            "run",
            "runbook.toml",
            "--yes",
            "--approve-gates",
            "--output",
            "json",
        ])
        .args(FAST_POLLING)
        .code(0)
        .mutations(3)
        .run();
    let report: serde_json::Value = out.json();
    assert_eq!(report["gates"][0]["passed"], true, "{}", out.context());
    assert_eq!(report["gates"][0]["detail"], "approved by --approve-gates");
}

#[test]
fn on_a_terminal_the_operator_approves_or_stops_at_the_gate() {
    let t = Test::new().generated(3, 50).runbook(CANARY_APPROVED);
    let (code, text) = crate::support::on_a_terminal(&t, "run runbook.toml", "y\nn\n");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("Gate: the canary is down cleanly: the rest?"),
        "{text}"
    );
    assert!(text.contains("answered \"n\" on the terminal"), "{text}");
    assert_eq!(t.actions().len(), 1, "only the canary went down\n{text}");
    let t = Test::new().generated(3, 50).runbook(CANARY_APPROVED);
    let (code, text) = crate::support::on_a_terminal(&t, "run runbook.toml", "y\ny\n");
    assert_eq!(code, 0, "{text}");
    assert_eq!(t.actions().len(), 3, "{text}");
}

#[test]
fn the_restart_examples_run_against_the_built_in_lab() {
    for (file, extra) in [
        ("rolling-web-restart.toml", None),
        ("datacenter-full-restart.toml", Some("--approve-gates")),
    ] {
        let text = std::fs::read_to_string(crate::support::root().join("runbooks").join(file))
            .unwrap()
            // Short pauses keep the test fast; everything else is the example as shipped.
            .replace("pause = \"30s\"", "pause = \"50ms\"");
        let t = Test::new().file(file, &text);
        let mut run = t
            .clone()
            .args(["run", file, "--yes", "--simulate", "--simulate-speed", "30"])
            .args(FAST_POLLING);
        if let Some(flag) = extra {
            run = run.arg(flag);
        }
        let out = run.code(0).stdout_contains("Summary: ").run();
        assert!(
            out.stdout.contains(" 0 failed"),
            "{file}\n{}",
            out.context()
        );
    }
}
