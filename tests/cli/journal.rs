//! Journal, resume, restore and run history against the in-process simulator: the real
//! binary is killed (SIGKILL, SIGINT) mid-run and resumed while the simulator lives on.
//! Long because it is one command family's whole acceptance suite.

use crate::support::{Output, Test, wait_until};
use powerbook::abiquo::model::VmState;
use powerbook::journal::{Record, RunView, TORN_NOTE};
use powerbook::sim::SimUser;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A test with `n` generated VMs whose tasks take ~`ms` ms.
fn cloud(n: usize, ms: u64) -> Test {
    Test::new().generated(n, ms)
}

fn states(t: &Test) -> BTreeMap<String, (VmState, Option<bool>)> {
    t.sim()
        .vm_states()
        .into_iter()
        .map(|v| (v.name, (v.state, v.deallocated)))
        .collect()
}

fn text(out: &Output) -> String {
    out.context()
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
    let mut killed_mid_run = 0;
    for seed in [1u64, 2, 3, 4, 5] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Slow answers widen the window between a request and its answer, so that kills
        // also land after an intent was recorded but before its task link was.
        let t = cloud(18, 120)
            .faults(|f| {
                f.slow = 0.15;
                f.slow_delay = Duration::from_millis(200);
            })
            .runbook(OFF_ON_RESET);
        let journal = t.path("run.jsonl");
        for attempt in 0.. {
            assert!(attempt < 5, "seed {seed}: never got past planning");
            let mut child = t
                .clone()
                .args(["run", "runbook.toml", "--yes", "--journal"])
                .arg(&journal)
                .fast_polling()
                .spawn();
            std::thread::sleep(Duration::from_millis(rng.random_range(150..2500)));
            let running = child.is_running();
            child.kill(); // SIGKILL
            let planned =
                powerbook::journal::load(&journal).is_ok_and(|j| RunView::of(&j).plan.is_some());
            if planned {
                killed_mid_run += usize::from(running);
                break;
            }
            // Killed before the plan was recorded: nothing can have been sent.
            assert!(t.stats().mutations.is_empty(), "seed {seed}");
            let _ = std::fs::remove_file(&journal);
        }
        // Resume until done; the first resume of odd seeds is itself killed.
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= 4, "seed {seed}: resume does not finish");
            let resume = t
                .clone()
                .args(["resume", "run.jsonl", "--yes"])
                .fast_polling();
            if rounds == 1 && seed % 2 == 1 {
                let child = resume.spawn();
                std::thread::sleep(Duration::from_millis(rng.random_range(100..1200)));
                child.kill();
                continue;
            }
            resume.success().run();
            break;
        }
        for (vm, (state, _)) in states(&t) {
            assert_eq!(state, VmState::On, "seed {seed}: {vm}");
        }
        let acts = t.actions();
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
    // The binary's own journal directory (relative to where it runs) is what it prints.
    let t = cloud(12, 600).env_remove("POWERBOOK_RUNS_DIR").file(
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
    let child = t
        .clone()
        .args(["run", "c.toml", "--yes"])
        .fast_polling()
        .spawn();
    wait_until("the run starts", Duration::from_secs(20), || {
        !t.stats().mutations.is_empty()
    });
    // A resume while the run is still going is refused before it sends anything.
    let runs: Vec<PathBuf> = std::fs::read_dir(t.path(".powerbook/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    t.clone()
        .args(["resume", "--yes"])
        .arg(&runs[0])
        .code(2)
        .stderr_contains("is the run still going?")
        .run();
    child.interrupt();
    let out = child.wait();
    assert_eq!(out.code, 130, "{}", text(&out));
    let so = &out.stdout;
    let in_flight = t.stats().mutations.len();
    assert!(in_flight < 12, "stopped early: {in_flight}");
    // Drained: every accepted task was followed to its end.
    assert!(so.contains(&format!("{in_flight} ok")), "{}", text(&out));
    let last = so.lines().last().unwrap_or_default();
    let prefix = "Resume with: powerbook resume .powerbook/runs/interrupt-me-";
    assert!(last.starts_with(prefix), "{}", text(&out));
    let journal = last.trim_start_matches("Resume with: powerbook resume ");
    t.clone()
        .args(["resume", journal, "--yes"])
        .fast_polling()
        .success()
        .stderr_contains(format!("{in_flight} VMs done (not touched)"))
        // Progress counts the VMs the first run finished as done.
        .stderr_contains("step 'all off' finished: 12 ok, 0 skipped, 0 failed, 0 not done")
        .actions_per_vm(&["OFF"])
        .mutations(12)
        .run();
    assert!(states(&t).values().all(|(s, _)| *s == VmState::Off));
}

#[test]
fn restore_runbook_validates_and_returns_every_vm_to_its_state_before() {
    let t = Test::new().lab(20.0);
    let before = states(&t);
    let t = t.file(
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
    let out = t
        .clone()
        .args(["run", "mixed.toml", "--yes", "--journal", "j.jsonl"])
        .args(["--emit-restore", "restore.toml"])
        .fast_polling()
        .run();
    assert!(matches!(out.code, 0 | 1), "{}", text(&out));
    let now = states(&t);
    let changed: Vec<&String> = now
        .iter()
        .filter(|(vm, s)| before[*vm] != **s)
        .map(|(vm, _)| vm)
        .collect();
    assert!(changed.len() >= 4, "the run changed little: {changed:?}");
    let restore = t.read("restore.toml");
    // `restore JOURNAL` writes the same runbook.
    let again = t.clone().args(["restore", "j.jsonl"]).run();
    assert_eq!(again.stdout, restore);
    let valid = t
        .clone()
        .args(["validate", "--strict", "restore.toml"])
        .run();
    assert_eq!(valid.code, 0, "{}\n{restore}", text(&valid));
    let undo = t
        .clone()
        .args(["run", "restore.toml", "--yes"])
        .fast_polling()
        .run();
    assert_eq!(undo.code, 0, "{}\n{restore}", text(&undo));
    assert_eq!(states(&t), before, "{restore}");
}

// ---------------------------------------------------------------------------------------
// Resume rules
// ---------------------------------------------------------------------------------------

#[test]
fn a_changed_runbook_is_refused_unless_forced() {
    let t = cloud(4, 50).file(
        "r.toml",
        "name = \"x\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    t.clone()
        .args(["run", "r.toml", "--yes", "--journal", "j.jsonl"])
        .fast_polling()
        .success()
        .run();
    t.write("r.toml", &(t.read("r.toml") + "# edited\n"));
    t.clone()
        .args(["resume", "j.jsonl", "--yes"])
        .code(2)
        .stderr_contains("changed since the journal was written")
        .run();
    // Nothing sent twice.
    t.clone()
        .args(["resume", "j.jsonl", "--yes", "--force"])
        .fast_polling()
        .success()
        .stderr_contains("Nothing to resume")
        .actions_per_vm(&["OFF"])
        .run();
}

#[test]
fn retry_failed_acts_again_only_on_the_failed_vms() {
    let t = cloud(6, 50)
        .configure(|c| c.vdcs[0].vapps[0].vms[2].forbidden = true)
        .file(
            "r.toml",
            "name = \"x\"\n[[step]]\nname = \"off\"\naction = \"off\"\non_failure = \"continue\"\n\
             targets = [{ vm = \"vm-*\" }]\n",
        );
    t.clone()
        .args(["run", "r.toml", "--yes", "--journal", "j.jsonl"])
        .fast_polling()
        .failure()
        .run();
    // The failure stands.
    t.clone()
        .args(["resume", "j.jsonl", "--yes"])
        .fast_polling()
        .failure()
        .run();
    let before = t.stats().total_requests;
    t.clone()
        .args(["resume", "j.jsonl", "--yes", "--retry-failed"])
        .fast_polling()
        .failure()
        .stderr_contains("1 failed to retry")
        .actions_per_vm(&["OFF"])
        .mutations(5)
        .run();
    assert!(
        t.stats().total_requests > before,
        "the failed VM was tried again"
    );
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
    let t = cloud(4, 50).file("r.toml", OFF_ON_RESET);
    t.clone()
        .args(["run", "r.toml", "--yes", "--journal", "full.jsonl"])
        .fast_polling()
        .success()
        .run();
    let cut = cut_after_intents(&t.read("full.jsonl"), &[1, 2]);

    // Same cloud: the ON and reset tasks exist, so they are adopted and nothing is sent.
    t.write("cut.jsonl", &cut);
    t.clone()
        .args(["resume", "cut.jsonl", "--yes"])
        .fast_polling()
        .success()
        .stderr_contains("8 to check before acting")
        .actions_per_vm(&["OFF", "ON", "reset"])
        .run();

    // A cloud where none of those requests arrived (a fresh simulator, every VM ON, no
    // tasks): `on` is skipped since the VMs already are ON; the reset is sent, once.
    let fresh = t.other_cloud().generated(4, 50);
    fresh.write(
        "elsewhere.jsonl",
        &cut.replace(t.sim().base_url(), fresh.sim().base_url()),
    );
    fresh
        .clone()
        .args(["resume", "elsewhere.jsonl", "--yes"])
        .fast_polling()
        .success()
        .mutations(4)
        .actions_per_vm(&["reset"])
        .run();
}

// ---------------------------------------------------------------------------------------
// History, torn journals, secrets
// ---------------------------------------------------------------------------------------

#[test]
fn runs_lists_journals_and_show_prints_the_table_the_run_printed() {
    let secret = "Pw-Journal-5e1c";
    let t = cloud(5, 50)
        .configure(|c| {
            c.vdcs[0].vapps[0].vms[1].forbidden = true;
            c.users = vec![SimUser {
                name: "operator".into(),
                password: secret.into(),
            }];
        })
        .file(
            "h.toml",
            "name = \"history\"\n[[step]]\nname = \"off\"\naction = \"off\"\non_failure = \"continue\"\n\
             targets = [{ vm = \"vm-*\" }]\n",
        );
    let run = t
        .clone()
        .env("ABIQUO_API_USERNAME", "operator")
        .env("ABIQUO_API_PASSWORD", secret)
        .args(["run", "h.toml", "--yes", "--runs-dir", "hist"])
        .fast_polling()
        .failure()
        .run();
    let files: Vec<PathBuf> = std::fs::read_dir(t.path("hist"))
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

    let list = t
        .clone()
        .args(["runs", "--runs-dir", "hist"])
        .success()
        .run();
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains("history"))
        .unwrap_or_default()
        .to_owned();
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).collect();
    assert_eq!(&cells[4..9], ["4", "1", "0", "0", "failed"], "{row}");
    let show = t
        .clone()
        .args(["runs", "show"])
        .arg(&files[0])
        .success()
        .run();
    assert_eq!(show.stdout, run.stdout);
    // JSON listing for scripts.
    let v: serde_json::Value = t
        .clone()
        .env("POWERBOOK_RUNS_DIR", "hist")
        .args(["runs", "--output", "json"])
        .run()
        .json();
    assert_eq!(
        (v["format"].as_u64(), v["kind"].as_str()),
        (Some(1), Some("runs"))
    );
    assert_eq!(v["runs"][0]["counts"]["ok"], 4);
    assert_eq!(v["runs"][0]["not_done"], 0);
    assert_eq!(v["runs"][0]["status"], "failed");
}

#[test]
fn a_torn_last_record_is_reported_and_resume_still_works() {
    let t = cloud(3, 50).file(
        "t.toml",
        "name = \"torn\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    t.clone()
        .args(["run", "t.toml", "--yes", "--journal", "j.jsonl"])
        .fast_polling()
        .success()
        .run();
    let path = t.path("j.jsonl");
    // As if the crash came right after the first task was accepted, mid-way through a write.
    let full = t.read("j.jsonl");
    let end = full.find("\"task_accepted\"").unwrap();
    let end = end + full[end..].find('\n').unwrap() + 1;
    let mut bytes = full.as_bytes()[..end].to_vec();
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"record":"event","at_ms":1,"event":{"event":"vm_sta"#);
    std::fs::write(&path, &bytes).unwrap();
    t.clone()
        .args(["runs", "show", "j.jsonl"])
        .success()
        .stderr_contains(TORN_NOTE)
        .run();
    let v: serde_json::Value = t
        .clone()
        .args(["runs", "--runs-dir", ".", "--output", "json"])
        .run()
        .json();
    assert_eq!(v["runs"][0]["status"], "crashed", "{v}");
    assert_eq!(v["runs"][0]["not_done"], 3, "{v}");
    t.clone()
        .args(["resume", "j.jsonl", "--yes"])
        .fast_polling()
        .success()
        .stderr_contains(TORN_NOTE)
        .actions_per_vm(&["OFF"])
        .run();
    let after = std::fs::read(&path).unwrap();
    assert!(after.len() > whole);
    let j = powerbook::journal::load(&path).unwrap();
    assert!(!j.torn, "the torn tail was cut before appending");
}

// ---------------------------------------------------------------------------------------
// Executor
// ---------------------------------------------------------------------------------------

#[test]
fn a_step_that_ends_at_once_does_not_stall_the_steps_after_it() {
    // Every VM of the first step is excluded, so it finishes before the next step waits.
    cloud(3, 50)
        .file(
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
        )
        .args(["run", "x.toml", "--yes"])
        .fast_polling()
        .timeout(Duration::from_secs(20))
        .success()
        .touched(&["vm-00001", "vm-00002", "vm-00003"])
        .run();
}

#[test]
fn resuming_a_finished_run_sends_nothing_and_shows_its_results() {
    let t = cloud(3, 50).file(
        "f.toml",
        "name = \"done\"\n[[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{ vm = \"vm-*\" }]\n",
    );
    let run = t
        .clone()
        .args(["run", "f.toml", "--yes", "--journal", "j.jsonl"])
        .fast_polling()
        .success()
        .run();
    let requests = t.stats().total_requests;
    // Run again: everything is skipped, so the restore runbook is left out with a note.
    t.clone()
        .args(["run", "f.toml", "--yes", "--journal", "again.jsonl"])
        .args(["--emit-restore", "undo.toml"])
        .fast_polling()
        .success()
        .stderr_contains("touched no VM")
        .run();
    assert!(!t.path("undo.toml").exists());
    let requests_after_rerun = t.stats().total_requests;
    assert!(requests_after_rerun > requests);
    let requests = requests_after_rerun;
    let out = t
        .clone()
        .args(["resume", "j.jsonl", "--yes"])
        .success()
        .stderr_contains("Nothing to resume")
        .run();
    assert_eq!(out.stdout, run.stdout);
    assert_eq!(t.stats().total_requests, requests, "not even a login");
}
