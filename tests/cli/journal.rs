//! Journal, resume, restore and run history against the in-process simulator: the real
//! binary is killed (SIGKILL, SIGINT) mid-run and resumed while the simulator lives on.

use crate::support::{against, runtime, write};
use powerbook::abiquo::model::VmState;
use powerbook::journal::{Record, RunView, TORN_NOTE};
use powerbook::sim::{SimConfig, SimHandle, SimUser};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `n` generated VMs (all ON), tasks of ~`ms` milliseconds.
fn generated(n: usize, ms: u64) -> SimConfig {
    let mut c = SimConfig::generated(n);
    c.task_duration = Duration::from_millis(ms);
    c.task_jitter = Duration::from_millis(ms / 5);
    c.durations.clear();
    c
}

/// The binary, set up like an operator's shell pointed at the simulator, run from `dir`.
fn powerbook(sim: &SimHandle, dir: &Path) -> Command {
    let mut cmd = against(sim);
    cmd.current_dir(dir)
        .env_remove("POWERBOOK_RUNS_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

const TIMING: [&str; 8] = [
    "--poll-initial",
    "20ms",
    "--poll-max",
    "100ms",
    "--lock-wait",
    "20s",
    "--request-timeout",
    "5s",
];

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn states(sim: &SimHandle) -> BTreeMap<String, (VmState, Option<bool>)> {
    sim.vm_states()
        .into_iter()
        .map(|v| (v.name, (v.state, v.deallocated)))
        .collect()
}

fn actions(sim: &SimHandle) -> BTreeMap<String, Vec<String>> {
    sim.stats()
        .mutations
        .into_iter()
        .map(|(vm, recs)| (vm, recs.into_iter().map(|r| r.action).collect()))
        .collect()
}

/// Waits for the child, failing the test after `limit`.
fn wait(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("powerbook did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

const OFF_ON_RESET: &str = r#"
name = "off on reset"
[limits]
concurrency = 6
[[step]]
name = "off"
action = "off"
targets = [{ vm = "vm-*" }]
[[step]]
name = "on"
action = "on"
targets = [{ vm = "vm-*" }]
[[step]]
name = "reset"
action = "reset"
targets = [{ vm = "vm-*" }]
"#;

// ---------------------------------------------------------------------------------------
// Acceptance
// ---------------------------------------------------------------------------------------

#[test]
fn sigkill_at_random_moments_then_resume_acts_exactly_once_per_vm_and_action() {
    let rt = runtime();
    let mut killed_mid_run = 0;
    for seed in [1u64, 2, 3, 4, 5] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Slow answers widen the window between a request and its answer, so that kills
        // also land after an intent was recorded but before its task link was.
        let mut config = generated(18, 120);
        config.faults.slow = 0.15;
        config.faults.slow_delay = Duration::from_millis(200);
        let sim = rt.block_on(SimHandle::start(config)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rb = write(dir.path(), "rb.toml", OFF_ON_RESET);
        let journal = dir.path().join("run.jsonl");
        for attempt in 0.. {
            assert!(attempt < 5, "seed {seed}: never got past planning");
            let mut child = powerbook(&sim, dir.path())
                .args(["run", rb.to_str().unwrap(), "--yes", "--journal"])
                .arg(&journal)
                .args(TIMING)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.random_range(150..2500)));
            let running = child.try_wait().unwrap().is_none();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let planned =
                powerbook::journal::load(&journal).is_ok_and(|j| RunView::of(&j).plan.is_some());
            if planned {
                killed_mid_run += usize::from(running);
                break;
            }
            // Killed before the plan was recorded: nothing can have been sent.
            assert!(sim.stats().mutations.is_empty(), "seed {seed}");
            let _ = std::fs::remove_file(&journal);
        }
        // Resume until done; the first resume of odd seeds is itself killed.
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= 4, "seed {seed}: resume does not finish");
            let child = powerbook(&sim, dir.path())
                .args(["resume", journal.to_str().unwrap(), "--yes"])
                .args(TIMING)
                .spawn()
                .unwrap();
            if rounds == 1 && seed % 2 == 1 {
                let mut child = child;
                std::thread::sleep(Duration::from_millis(rng.random_range(100..1200)));
                child.kill().unwrap();
                child.wait().unwrap();
                continue;
            }
            let out = wait(child, Duration::from_secs(60));
            assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", text(&out));
            break;
        }
        for (vm, (state, _)) in states(&sim) {
            assert_eq!(state, VmState::On, "seed {seed}: {vm}");
        }
        let acts = actions(&sim);
        assert_eq!(acts.len(), 18, "seed {seed}");
        for (vm, a) in &acts {
            assert_eq!(a, &["OFF", "ON", "reset"], "seed {seed}: {vm}");
        }
        // The journal still loads and tells the whole story.
        let j = powerbook::journal::load(&journal).unwrap();
        let view = RunView::of(&j);
        assert!(view.finished(), "seed {seed}");
        assert_eq!(view.results().len(), 54, "seed {seed}");
        assert!(
            view.results()
                .iter()
                .all(|r| r.outcome == powerbook::exec::event::VmOutcome::Ok),
            "seed {seed}"
        );
    }
    assert!(killed_mid_run >= 3, "too few kills hit a running run");
}

