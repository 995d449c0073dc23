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
    assert_eq!(json["version"], 1);
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
fn help_and_readme_document_the_exit_codes() {
    let mut help = powerbook().args(["validate", "--help"]).success();
    for line in [
        "Exit codes:",
        "  0    success",
        "  1    the run finished but some VMs failed",
        "  2    usage error or invalid runbook",
        "  3    run aborted",
        "  130  interrupted",
    ] {
        help = help.stdout_contains(line);
    }
    help.run();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for row in ["| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"] {
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
