//! `powerbook validate` and `powerbook schema`: the broken-runbook corpus, the example
//! runbooks, exit codes, JSON output and the committed schema.

use crate::support::{Test, root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The binary run from the crate root, so paths in messages and snapshots are relative.
fn powerbook() -> Test {
    Test::new().current_dir(root())
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// The codes a fixture declares on its first line: `# expect: runbook::a, runbook::b`.
fn expected_codes(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or_default();
    let list = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("{} must start with `# expect: <codes>`", path.display()));
    list.split(',').map(|c| c.trim().to_owned()).collect()
}

fn codes(json: &serde_json::Value) -> BTreeSet<String> {
    json["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_broken_runbook_is_rejected_with_exact_located_diagnostics() {
    let files = toml_files(&root().join("tests/fixtures/invalid"));
    assert!(files.len() >= 30, "the corpus has {} files", files.len());
    let mut wrong_codes = Vec::new();
    for path in files {
        let rel = relative(&path);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();

        let json = powerbook()
            .args(["validate", "--strict", "--output", "json", &rel])
            .code(2)
            .run();
        let (found, expected) = (codes(&json.json()), expected_codes(&path));
        if found != expected {
            wrong_codes.push(format!("{rel}: expected {expected:?}, found {found:?}"));
        }

        let human = powerbook()
            .args(["validate", "--strict", &rel])
            .code(2)
            .stderr_contains(format!("[{rel}:"))
            .run();
        insta::assert_snapshot!(format!("invalid__{stem}"), human.transcript());
    }
    assert!(wrong_codes.is_empty(), "{}", wrong_codes.join("\n"));
}

#[test]
fn every_example_runbook_is_valid_without_warnings() {
    let examples: Vec<PathBuf> = toml_files(&root().join("runbooks"))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .starts_with("#:schema ./runbook.schema.json\n")
        })
        .collect();
    let names: BTreeSet<String> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "maintenance-shutdown.toml",
        "datacenter-restart.toml",
        "azure-deallocate.toml",
        "rolling-reset.toml",
    ] {
        assert!(
            names.contains(required),
            "runbooks/{required} is missing or lacks #:schema"
        );
    }
    let rels: Vec<String> = examples.iter().map(|p| relative(p)).collect();
    let mut validate = powerbook()
        .args(["validate", "--strict"])
        .args(&rels)
        .success()
        .stderr_lacks("runbook::");
    for rel in &rels {
        validate = validate.stdout_contains(format!("{rel}: valid\n"));
    }
    validate.run();
}

#[test]
fn the_issue_example_validates_unchanged() {
    powerbook()
        .args(["validate", "--strict", "tests/fixtures/issue-example.toml"])
        .success()
        .stdout_contains("tests/fixtures/issue-example.toml: valid\n")
        .run();
}

#[test]
fn warnings_pass_unless_strict() {
    let file = "tests/fixtures/invalid/conflicting-steps.toml";
    powerbook()
        .args(["validate", file])
        .success()
        .stdout_contains("valid (2 warnings)")
        .stderr_contains("⚠")
        .run();
    powerbook()
        .args(["validate", "--strict", file])
        .code(2)
        .stdout_contains("invalid (2 warnings) [--strict: warnings are errors]")
        .run();
}

#[test]
fn one_invalid_file_makes_the_whole_validation_fail() {
    powerbook()
        .args([
            "validate",
            "runbooks/rolling-reset.toml",
            "tests/fixtures/invalid/unknown-action.toml",
        ])
        .code(2)
        .stdout_contains("runbooks/rolling-reset.toml: valid\n")
        .stdout_contains("tests/fixtures/invalid/unknown-action.toml: invalid (2 errors)\n")
        .run();
}

#[test]
fn unreadable_file_is_an_invalid_runbook() {
    powerbook()
        .args(["validate", "tests/fixtures/no-such-runbook.toml"])
        .code(2)
        .stderr_contains("cannot read `tests/fixtures/no-such-runbook.toml`")
        .stdout_contains("no-such-runbook.toml: invalid (1 error)")
        .run();
}

