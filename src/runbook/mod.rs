//! Runbook language: parse TOML, validate strictly, report located diagnostics.
//!
//! Text → [`read`] (TOML tree → [`raw`] structs: syntax, unknown keys, types) → [`validate`]
//! (values, step graph, conflicts) → [`model::Runbook`]. Every problem found in a file is
//! reported at once, each with its `file:line:col`.

mod conflicts;
pub mod diagnostic;
mod graph;
pub mod lines;
pub mod model;
pub mod raw;
pub(crate) mod read;
pub mod schema;
mod validate;

pub use diagnostic::{Diagnostic, Failure, Severity};

use sha2::{Digest, Sha256};
use std::path::Path;

/// A valid runbook and the warnings found while validating it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub runbook: model::Runbook,
    pub warnings: Vec<Diagnostic>,
    /// The text with secret values blanked out: render the warnings against this one.
    pub source: String,
}

/// Parses and validates runbook text. `name` is the file name used in messages.
pub fn parse(name: &str, source: &str) -> Result<Loaded, Failure> {
    let read = read::read(source);
    let mut diagnostics = read.diagnostics;
    let mut secrets = read.secrets;
    let runbook = if read.syntax_failed {
        None
    } else {
        Some(validate::validate(
            &read.raw,
            sha256_hex(source.as_bytes()),
            &mut diagnostics,
            &mut secrets,
        ))
    };
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    let source = redact(source, &secrets);
    match runbook {
        Some(runbook) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded {
            runbook,
            warnings: diagnostics,
            source,
        }),
        _ => Err(Failure {
            name: name.to_owned(),
            source,
            diagnostics,
        }),
    }
}

/// Reads and parses a runbook file. Unreadable or non-UTF-8 files are a [`Failure`] too.
pub fn load(path: &Path) -> Result<Loaded, Failure> {
    let name = path.display().to_string();
    parse(&name, &read_source(path)?)
}

/// Loads a runbook for a command that will act on it. Prints warnings and errors to stderr
/// and returns `None` when the runbook is invalid (or, with `strict`, has warnings).
pub fn load_or_report(path: &Path, strict: bool) -> Option<model::Runbook> {
    let name = path.display().to_string();
    match read_source(path).and_then(|source| parse(&name, &source)) {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                diagnostic::to_stderr(&diagnostic::render(&name, &loaded.source, &loaded.warnings));
                if strict {
                    diagnostic::to_stderr(&format!(
                        "error: {name}: {} warning(s), and --strict treats warnings as errors\n",
                        loaded.warnings.len()
                    ));
                    return None;
                }
            }
            Some(loaded.runbook)
        }
        Err(failure) => {
            diagnostic::to_stderr(&failure.render());
            diagnostic::to_stderr(&format!("error: {failure}\n"));
            None
        }
    }
}

