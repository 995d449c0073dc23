//! TOML text → [`raw`](super::raw) structs. Walks the parsed TOML tree by hand (rather than
//! through serde) so that every unknown key, wrong type and missing key in the file is
//! reported, each with its span, instead of stopping at the first.
//!
//! [`tree`] walks the tables and their keys; [`values`] converts one value to its raw type.
//! Credentials are found here too, so that no rendering ever shows them.

mod tree;
mod values;

use super::diagnostic::Diagnostic;
use super::raw::RawRunbook;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// What reading produced: the raw runbook (possibly partial), the diagnostics, and the spans
/// of secret values that must not be shown back.
#[derive(Debug, Default)]
pub struct Read {
    pub raw: RawRunbook,
    pub diagnostics: Vec<Diagnostic>,
    /// True when the TOML itself did not parse: only syntax errors are then reported, since
    /// the recovered tree is partial and would cause spurious follow-up errors.
    pub syntax_failed: bool,
    pub secrets: Vec<Range<usize>>,
}

/// Keys that look like credentials. They are rejected wherever they appear, and their values
/// are blanked out of every rendering.
const CREDENTIAL_KEYS: &[&str] = &[
    "username",
    "user",
    "password",
    "passwd",
    "pass",
    "token",
    "api_token",
    "access_token",
    "secret",
    "client_secret",
    "credentials",
    "authorization",
    "auth",
    "api_key",
];

pub fn read(source: &str) -> Read {
    let (doc, errors) = DeTable::parse_recoverable(source);
    let mut reader = Reader {
        secrets: credential_lines(source),
        ..Reader::default()
    };
    let raw = reader.runbook(doc.get_ref());
    if errors.is_empty() {
        return Read {
            raw,
            diagnostics: reader.diagnostics,
            syntax_failed: false,
            secrets: reader.secrets,
        };
    }
    let diagnostics = errors
        .iter()
        .map(|e| Diagnostic {
            span: e.span(),
            ..Diagnostic::error("runbook::syntax", 0..0, syntax_message(e.message()))
        })
        .collect();
    Read {
        raw: RawRunbook::default(),
        diagnostics,
        syntax_failed: true,
        secrets: reader.secrets,
    }
}

/// Values of `key = ...` lines whose key looks like a credential, found textually so that
/// they are blanked even when the TOML around them does not parse.
fn credential_lines(source: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    for line in source.split_inclusive('\n') {
        if let Some((key, _)) = line.split_once('=')
            && is_credential(key.trim().trim_matches(['"', '\'']))
        {
            let after_eq = line.find('=').map_or(0, |i| i + 1);
            let value = line[after_eq..].trim_start();
            let value_start = start + line.len() - value.len();
            spans.push(value_start..start + line.trim_end_matches(['\n', '\r']).len());
        }
        start += line.len();
    }
    spans
}

/// toml's messages start lowercase without the word "TOML"; say what kind of error it is.
fn syntax_message(message: &str) -> String {
    format!("TOML syntax error: {}", message.trim_end())
}

/// Whether `key` looks like a credential (any case).
fn is_credential(key: &str) -> bool {
    CREDENTIAL_KEYS.contains(&key.to_ascii_lowercase().as_str())
}

type Entry<'a, 'i> = (&'a Spanned<DeString<'i>>, &'a Spanned<DeValue<'i>>);

#[derive(Default)]
struct Reader {
    diagnostics: Vec<Diagnostic>,
    secrets: Vec<Range<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_are_found_even_when_the_toml_is_broken() {
        let src = "name = \"x\"\n[api]\n  password = \"hunter2\n[[step\n";
        let r = read(src);
        assert!(r.syntax_failed);
        assert!(r.secrets.iter().any(|s| src[s.clone()].contains("hunter2")));
    }

    #[test]
    fn syntax_errors_suppress_follow_up_errors() {
        let r = read("name = \"x\nconcurency = 0\n");
        assert!(r.syntax_failed);
        assert!(r.diagnostics.iter().all(|d| d.code == "runbook::syntax"));
        assert!(!r.diagnostics.is_empty());
    }
}