#[test]
fn validate_without_files_is_a_usage_error() {
    powerbook()
        .arg("validate")
        .code(2)
        .stderr_contains("FILE")
        .run();
}

#[test]
fn json_output_lists_every_diagnostic_with_positions() {
    let out = powerbook()
        .args([
            "validate",
            "--output",
            "json",
            "tests/fixtures/invalid/many-errors-at-once.toml",
            "runbooks/maintenance-shutdown.toml",
        ])
        .code(2)
        .run();
    assert_eq!(out.stderr, "", "JSON mode writes nothing to stderr");
    let json: serde_json::Value = out.json();
    assert_eq!(json["format"], 1);
    assert_eq!(json["kind"], "validation");
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["valid"], false);
    assert_eq!(files[1]["file"], "runbooks/maintenance-shutdown.toml");
    assert_eq!(files[1]["valid"], true);
    assert_eq!(files[1]["diagnostics"], serde_json::json!([]));
    let first = &files[0]["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "runbook::zero-concurrency");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(6), Some(15))
    );
    assert_eq!(
        (first["end_line"].as_u64(), first["end_column"].as_u64()),
        (Some(6), Some(16))
    );
    insta::assert_snapshot!("json_many_errors", out.stdout);
}

#[test]
fn credentials_in_a_runbook_are_rejected_and_never_echoed() {
    let file = "tests/fixtures/invalid/credentials-in-api.toml";
    let broken = "tests/fixtures/invalid/credentials-in-broken-toml.toml";
    for args in [
        vec!["validate", file],
        vec!["validate", "--output", "json", file],
        vec!["validate", broken],
    ] {
        let mut validate = powerbook().args(args).code(2);
        for secret in ["hunter2", "eyJhbGciOi"] {
            validate = validate.stdout_lacks(secret).stderr_lacks(secret);
        }
        validate.run();
    }
    powerbook()
        .args(["validate", file])
        .stderr_contains("ABIQUO_API_PASSWORD")
        .run();
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = powerbook().arg("schema").success().run();
    let committed = std::fs::read_to_string(root().join("runbooks/runbook.schema.json")).unwrap();
    assert!(
        out.stdout == committed,
        "runbooks/runbook.schema.json is stale: regenerate it with\n  cargo run -- schema > runbooks/runbook.schema.json"
    );
    let schema: serde_json::Value = out.json();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["required"], serde_json::json!(["name", "step"]));
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn schema_inventory_prints_the_committed_inventory_schema_and_plain_schema_is_unchanged() {
    let out = powerbook().args(["schema", "--inventory"]).success().run();
    let committed = std::fs::read_to_string(root().join("runbooks/inventory.schema.json")).unwrap();
    assert!(
        out.stdout == committed,
        "runbooks/inventory.schema.json is stale"
    );
    let schema: serde_json::Value = out.json();
    assert_eq!(schema["title"], "powerbook simulator inventory");
    assert_eq!(schema["additionalProperties"], false);
    let runbook = powerbook().arg("schema").success().run();
    assert_ne!(runbook.stdout, out.stdout);
    assert!(runbook.stdout.contains("\"title\": \"powerbook runbook\""));
}

#[test]
fn help_and_readme_document_the_exit_codes() {
    // `powerbook --help` has every command's codes; each command's help has its own.
    let mut help = powerbook().args(["--help"]).success();
    for line in [
        "Exit codes:",
        "  0    success",
        "  1    the run finished but some VMs failed",
        "  2    usage error or invalid runbook",
        "  3    run aborted",
        "  4    declined",
        "  130  interrupted",
    ] {
        help = help.stdout_contains(line);
    }
    help.run();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for row in ["| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |", "| 130 |"] {
        assert!(readme.contains(row), "README lacks the exit code row {row}");
    }
    assert!(
        readme.contains("runbooks/README.md"),
        "README links the runbook reference"
    );
}