/// The file's text, or a [`Failure`] saying why it cannot be had.
pub(crate) fn read_source(path: &Path) -> Result<String, Failure> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Failure {
        name: name.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic {
            span: None,
            ..Diagnostic::error("runbook::io", 0..0, format!("cannot read `{name}`: {e}"))
        }],
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        Failure {
            name,
            source: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            diagnostics: vec![
                Diagnostic::error(
                    "runbook::encoding",
                    offset..offset,
                    "the runbook is not valid UTF-8",
                )
                .label("invalid byte here")
                .help("save the file as UTF-8"),
            ],
        }
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Blanks out secret values (every byte but line breaks becomes `*`, so spans stay valid).
pub(crate) fn redact(source: &str, secrets: &[std::ops::Range<usize>]) -> String {
    if secrets.is_empty() {
        return source.to_owned();
    }
    let mut bytes = source.as_bytes().to_vec();
    for span in secrets {
        for b in bytes.iter_mut().take(span.end).skip(span.start) {
            if *b != b'\n' && *b != b'\r' {
                *b = b'*';
            }
        }
    }
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::model::{Action, Amount, NameOrId, OnFailure, Order};
    use super::*;
    use crate::abiquo::model::VmState;
    use std::time::Duration;

    const ISSUE_EXAMPLE: &str = include_str!("../../tests/fixtures/issue-example.toml");

    #[test]
    fn issue_example_parses_into_the_model() {
        let loaded = parse("issue.toml", ISSUE_EXAMPLE).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let rb = loaded.runbook;
        assert_eq!(rb.name, "tier-2 storage maintenance");
        assert_eq!(
            rb.api.endpoint.as_deref(),
            Some("https://abiquo.example.com/api")
        );
        assert_eq!(rb.api.version.as_deref(), Some("5.0"));
        assert_eq!(rb.limits.concurrency.map(|c| c.get()), Some(50));
        assert_eq!(rb.limits.requests_per_second.map(|c| c.get()), Some(25));
        assert_eq!(rb.limits.deadline, Some(Duration::from_secs(90 * 60)));
        assert_eq!(rb.steps.len(), 3);

        let web = &rb.steps[0];
        assert_eq!(web.name, "web down");
        assert_eq!(web.action, Action::Shutdown);
        assert_eq!(web.after, Vec::<usize>::new());
        assert_eq!(web.concurrency.map(|c| c.get()), Some(20));
        let waves = web.waves.clone().unwrap();
        assert_eq!(waves.sizes, vec![Amount::Percent(25)]);
        assert_eq!(waves.pause, Duration::from_secs(30));
        let fallback = web.fallback.unwrap();
        assert_eq!(fallback.action, Action::Off);
        assert_eq!(fallback.after, Duration::from_secs(300));
        assert_eq!(web.task_timeout, Duration::from_secs(600));
        assert_eq!(web.on_failure, OnFailure::Abort);
        assert_eq!(web.max_failures, Some(Amount::Percent(10)));
        assert_eq!(
            web.targets[0].vdc,
            Some(NameOrId::Name(model::Pattern::new("prod").unwrap()))
        );

        let db = &rb.steps[1];
        assert_eq!(db.after, vec![0]);
        assert_eq!(db.order, Order::Sequential);
        assert_eq!(db.targets.len(), 2);
        assert_eq!(
            db.targets[1].vm.as_ref().map(|p| p.as_str()),
            Some("db-primary")
        );

        let batch = &rb.steps[2];
        assert_eq!(batch.after, Vec::<usize>::new());
        assert_eq!(batch.action, Action::Pause);
        assert_eq!(batch.targets[0].state, Some(VmState::On));
        assert_eq!(
            batch.exclude[0].vm.as_ref().map(|p| p.as_str()),
            Some("batch-scheduler")
        );
        assert!(batch.fallback.is_none());

        assert_eq!(rb.source_hash, sha256_hex(ISSUE_EXAMPLE.as_bytes()));
        assert_eq!(rb.source_hash.len(), 64);
    }

    #[test]
    fn steps_without_thresholds_or_defaults_get_documented_defaults() {
        let src =
            "name = \"x\"\n[[step]]\nname = \"a\"\naction = \"on\"\ntargets = [{ vm = \"a\" }]\n";
        let rb = parse("x.toml", src).unwrap().runbook;
        let s = &rb.steps[0];
        assert_eq!(s.task_timeout, model::Runbook::DEFAULT_TASK_TIMEOUT);
        assert_eq!(s.on_failure, OnFailure::Abort);
        assert_eq!(s.max_failures, None);
        assert_eq!(s.order, Order::Parallel);
        assert!(!s.allow_protected);
        assert_eq!(s.concurrency, None);
    }

    #[test]
    fn load_or_report_returns_only_runbooks_fit_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let valid = write("valid.toml", ISSUE_EXAMPLE);
        let invalid = write("invalid.toml", "name = \"x\"\n");
        let warned = write(
            "warned.toml",
            "name = \"x\"\n[[step]]\nname = \"a\"\naction = \"off\"\ntargets = [{ vm = \"a\" }]\n\
             [[step]]\nname = \"b\"\nafter = []\naction = \"on\"\ntargets = [{ vm = \"a\" }]\n",
        );
        assert!(load_or_report(&valid, true).is_some());
        assert!(load_or_report(&invalid, false).is_none());
        assert!(load_or_report(&dir.path().join("missing.toml"), false).is_none());
        assert!(load_or_report(&warned, false).is_some());
        assert!(load_or_report(&warned, true).is_none());
    }

    #[test]
    fn an_endpoint_with_user_info_is_refused_without_showing_it() {
        let src = "name = \"x\"\n[api]\nendpoint = \"https://ops:pw-77@h/api\"\n\
                   [[step]]\nname = \"a\"\naction = \"on\"\ntargets = [{ vm = \"a\" }]\n";
        let failure = parse("x.toml", src).unwrap_err();
        assert_eq!(
            failure
                .diagnostics
                .iter()
                .map(|d| d.code)
                .collect::<Vec<_>>(),
            ["runbook::credentials"]
        );
        assert!(!failure.source.contains("pw-77"));
        assert!(!failure.render().contains("pw-77"));
        assert!(!format!("{failure}").contains("pw-77"));
    }

    #[test]
    fn secrets_are_blanked_in_the_failure_source() {
        let src = "name = \"x\"\n[api]\npassword = \"hunter2\"\n";
        let failure = parse("x.toml", src).unwrap_err();
        assert!(!failure.source.contains("hunter2"));
        assert!(!failure.render().contains("hunter2"));
        assert!(
            failure
                .diagnostics
                .iter()
                .any(|d| d.code == "runbook::credentials")
        );
    }
}

#[cfg(test)]
mod proptests;
