//! Operator output at scale: what a run and a plan of hundreds of VMs print, colours, and
//! the verbosity flags.

use crate::support::{FAST_POLLING, Test};
use powerbook::sim::SimAction;

const ALL_OFF: &str = r#"
name = "all off"
[[step]]
name = "off"
action = "off"
targets = [{ vdc = "*" }]
"#;

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
    let journal = std::fs::read_dir(t.path("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
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

/// Runs `powerbook ARGS` on a pseudo-terminal (util-linux `script`), typing `answer`.
fn on_a_terminal(t: &Test, args: &str, answer: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_powerbook"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(t.dir())
        .env("POWERBOOK_TEST_MODE", "1")
        .env("NO_COLOR", "1")
        .env("POWERBOOK_RUNS_DIR", t.path("runs"))
        .env("ABIQUO_API_URL", t.sim().base_url())
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_question_comes_after_the_plan_summary_and_no_exits_4_having_sent_nothing() {
    let t = Test::new().lab(20.0);
    let runbook = crate::support::root().join("runbooks/maintenance-shutdown.toml");
    let before = t.stats().mutations.len();
    let (code, text) = on_a_terminal(&t, &format!("run {}", runbook.display()), "n\n");
    assert_eq!(code, 4, "{text}");
    let asked = text.find("Proceed? [y/N]").expect("asked");
    for needle in [
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