#[test]
fn the_complete_runbook_in_the_reference_is_valid() {
    let reference = std::fs::read_to_string(root().join("runbooks/README.md")).unwrap();
    let blocks: Vec<&str> = reference
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("#:schema") && b.contains("[[step]]"))
        .collect();
    assert!(!blocks.is_empty(), "the reference has a complete runbook");
    for block in blocks {
        if let Err(failure) = powerbook::runbook::parse("README.md", block) {
            panic!("{}", failure.render());
        }
    }
}

#[test]
fn a_closed_stdout_does_not_crash_validate_and_keeps_the_exit_code() {
    // The reader goes away before anything is written.
    powerbook()
        .args([
            "validate",
            "--output",
            "json",
            "tests/fixtures/invalid/many-errors-at-once.toml",
        ])
        .stdout_closed()
        .code(2)
        .stderr_lacks("panicked")
        .run();
}

// --- large and hostile runbooks --------------------------------------------------------

/// A chain: every step waits for the one before it, each on its own VM.
fn chain_runbook(steps: usize) -> String {
    let mut text = String::from("name = \"chain\"\n");
    for i in 0..steps {
        let after = if i == 0 {
            "[]".to_owned()
        } else {
            format!("[\"s{}\"]", i - 1)
        };
        text.push_str(&format!(
            "[[step]]\nname = \"s{i}\"\naction = \"on\"\ntargets = [{{ vm = \"vm-{i}\" }}]\nafter = {after}\n"
        ));
    }
    text
}

/// Parallel steps; step i acts with `action(i)` on the VMs of `selector(i)`.
fn parallel_runbook(
    steps: usize,
    action: impl Fn(usize) -> &'static str,
    selector: impl Fn(usize) -> String,
) -> String {
    let mut text = String::from("name = \"parallel\"\n");
    for i in 0..steps {
        text.push_str(&format!(
            "[[step]]\nname = \"s{i}\"\naction = \"{}\"\ntargets = [{}]\nafter = []\n",
            action(i),
            selector(i)
        ));
    }
    text
}

/// A debug build checks this many chained steps in a few seconds; the release binary checks
/// 100,000 in well under a second (figures in the CHANGELOG).
const CHAIN_STEPS: usize = 20_000;

#[test]
fn a_long_chain_of_steps_is_valid_and_checked_in_one_pass() {
    let t = Test::new().file("chain.toml", &chain_runbook(CHAIN_STEPS));
    let out = t
        .clone()
        .args(["validate", "--strict", "chain.toml"])
        .success()
        .stdout_contains("chain.toml: valid\n")
        .run();
    assert_eq!(out.stderr, "");
    // A cycle closed at the far end is found and drawn, not a stack overflow.
    let cycle = chain_runbook(CHAIN_STEPS).replacen(
        "after = []",
        &format!("after = [\"s{}\"]", CHAIN_STEPS - 1),
        1,
    );
    t.file("cycle.toml", &cycle)
        .args(["validate", "--output", "json", "cycle.toml"])
        .code(2)
        .stdout_contains("runbook::dependency-cycle")
        .stderr_lacks("overflow")
        .run();
}

