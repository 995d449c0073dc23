//! `powerbook plan`, `run --dry-run` and `run --plan FILE` against the in-process simulator
//! on loopback: every skip and refusal kind, GET-only planning, the JSON document against its
//! committed schema, `--strict`, and saved plans refused when the runbook or a VM changed.

use crate::support::{Test, root, wait_until};
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::abiquo::model::{PowerRequest, PowerState, VmState};
use powerbook::sim::SimStats;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// A test whose simulator serves `inventory`.
fn start(inventory: &str) -> Test {
    Test::new().inventory(inventory)
}

fn run<I, S>(t: &Test, args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let out = t.clone().args(args).run();
    (out.code, out.stdout, out.stderr)
}

/// `run` with fast polling.
const FAST: [&str; 7] = [
    "--yes",
    "--poll-initial",
    "20ms",
    "--poll-max",
    "100ms",
    "--lock-wait",
    "10s",
];

fn port_filters() -> Vec<(&'static str, &'static str)> {
    vec![(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT")]
}

/// Every request between two stats snapshots was a GET and nothing was accepted.
fn assert_only_reads(before: &SimStats, after: &SimStats) {
    assert_eq!(
        before.mutation_count(),
        after.mutation_count(),
        "planning must not change anything"
    );
    let mut grown = Vec::new();
    for (key, n) in &after.requests {
        if *n > before.requests_to(key) {
            grown.push(key.clone());
        }
    }
    assert!(!grown.is_empty(), "no request reached the simulator");
    for key in grown {
        assert!(key.starts_with("GET "), "planning sent {key}");
    }
}

// ---------------------------------------------------------------------------------------
// Every skip and refusal kind
// ---------------------------------------------------------------------------------------

const KINDS_INVENTORY: &str = r#"
[settings]
task_duration = "100ms"
task_jitter = "20ms"
[settings.durations]
on = "60s"                     # the task that keeps `busy` LOCKED for the whole test

[[vdc]]
name = "dc1"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "web"
    [[vdc.vapp.vm]]
    name = "web-01"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-02"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-03"
    state = "OFF"
    [[vdc.vapp.vm]]
    name = "web-04"
    state = "ON"
    protected = true
    protected_cause = "Carries the SAN tunnel"
    [[vdc.vapp.vm]]
    name = "web-05"
    state = "ON"
  [[vdc.vapp]]
  name = "misc"
    [[vdc.vapp.vm]]
    name = "never-deployed"
    state = "NOT_ALLOCATED"
    [[vdc.vapp.vm]]
    name = "paused"
    state = "PAUSED"
    [[vdc.vapp.vm]]
    name = "stopped"
    state = "OFF"
    [[vdc.vapp.vm]]
    name = "busy"
    state = "OFF"

[[vdc]]
name = "az"
hypervisor = "AZURE"
  [[vdc.vapp]]
  name = "cloud"
    [[vdc.vapp.vm]]
    name = "az-01"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "az-02"
    state = "OFF"
    deallocated = true
"#;

const KINDS_RUNBOOK: &str = r#"
name = "every kind"

[limits]
concurrency = 10
max_failures = 5

[estimates]
off = "2s"

[[step]]
name = "web off"
action = "off"
targets = [{ vapp = "web" }, { vm = "never-deployed" }]
exclude = [{ vm = "web-05" }]
waves = { size = 1, pause = "1s" }
max_failures = "50%"

[[step]]
name = "reset misc"
after = []
action = "reset"
targets = [{ vm = "stopped" }, { vm = "paused" }, { vm = "never-deployed" }]

[[step]]
name = "pause stopped"
action = "pause"
targets = [{ vm = "stopped" }]
on_failure = "continue"

[[step]]
name = "start busy"
after = ["web off"]
action = "on"
expected_duration = "45s"
targets = [{ vm = "busy" }]

[[step]]
name = "dealloc"
after = ["web off"]
action = "deallocate"
targets = [{ vm = "az-*" }, { vm = "web-01" }]

[[step]]
name = "nothing"
after = ["dealloc"]
action = "on"
targets = [{ vm = "db-*" }]
"#;

/// Starts a POWER_ON that keeps `busy` LOCKED for a minute (a mutation made before planning).
fn lock_busy(t: &Test) {
    let sim = t.sim();
    t.block_on(async {
        let client = Client::new(ClientConfig::new(
            sim.base_url(),
            "5.0",
            Credentials::Basic {
                user: "admin".into(),
                password: "xabiquo".into(),
            },
        ))
        .unwrap();
        client.login().await.unwrap();
        let vms = client.list_vms().await.unwrap();
        let busy = vms.iter().find(|v| &*v.name == "busy").unwrap().to_vm();
        client
            .power(
                &busy,
                PowerRequest::State {
                    target: PowerState::On,
                    graceful: false,
                },
            )
            .await
            .unwrap();
    });
    let state = sim.vm_states().into_iter().find(|v| v.name == "busy");
    assert_eq!(state.map(|v| v.state), Some(VmState::Locked));
    // Plans name the holder's state: wait until it is past PENDING so it stays the same.
    wait_until("the task starts", Duration::from_secs(10), || {
        sim.stats().mutations["busy"][0].started_ms.is_some()
    });
}

#[test]
fn plan_shows_every_skip_and_refusal_kind_and_sends_only_gets() {
    let t = start(KINDS_INVENTORY);
    let sim = t.sim();
    lock_busy(&t);
    let rb = t.write("kinds.toml", KINDS_RUNBOOK);
    let before = sim.stats();
    let (code, stdout, stderr) = run(&t, ["plan".as_ref(), rb.as_os_str()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_only_reads(&before, &sim.stats());
    for needle in [
        "ON → OFF (hard)",
        "skip: already OFF",
        "skip: protected (Carries the SAN tunnel)",
        "skip: excluded",
        "skip: not deployed (NOT_ALLOCATED)",
        "REFUSED VM-26: The allowed power state for resetting a virtual",
        "REFUSED VM-11",
        "REFUSED VM-4",
        "REFUSED: LOCKED by a running POWER_ON task",
        "REFUSED: deallocate needs an Azure VM (hypervisor KVM)",
        "skip: already deallocated",
        "ON → OFF (deallocated)",
        "(no VM matches this step's targets)",
        "abort at 6 failures of 12 (limits.max_failures = 5)",
    ] {
        assert!(stdout.contains(needle), "stdout lacks {needle:?}\n{stdout}");
    }
    assert!(
        stderr.contains("warning: step 'nothing' matches no VM"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the 6 refusals alone reach the run-wide threshold"),
        "{stderr}"
    );
    insta::with_settings!({ filters => port_filters() }, {
        insta::assert_snapshot!("plan_every_kind", stdout);
    });
}

#[test]
fn plan_json_matches_its_committed_schema_and_dry_run_is_the_same_plan() {
    let t = start(KINDS_INVENTORY);
    let sim = t.sim();
    lock_busy(&t);
    let rb = t.write("kinds.toml", KINDS_RUNBOOK);
    let before = sim.stats();
    let (code, stdout, stderr) = run(
        &t,
        [
            "plan".as_ref(),
            rb.as_os_str(),
            "--output".as_ref(),
            "json".as_ref(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    let schema_text = std::fs::read_to_string(root().join("runbooks/plan.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "plan JSON breaks its schema: {errors:#?}"
    );
    // The schema has teeth: a wrong disposition kind is rejected.
    let mut broken = doc.clone();
    broken["plan"]["steps"][0]["targets"][0]["disposition"]["kind"] = "maybe".into();
    assert!(!validator.is_valid(&broken));

    assert_eq!(doc["format"], 1);
    assert_eq!(doc["plan"]["format"], 2);
    let kinds: BTreeSet<String> = doc["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["targets"].as_array().unwrap().clone())
        .map(|t| {
            let d = &t["disposition"];
            match d["code"].as_str() {
                Some(code) => format!("{}:{code}", d["kind"].as_str().unwrap()),
                None => d["kind"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    let want: BTreeSet<String> = [
        "act",
        "skip",
        "excluded",
        "protected",
        "refuse",
        "refuse:VM-4",
        "refuse:VM-11",
        "refuse:VM-26",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds, want);
    // An acting VM: the typed transition, and the same words as the human plan.
    let web_01 = doc["plan"]["steps"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["vm"]["name"] == "web-01")
        .unwrap();
    assert_eq!(
        web_01["disposition"],
        serde_json::json!({
            "kind": "act",
            "from": "ON",
            "to": "OFF",
            "request": { "kind": "state", "target": "OFF", "graceful": false },
            "transition": "ON → OFF (hard)",
        })
    );
    assert_eq!(doc["totals"]["refuse"], 6);
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"refused") && warnings.contains(&"empty_step"));
    let run_threshold = &doc["thresholds"][0];
    assert_eq!(run_threshold["abort_at"], 6);
    assert_eq!(run_threshold["of"], 12);
    let steps = doc["estimate"]["steps"].as_array().unwrap();
    let source = |name: &str| {
        steps.iter().find(|s| s["name"] == name).unwrap()["task_source"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(source("web off"), "runbook");
    assert_eq!(source("start busy"), "step");
    assert_eq!(source("reset misc"), "default");
    assert!(doc["estimate"]["api_requests"].as_u64().unwrap() > 0);

    // `run --dry-run` is the same plan.
    let (code, dry, stderr) = run(
        &t,
        [
            "run".as_ref(),
            rb.as_os_str(),
            "--dry-run".as_ref(),
            "--output".as_ref(),
            "json".as_ref(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let mut dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let mut plain = doc.clone();
    for d in [&mut dry, &mut plain] {
        d["plan"]["created_at"] = serde_json::Value::Null;
    }
    assert_eq!(dry, plain);
    assert_only_reads(&before, &sim.stats());
}

// ---------------------------------------------------------------------------------------
// --strict
// ---------------------------------------------------------------------------------------

#[test]
fn strict_fails_a_plan_with_warnings_and_passes_a_clean_one() {
    let t = start(KINDS_INVENTORY);
    let sim = t.sim();
    let noisy = t.write("noisy.toml", KINDS_RUNBOOK);
    let (code, _, stderr) = run(
        &t,
        ["plan".as_ref(), noisy.as_os_str(), "--strict".as_ref()],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error: --strict: the plan has"), "{stderr}");
    let clean = t.write(
        "clean.toml",
        r#"
name = "clean"
[[step]]
name = "web off"
action = "off"
targets = [{ vapp = "web", state = "ON" }]
allow_protected = true
"#,
    );
    let (code, stdout, stderr) = run(
        &t,
        ["plan".as_ref(), clean.as_os_str(), "--strict".as_ref()],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("WARNINGS"), "{stdout}");
    assert!(stdout.contains("4 to act on"), "{stdout}");
    assert_eq!(sim.stats().mutation_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Saved plans: run --plan FILE
// ---------------------------------------------------------------------------------------

const SMALL_INVENTORY: &str = r#"
[settings]
task_duration = "100ms"
task_jitter = "20ms"

[[vdc]]
name = "dc1"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "web"
    [[vdc.vapp.vm]]
    name = "web-01"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-02"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "web-03"
    state = "OFF"
  [[vdc.vapp]]
  name = "db"
    [[vdc.vapp.vm]]
    name = "db-01"
    state = "ON"
"#;

const SMALL_RUNBOOK: &str = r#"
name = "web off"
[[step]]
name = "web off"
action = "off"
targets = [{ vapp = "web" }]
"#;

/// Plans `SMALL_RUNBOOK` and saves it; returns (runbook path, plan path).
fn save_plan(t: &Test) -> (PathBuf, PathBuf) {
    let rb = t.write("web.toml", SMALL_RUNBOOK);
    let saved = t.path("plan.json");
    let (code, _, stderr) = run(
        t,
        [
            "plan".as_ref(),
            rb.as_os_str(),
            "--save".as_ref(),
            saved.as_os_str(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Plan saved to"), "{stderr}");
    (rb, saved)
}

#[test]
fn a_saved_plan_runs_exactly_its_vms_without_naming_the_runbook_again() {
    let t = start(SMALL_INVENTORY);
    let sim = t.sim();
    let (_, saved) = save_plan(&t);
    let (code, stdout, stderr) = run(
        &t,
        ["run", "--plan", saved.to_str().unwrap()]
            .into_iter()
            .chain(FAST),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("every planned VM is as the plan saw it"),
        "{stderr}"
    );
    let touched: Vec<String> = sim.stats().mutations.keys().cloned().collect();
    assert_eq!(touched, ["web-01", "web-02"]);
}

#[test]
fn a_saved_plan_is_refused_when_a_vm_changed_behind_its_back_unless_replan() {
    let t = start(SMALL_INVENTORY);
    let sim = t.sim();
    let (rb, saved) = save_plan(&t);
    assert!(sim.set_vm_state("web-02", VmState::Off));
    let args = |extra: &[&str]| -> Vec<String> {
        [
            "run",
            rb.to_str().unwrap(),
            "--plan",
            saved.to_str().unwrap(),
        ]
        .into_iter()
        .chain(FAST)
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
    };
    let (code, stdout, stderr) = run(&t, args(&[]));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("1 VM changed since the plan"), "{stderr}");
    assert!(stderr.contains("--replan"), "{stderr}");
    let row = stderr
        .lines()
        .find(|l| l.contains("web-02"))
        .unwrap_or_else(|| panic!("the stale VM is not listed:\n{stderr}"));
    assert!(row.contains("ON") && row.contains("OFF"), "{row}");
    assert!(!stderr.contains("web-01"), "only changed VMs are listed");
    assert_eq!(sim.stats().mutation_count(), 0, "nothing may be sent");
    insta::with_settings!({ filters => vec![(r"/[^ ]*/plan\.json", "[dir]/plan.json")] }, {
        insta::assert_snapshot!("stale_plan_refused", stderr);
    });

    let (code, stdout, stderr) = run(&t, args(&["--replan"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("--replan: planning again"), "{stderr}");
    let touched: Vec<String> = sim.stats().mutations.keys().cloned().collect();
    assert_eq!(touched, ["web-01"], "web-02 is already off now");
}

#[test]
fn a_saved_plan_is_refused_when_the_runbook_changed() {
    let t = start(SMALL_INVENTORY);
    let sim = t.sim();
    let (rb, saved) = save_plan(&t);
    std::fs::write(&rb, SMALL_RUNBOOK.replace("\"web\"", "\"db\"")).unwrap();
    let (code, stdout, stderr) = run(
        &t,
        ["run", "--plan", saved.to_str().unwrap()]
            .into_iter()
            .chain(FAST),
    );
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("changed since the plan"), "{stderr}");
    assert!(stderr.contains("make a new plan"), "{stderr}");
    assert_eq!(sim.stats().mutation_count(), 0);
}

#[test]
fn a_plan_saved_by_an_older_powerbook_is_refused_for_its_format() {
    let t = start(SMALL_INVENTORY);
    let sim = t.sim();
    let (rb, saved) = save_plan(&t);
    // Format 1: dispositions in words only, steps without what executing them needs.
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    doc["plan"]["format"] = 1.into();
    for step in doc["plan"]["steps"].as_array_mut().unwrap() {
        let step = step.as_object_mut().unwrap();
        step.remove("task_timeout_ms");
        step.remove("on_failure");
        for t in step["targets"].as_array_mut().unwrap() {
            let d = &mut t["disposition"];
            if d["kind"] == "act" {
                *d = serde_json::json!({ "kind": "act", "transition": d["transition"] });
            }
        }
    }
    std::fs::write(&saved, doc.to_string()).unwrap();
    let (code, _, stderr) = run(
        &t,
        [
            "run",
            rb.to_str().unwrap(),
            "--plan",
            saved.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("has plan format 1/1, this powerbook reads 1/2: make the plan again"),
        "{stderr}"
    );
    assert_eq!(sim.stats().mutation_count(), 0);
}

#[test]
fn a_file_that_is_not_a_saved_plan_is_a_usage_error() {
    let t = start(SMALL_INVENTORY);
    let rb = t.write("web.toml", SMALL_RUNBOOK);
    let bogus = t.write("bogus.json", "{\"format\": 1}");
    let (code, _, stderr) = run(
        &t,
        [
            "run",
            rb.to_str().unwrap(),
            "--plan",
            bogus.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a plan saved by"), "{stderr}");
    let (code, _, stderr) = run(&t, ["run", "--yes"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("name the RUNBOOK"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The example runbooks
// ---------------------------------------------------------------------------------------

#[test]
fn every_example_runbook_plans_against_the_lab_with_a_valid_document() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("runbooks/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut planned = 0;
    for entry in std::fs::read_dir(root().join("runbooks")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_none_or(|e| e != "toml")
            || !text.starts_with("#:schema ./runbook.schema.json")
        {
            continue;
        }
        let out = Test::new()
            .args(["plan", "--simulate", "--output", "json"])
            .arg(&path)
            .success()
            .run();
        let doc: serde_json::Value = out.json();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert!(
            doc["totals"]["act"].as_u64().unwrap() > 0,
            "{} acts on nothing in the lab",
            path.display()
        );
        planned += 1;
    }
    assert!(planned >= 4, "only {planned} example runbooks found");
}

#[test]
fn plan_learns_task_durations_from_earlier_runs_of_the_same_runbook() {
    let t = start(SMALL_INVENTORY);
    let sim = t.sim();
    let rb = t.write("web.toml", SMALL_RUNBOOK);
    let runs = t.path("runs");
    let runs_arg = runs.to_str().unwrap();
    let rb_arg = rb.to_str().unwrap();

    // Without history the step's duration is the built-in guess.
    let (code, out, err) = run(
        &t,
        ["plan", rb_arg, "--output", "json", "--runs-dir", runs_arg],
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["estimate"]["steps"][0]["task_source"], "default");

    // A real run writes its journal there; the next plan learns from it.
    let mut args = vec!["run", rb_arg, "--runs-dir", runs_arg];
    args.extend(FAST);
    let (code, _, err) = run(&t, args);
    assert_eq!(code, 0, "{err}");
    assert!(sim.set_vm_state("web-01", VmState::On));

    let (code, out, err) = run(
        &t,
        ["plan", rb_arg, "--output", "json", "--runs-dir", runs_arg],
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let step = &doc["estimate"]["steps"][0];
    assert_eq!(step["task_source"], "history", "{step}");
    assert_eq!(step["history_samples"], 2, "{step}");
    let task_ms = step["task_ms"].as_u64().unwrap();
    assert!(task_ms < 5_000, "learned {task_ms} ms for 100 ms tasks");
}

#[test]
fn plan_with_simulate_estimates_from_the_simulators_own_task_durations() {
    let t = Test::new().current_dir(root());
    let out = t
        .clone()
        .args([
            "plan",
            "runbooks/maintenance-shutdown.toml",
            "--simulate",
            "--output",
            "json",
        ])
        .code(0)
        .run();
    let doc: serde_json::Value = out.json();
    let steps = doc["estimate"]["steps"].as_array().unwrap();
    assert!(
        steps.iter().all(|s| s["task_source"] == "simulator"),
        "{steps:#?}"
    );
    // The lab's tasks take seconds (the runbook's [estimates] say minutes, for the cloud):
    // the README's first command runs this in about 20 s.
    let total = doc["estimate"]["total_ms"].as_u64().unwrap();
    assert!((10_000..40_000).contains(&total), "{total} ms");
}
