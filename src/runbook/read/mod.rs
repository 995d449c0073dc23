//! TOML text → [`raw`](super::raw) structs. Walks the parsed TOML tree by hand (rather than
//! through serde) so that every unknown key, wrong type and missing key in the file is
//! reported, each with its span, instead of stopping at the first.
//!
//! [`tree`] walks the tables and their keys; [`values`] converts one value to its raw type.
//! Credentials are found here too, so that no rendering ever shows them.

mod tree;
pub(crate) mod typed;
mod values;

use super::diagnostic::Diagnostic;
use super::raw::RawRunbook;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

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

/// Fragments of key names that mark a credential or a secret, anywhere in the name (any
/// case): `admin_password`, `clientSecret`, `api_token`. Keys with such names are rejected
/// wherever they appear, and their values (and everything under them) are blanked out of
/// every rendering.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "private",
    "apikey",
    "api_key",
    "api-key",
    "authorization",
];

/// Whole words of key names that mark a credential: `ssh_key`, `apiKey`, `user`.
const SECRET_WORDS: &[&str] = &["key", "pass", "pwd", "auth", "user", "username"];

pub fn read(source: &str) -> Read {
    let (mut doc, errors) = DeTable::parse_recoverable(source);
    let mut secrets = credential_lines(source);
    secrets.extend(secret_values(doc.get_ref()));
    let mut reader = Reader {
        secrets,
        ..Reader::default()
    };
    let steps = tree::take_steps(doc.get_mut());
    let raw = reader.runbook(doc.get_ref(), steps);
    drop(doc);
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

/// Values of `key = ...` lines whose key (or table header) looks like a credential, found
/// textually so that they are blanked even when the TOML around them does not parse.
fn credential_lines(source: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    // Inside a table whose header names a secret (`[step.secret]`).
    let mut secret_table = false;
    for line in source.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        let end = start + content.len();
        if let Some(header) = trimmed.strip_prefix('[') {
            let header = header.split(']').next().unwrap_or_default();
            secret_table = header
                .trim_start_matches('[')
                .split('.')
                .any(|seg| is_credential(seg.trim().trim_matches(['"', '\''])));
        } else if let Some((key, _)) = trimmed.split_once('=') {
            let secret_key = key
                .split('.')
                .any(|seg| is_credential(seg.trim().trim_matches(['"', '\''])));
            if secret_table || secret_key {
                let after_eq = content.find('=').map_or(0, |i| i + 1);
                let value = content[after_eq..].trim_start();
                spans.push(end - value.len()..end);
            }
        } else if secret_table && !trimmed.is_empty() {
            // A continuation line of a value under a secret header.
            spans.push(end - trimmed.len()..end);
        }
        start += line.len();
    }
    spans
}

/// Spans of every value under a key (or inside a table) whose name looks like a credential,
/// at any depth, from the parsed tree; iterative, so nesting depth costs no stack.
fn secret_values(doc: &DeTable<'_>) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut stack: Vec<(&Spanned<DeValue<'_>>, bool)> = doc
        .iter()
        .map(|(k, v)| (v, is_credential(k.get_ref())))
        .collect();
    while let Some((value, secret)) = stack.pop() {
        if secret {
            spans.push(value.span());
        }
        match value.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    stack.push((v, secret || is_credential(k.get_ref())));
                }
            }
            DeValue::Array(items) => stack.extend(items.iter().map(|item| (item, secret))),
            _ => {}
        }
    }
    spans
}

/// toml's messages start lowercase without the word "TOML"; say what kind of error it is.
fn syntax_message(message: &str) -> String {
    format!("TOML syntax error: {}", message.trim_end())
}

/// Whether `key` looks like a credential or a secret (any case), by [`SECRET_FRAGMENTS`]
/// and [`SECRET_WORDS`].
fn is_credential(key: &str) -> bool {
    let lower = key.to_lowercase();
    SECRET_FRAGMENTS.iter().any(|f| lower.contains(f))
        || words(key).any(|w| SECRET_WORDS.contains(&w.to_lowercase().as_str()))
}

/// The words of a key name: split at anything not a letter or digit, and where a lowercase
/// letter meets an uppercase one (`sshKey` → `ssh`, `Key`).
fn words(key: &str) -> impl Iterator<Item = &str> {
    key.split(|c: char| !c.is_alphanumeric()).flat_map(|part| {
        let mut cuts = vec![0];
        let chars: Vec<(usize, char)> = part.char_indices().collect();
        for pair in chars.windows(2) {
            if pair[0].1.is_lowercase() && pair[1].1.is_uppercase() {
                cuts.push(pair[1].0);
            }
        }
        cuts.push(part.len());
        cuts.windows(2)
            .map(|w| &part[w[0]..w[1]])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
    })
}

use typed::Entry;

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
    fn secret_looking_names_are_recognised_and_known_keys_are_not() {
        for name in [
            "password",
            "admin_password",
            "DB_PASSWD",
            "clientSecret",
            "secret",
            "api_token",
            "apiKey",
            "api_key",
            "ssh-key",
            "privateKey",
            "credentials",
            "user",
            "Authorization",
        ] {
            assert!(is_credential(name), "{name}");
        }
        use crate::runbook::raw::keys;
        let known = [
            keys::RUNBOOK,
            keys::API,
            keys::LIMITS,
            keys::DEFAULTS,
            keys::STEP,
            keys::SELECTOR,
            keys::WAVES,
            keys::AFTER_STEP,
            keys::FALLBACK,
        ];
        for key in known.iter().flat_map(|k| k.iter()) {
            assert!(!is_credential(key), "{key} is a known key");
        }
        for name in ["keyboard", "monkey", "passage", "users_count"] {
            assert!(!is_credential(name), "{name}");
        }
    }

    #[test]
    fn every_value_under_a_secret_key_or_table_is_masked() {
        let src = "name = \"x\"\n[[step]]\nname = \"a\"\n\
                   targets = [{ vm = \"a\", api_key = \"v1\" }]\n\
                   [step.secret]\nx = \"v2\"\ndeep = { list = [\"v3\"] }\n\
                   [other]\nplain = \"shown\"\nnested = { token = \"v4\" }\n\
                   multi = \"\"\"\nnot a secret\n\"\"\"\n";
        let r = read(src);
        let redacted = crate::runbook::redact(src, &r.secrets);
        for value in ["v1", "v2", "v3", "v4"] {
            assert!(!redacted.contains(value), "{value} in\n{redacted}");
        }
        assert!(redacted.contains("shown") && redacted.contains("not a secret"));
        assert_eq!(redacted.len(), src.len(), "spans stay valid");
    }

    #[test]
    fn values_under_a_secret_header_are_masked_even_in_broken_toml() {
        let src = "name = \"x\"\n[step.\"Secret\"]\nx = \"v1\n  \"continued\"\n[ok]\ny = \"shown\"\n[[step\n";
        let r = read(src);
        assert!(r.syntax_failed);
        let redacted = crate::runbook::redact(src, &r.secrets);
        assert!(
            !redacted.contains("v1") && !redacted.contains("continued"),
            "{redacted}"
        );
        assert!(redacted.contains("shown"));
    }

    #[test]
    fn syntax_errors_suppress_follow_up_errors() {
        let r = read("name = \"x\nconcurency = 0\n");
        assert!(r.syntax_failed);
        assert!(r.diagnostics.iter().all(|d| d.code == "runbook::syntax"));
        assert!(!r.diagnostics.is_empty());
    }
}