#[test]
fn thousands_of_parallel_steps_with_conflicting_actions_are_one_warning() {
    let steps = 8_000;
    let text = parallel_runbook(
        steps,
        |i| ["on", "off"][i % 2],
        |_| "{ vm = \"vm-*\" }".to_owned(),
    );
    let t = Test::new().file("conflicts.toml", &text);
    let human = t
        .clone()
        .args(["validate", "conflicts.toml"])
        .success()
        .stdout_contains("conflicts.toml: valid (1 warning)\n")
        .stderr_contains(format!("{steps} steps can run at the same time"))
        .run();
    assert!(
        human.stderr.len() < 4_000,
        "{} bytes of diagnostics",
        human.stderr.len()
    );
    let json: serde_json::Value = t
        .args(["validate", "--output", "json", "conflicts.toml"])
        .success()
        .run()
        .json();
    let diagnostics = json["files"][0]["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0]["code"], "runbook::conflicting-steps");
    assert_eq!(
        diagnostics[0]["message"],
        format!(
            "{steps} steps can run at the same time and may select the same VMs with different \
             actions (off, on): `s0`, `s1`, `s2`, `s3`, `s4` and {} more",
            steps - 5
        )
    );
    assert_eq!(
        diagnostics[0]["line"], 5,
        "points at the first step's target"
    );
}

#[test]
fn many_diagnostics_are_capped_for_people_and_all_kept_in_json() {
    // 400 VMs, each switched on and off by two parallel steps: 400 separate conflicts.
    let pairs = 400;
    let text = parallel_runbook(
        pairs * 2,
        |i| ["on", "off"][i % 2],
        |i| format!("{{ vm = \"vm-{}\" }}", i / 2),
    );
    let t = Test::new().file("pairs.toml", &text);
    let human = t
        .clone()
        .args(["validate", "pairs.toml"])
        .success()
        .stdout_contains(format!("pairs.toml: valid ({pairs} warnings)\n"))
        .stderr_contains("steps `s0` (on) and `s1` (off) can run at the same time")
        .stderr_contains(format!(
            "… and {} more (all of them in `powerbook validate --output json`)\n",
            pairs - 50
        ))
        .stderr_lacks("`s100` (on)")
        .run();
    assert_eq!(
        human.stderr.matches("runbook::conflicting-steps").count(),
        50
    );
    let json: serde_json::Value = t
        .args(["validate", "--output", "json", "pairs.toml"])
        .success()
        .run()
        .json();
    assert_eq!(
        json["files"][0]["diagnostics"].as_array().unwrap().len(),
        pairs
    );
}

#[test]
fn values_under_secret_looking_keys_are_never_shown() {
    let text = r#"name = "secrets"

[api]
endpoint = "https://ops:url-pw-9z7@abiquo.example.com/api"
admin_password = "admin-pw-4k2"

[[step]]
name = "web down"
action = "shutdown"
targets = [{ vdc = "prod", vapp = "web-*", apiKey = "selector-key-8q1" }]

[step.secret]
x = "table-value-3m5"
nested = { deeper = ["array-value-6n0"] }

[[step]]
name = "db down"
action = "shutdown"
targets = [{ href = "ops:href-pw-2c8@abiquo.example.com/api/vm/1" }]
"#;
    let secrets = [
        "url-pw-9z7",
        "admin-pw-4k2",
        "selector-key-8q1",
        "table-value-3m5",
        "array-value-6n0",
        "href-pw-2c8",
    ];
    let t = Test::new().file("secrets.toml", text);
    for format in ["human", "json"] {
        let mut validate = t
            .clone()
            .args(["validate", "--output", format, "secrets.toml"])
            .code(2)
            .stdout_lacks("ops:");
        for secret in secrets {
            validate = validate.stdout_lacks(secret).stderr_lacks(secret);
        }
        let out = validate.run();
        let text = format!("{}{}", out.stdout, out.stderr);
        for key in ["admin_password", "apiKey", "secret"] {
            assert!(
                text.contains(&format!("`{key}`")),
                "{format}: `{key}` is named:\n{text}"
            );
        }
        assert!(
            text.contains("the API endpoint must not carry credentials"),
            "{text}"
        );
        assert!(
            text.contains("`href` is not an http(s) URL: `<redacted>@abiquo.example.com"),
            "{text}"
        );
    }
    // The rendered source still shows where the problem is, without the value.
    t.args(["validate", "secrets.toml"])
        .code(2)
        .stderr_contains("admin_password = ")
        .stderr_contains("****")
        .run();
}