#[test]
fn ctrl_c_drains_prints_the_resume_command_and_exits_130_then_resume_finishes() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(12, 600))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "c.toml",
        r#"
name = "interrupt me"
[limits]
concurrency = 3
[[step]]
name = "all off"
action = "off"
targets = [{ vm = "vm-*" }]
"#,
    );
    let child = powerbook(&sim, dir.path())
        .args(["run", "c.toml", "--yes"])
        .args(TIMING)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while sim.stats().mutations.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A resume while the run is still going is refused before it sends anything.
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.path().join(".powerbook/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let early = powerbook(&sim, dir.path())
        .args(["resume", "--yes"])
        .arg(&runs[0])
        .output()
        .unwrap();
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    assert!(
        stderr(&early).contains("is the run still going?"),
        "{}",
        text(&early)
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let so = stdout(&out);
    let in_flight = sim.stats().mutations.len();
    assert!(in_flight < 12, "stopped early: {in_flight}");
    // Drained: every accepted task was followed to its end.
    assert!(so.contains(&format!("{in_flight} ok")), "{}", text(&out));
    let last = so.lines().last().unwrap_or_default();
    let prefix = "Resume with: powerbook resume .powerbook/runs/interrupt-me-";
    assert!(last.starts_with(prefix), "{}", text(&out));
    let journal = last.trim_start_matches("Resume with: powerbook resume ");
    let out = powerbook(&sim, dir.path())
        .args(["resume", journal, "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("{in_flight} VMs done (not touched)")),
        "{}",
        text(&out)
    );
    assert!(states(&sim).values().all(|(s, _)| *s == VmState::Off));
    assert!(actions(&sim).values().all(|a| a == &["OFF"]));
    assert_eq!(actions(&sim).len(), 12);
}

#[test]
fn restore_runbook_validates_and_returns_every_vm_to_its_state_before() {
    let rt = runtime();
    let mut lab = SimConfig::lab();
    lab.speed = 20.0;
    let sim = rt.block_on(SimHandle::start(lab)).unwrap();
    let before = states(&sim);
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mixed.toml",
        r#"
name = "mixed changes"
[[step]]
name = "pause web"
action = "pause"
on_failure = "continue"
targets = [{ vm = "web-0[12]" }]
[[step]]
name = "wake the stopped"
action = "on"
on_failure = "continue"
targets = [{ state = "OFF", hypervisor = "KVM" }]
[[step]]
name = "azure away"
action = "deallocate"
on_failure = "continue"
targets = [{ vm = "spark-master" }]
[[step]]
name = "resume paused"
action = "resume"
on_failure = "continue"
targets = [{ state = "PAUSED" }]
"#,
    );
    let out = powerbook(&sim, dir.path())
        .args(["run", "mixed.toml", "--yes", "--journal", "j.jsonl"])
        .args(["--emit-restore", "restore.toml"])
        .args(TIMING)
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let now = states(&sim);
    let changed: Vec<&String> = now
        .iter()
        .filter(|(vm, s)| before[*vm] != **s)
        .map(|(vm, _)| vm)
        .collect();
    assert!(changed.len() >= 4, "the run changed little: {changed:?}");
    let restore = std::fs::read_to_string(dir.path().join("restore.toml")).unwrap();
    // `restore JOURNAL` writes the same runbook.
    let again = powerbook(&sim, dir.path())
        .args(["restore", "j.jsonl"])
        .output()
        .unwrap();
    assert_eq!(stdout(&again), restore);
    let valid = powerbook(&sim, dir.path())
        .args(["validate", "--strict", "restore.toml"])
        .output()
        .unwrap();
    assert_eq!(valid.status.code(), Some(0), "{}\n{restore}", text(&valid));
    let undo = powerbook(&sim, dir.path())
        .args(["run", "restore.toml", "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(undo.status.code(), Some(0), "{}\n{restore}", text(&undo));
    assert_eq!(states(&sim), before, "{restore}");
}

// ---------------------------------------------------------------------------------------
// Resume rules
// ---------------------------------------------------------------------------------------

#[test]
fn a_changed_runbook_is_refused_unless_forced() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(4, 50))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = write(
        dir.path(),
        "r.toml",
        "name = \"x\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    let out = powerbook(&sim, dir.path())
        .args(["run", "r.toml", "--yes", "--journal", "j.jsonl"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(&rb, std::fs::read_to_string(&rb).unwrap() + "# edited\n").unwrap();
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("changed since the journal was written"));
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes", "--force"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains("Nothing to resume"), "{}", text(&out));
    assert!(
        actions(&sim).values().all(|a| a == &["OFF"]),
        "nothing sent twice"
    );
}

#[test]
fn retry_failed_acts_again_only_on_the_failed_vms() {
    let rt = runtime();
    let mut config = generated(6, 50);
    config.vdcs[0].vapps[0].vms[2].forbidden = true;
    let sim = rt.block_on(SimHandle::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.toml",
        "name = \"x\"\n[[step]]\nname = \"off\"\naction = \"off\"\non_failure = \"continue\"\n\
         targets = [{ vm = \"vm-*\" }]\n",
    );
    let out = powerbook(&sim, dir.path())
        .args(["run", "r.toml", "--yes", "--journal", "j.jsonl"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failure stands: {}",
        text(&out)
    );
    let before = sim.stats().total_requests;
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes", "--retry-failed"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("1 failed to retry"), "{}", text(&out));
    assert!(
        sim.stats().total_requests > before,
        "the failed VM was tried again"
    );
    assert_eq!(actions(&sim).len(), 5);
    assert!(actions(&sim).values().all(|a| a == &["OFF"]));
}

/// The journal as a crash right after the intents of `steps` would leave it: for those
/// steps only the intents (`vm_acting`) are kept, and the run has no end.
fn cut_after_intents(full: &str, steps: &[usize]) -> String {
    use powerbook::exec::event::Event;
    let mut kept = String::new();
    for line in full.lines() {
        let rec: Record = serde_json::from_str(line).unwrap();
        let drop = match &rec {
            Record::Event { event, .. } => match event {
                Event::VmActing { .. } | Event::RunStarted { .. } => false,
                Event::TaskAccepted { step, .. }
                | Event::TaskFinished { step, .. }
                | Event::StepFinished { step, .. }
                | Event::StepStarted { step, .. }
                | Event::WaveStarted { step, .. }
                | Event::VmStarted { step, .. } => steps.contains(step),
                Event::VmFinished { result } => steps.contains(&result.step),
                Event::RunFinished { .. } => true,
                _ => false,
            },
            _ => false,
        };
        if !drop {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

#[test]
fn an_unanswered_intent_is_adopted_if_its_task_exists_and_acted_on_only_if_not() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(4, 50))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "r.toml", OFF_ON_RESET);
    let out = powerbook(&sim, dir.path())
        .args(["run", "r.toml", "--yes", "--journal", "full.jsonl"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let full = std::fs::read_to_string(dir.path().join("full.jsonl")).unwrap();
    let cut = cut_after_intents(&full, &[1, 2]);

    // Same cloud: the ON and reset tasks exist, so they are adopted and nothing is sent.
    write(dir.path(), "cut.jsonl", &cut);
    let out = powerbook(&sim, dir.path())
        .args(["resume", "cut.jsonl", "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("8 to check before acting"),
        "{}",
        text(&out)
    );
    assert!(actions(&sim).values().all(|a| a == &["OFF", "ON", "reset"]));

    // A cloud where none of those requests arrived (a fresh simulator, every VM ON, no
    // tasks): `on` is skipped since the VMs already are ON; the reset is sent, once.
    let fresh = rt.block_on(SimHandle::start(generated(4, 50))).unwrap();
    write(
        dir.path(),
        "elsewhere.jsonl",
        &cut.replace(sim.base_url(), fresh.base_url()),
    );
    let out = powerbook(&fresh, dir.path())
        .args(["resume", "elsewhere.jsonl", "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let acts = actions(&fresh);
    assert_eq!(acts.len(), 4);
    assert!(acts.values().all(|a| a == &["reset"]), "{acts:?}");
}

// ---------------------------------------------------------------------------------------
// History, torn journals, secrets
// ---------------------------------------------------------------------------------------

#[test]
fn runs_lists_journals_and_show_prints_the_table_the_run_printed() {
    let rt = runtime();
    let secret = "Pw-Journal-5e1c";
    let mut config = generated(5, 50);
    config.vdcs[0].vapps[0].vms[1].forbidden = true;
    config.users = vec![SimUser {
        name: "operator".into(),
        password: secret.into(),
    }];
    let sim = rt.block_on(SimHandle::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "h.toml",
        "name = \"history\"\n[[step]]\nname = \"off\"\naction = \"off\"\non_failure = \"continue\"\n\
         targets = [{ vm = \"vm-*\" }]\n",
    );
    let run = powerbook(&sim, dir.path())
        .env("ABIQUO_API_USERNAME", "operator")
        .env("ABIQUO_API_PASSWORD", secret)
        .args(["run", "h.toml", "--yes", "--runs-dir", "hist"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("hist"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let journal = std::fs::read_to_string(&files[0]).unwrap();
    assert!(!journal.contains(secret), "the password is in the journal");
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("history-") && name.ends_with("Z.jsonl"),
        "{name}"
    );

    let list = powerbook(&sim, dir.path())
        .args(["runs", "--runs-dir", "hist"])
        .output()
        .unwrap();
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let row = stdout(&list)
        .lines()
        .find(|l| l.contains("history"))
        .unwrap_or_default()
        .to_owned();
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).collect();
    assert_eq!(&cells[4..9], ["4", "1", "0", "0", "failed"], "{row}");
    let show = powerbook(&sim, dir.path())
        .args(["runs", "show"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert_eq!(stdout(&show), stdout(&run));
    // JSON listing for scripts.
    let json = powerbook(&sim, dir.path())
        .env("POWERBOOK_RUNS_DIR", "hist")
        .args(["runs", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["counts"]["ok"], 4);
    assert_eq!(v[0]["not_done"], 0);
    assert_eq!(v[0]["status"], "failed");
}

#[test]
fn a_torn_last_record_is_reported_and_resume_still_works() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(3, 50))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t.toml",
        "name = \"torn\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    let out = powerbook(&sim, dir.path())
        .args(["run", "t.toml", "--yes", "--journal", "j.jsonl"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let path = dir.path().join("j.jsonl");
    // As if the crash came right after the first task was accepted, mid-way through a write.
    let full = std::fs::read_to_string(&path).unwrap();
    let end = full.find("\"task_accepted\"").unwrap();
    let end = end + full[end..].find('\n').unwrap() + 1;
    let mut bytes = full.as_bytes()[..end].to_vec();
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"record":"event","at_ms":1,"event":{"event":"vm_sta"#);
    std::fs::write(&path, &bytes).unwrap();
    let show = powerbook(&sim, dir.path())
        .args(["runs", "show", "j.jsonl"])
        .output()
        .unwrap();
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert!(stderr(&show).contains(TORN_NOTE), "{}", text(&show));
    let list = powerbook(&sim, dir.path())
        .args(["runs", "--runs-dir", ".", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["status"], "incomplete", "{v}");
    assert_eq!(v[0]["not_done"], 3, "{v}");
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains(TORN_NOTE));
    let after = std::fs::read(&path).unwrap();
    assert!(after.len() > whole);
    let j = powerbook::journal::load(&path).unwrap();
    assert!(!j.torn, "the torn tail was cut before appending");
    assert!(actions(&sim).values().all(|a| a == &["OFF"]));
}

// ---------------------------------------------------------------------------------------
// Executor
// ---------------------------------------------------------------------------------------

#[test]
fn a_step_that_ends_at_once_does_not_stall_the_steps_after_it() {
    // Every VM of the first step is excluded, so it finishes before the next step waits.
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(3, 50))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "x.toml",
        r#"
name = "instant first step"
[[step]]
name = "nothing"
action = "off"
targets = [{ vm = "vm-*" }]
exclude = [{ vm = "vm-*" }]
[[step]]
name = "off"
action = "off"
targets = [{ vm = "vm-*" }]
"#,
    );
    let child = powerbook(&sim, dir.path())
        .args(["run", "x.toml", "--yes"])
        .args(TIMING)
        .spawn()
        .unwrap();
    let out = wait(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(actions(&sim).len(), 3);
}

#[test]
fn resuming_a_finished_run_sends_nothing_and_shows_its_results() {
    let rt = runtime();
    let sim = rt.block_on(SimHandle::start(generated(3, 50))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "f.toml",
        "name = \"done\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    let run = powerbook(&sim, dir.path())
        .args(["run", "f.toml", "--yes", "--journal", "j.jsonl"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let requests = sim.stats().total_requests;
    // Run again: everything is skipped, so the restore runbook is left out with a note.
    let again = powerbook(&sim, dir.path())
        .args(["run", "f.toml", "--yes", "--journal", "again.jsonl"])
        .args(["--emit-restore", "undo.toml"])
        .args(TIMING)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(stderr(&again).contains("touched no VM"), "{}", text(&again));
    assert!(!dir.path().join("undo.toml").exists());
    let requests_after_rerun = sim.stats().total_requests;
    assert!(requests_after_rerun > requests);
    let requests = requests_after_rerun;
    let out = powerbook(&sim, dir.path())
        .args(["resume", "j.jsonl", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains("Nothing to resume"), "{}", text(&out));
    assert_eq!(stdout(&out), stdout(&run));
    assert_eq!(sim.stats().total_requests, requests, "not even a login");
}
