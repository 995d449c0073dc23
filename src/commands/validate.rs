//! `powerbook validate`: check runbooks offline, diagnostics as text or JSON.

use crate::cli::{OutputFormat, ValidateArgs};
use crate::exit::Outcome;
use crate::runbook::diagnostic::{self, JsonDiagnostic};
use crate::runbook::lines::LineIndex;
use serde::Serialize;
use std::io::Write;

#[derive(Serialize)]
struct JsonReport {
    format: u32,
    kind: &'static str,
    files: Vec<JsonFile>,
}

#[derive(Serialize)]
struct JsonFile {
    file: String,
    valid: bool,
    diagnostics: Vec<JsonDiagnostic>,
}

/// Checks every file; exit 0 when all are valid, 2 otherwise. Warnings count as errors
/// under `--strict`.
pub fn validate(args: &ValidateArgs) -> Outcome {
    let mut all_valid = true;
    let mut files = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let loaded = crate::runbook::read_source(path)
            .and_then(|source| crate::runbook::parse(&name, &source));
        // Either way `source` has its secret values blanked out.
        let (valid, source, diagnostics) = match loaded {
            Ok(loaded) => {
                let valid = !args.strict || loaded.warnings.is_empty();
                (valid, loaded.source, loaded.warnings)
            }
            Err(failure) => (false, failure.source, failure.diagnostics),
        };
        all_valid &= valid;
        match args.output {
            OutputFormat::Human => {
                diagnostic::to_stderr(&diagnostic::render(&name, &source, &diagnostics));
                let line = summary(&name, valid, &diagnostics, args.strict);
                emit(&format!("{line}\n"));
            }
            OutputFormat::Json => {
                let index = LineIndex::new(&source);
                files.push(JsonFile {
                    file: name,
                    valid,
                    diagnostics: diagnostics
                        .iter()
                        .map(|d| JsonDiagnostic::new(&index, d))
                        .collect(),
                });
            }
        }
    }
    if args.output == OutputFormat::Json {
        let report = JsonReport {
            format: 1,
            kind: crate::report::kind::VALIDATION,
            files,
        };
        let text = match serde_json::to_string_pretty(&report) {
            Ok(text) => text,
            Err(e) => {
                diagnostic::to_stderr(&format!("error: cannot write the JSON report: {e}\n"));
                return Outcome::Usage;
            }
        };
        emit(&format!("{text}\n"));
    }
    if all_valid {
        Outcome::Success
    } else {
        Outcome::Usage
    }
}

/// One line per file on stdout: `file: valid` / `file: invalid (2 errors, 1 warning)`.
fn summary(
    name: &str,
    valid: bool,
    diagnostics: &[diagnostic::Diagnostic],
    strict: bool,
) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let mut counts = Vec::new();
    if errors > 0 {
        counts.push(plural(errors, "error"));
    }
    if warnings > 0 {
        counts.push(plural(warnings, "warning"));
    }
    let verdict = if valid { "valid" } else { "invalid" };
    let mut line = format!("{name}: {verdict}");
    if !counts.is_empty() {
        line.push_str(&format!(" ({})", counts.join(", ")));
    }
    if strict && errors == 0 && warnings > 0 {
        line.push_str(" [--strict: warnings are errors]");
    }
    line
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Writes to stdout without panicking: a reader that went away (`| head`) is not an error,
/// and the exit code keeps saying whether the runbooks are valid.
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        diagnostic::to_stderr(&format!("error: cannot write to stdout: {e}\n"));
    }
}
