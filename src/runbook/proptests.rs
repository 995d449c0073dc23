//! Arbitrary bytes and near-valid runbooks never make parsing, validation or rendering panic.

use super::diagnostic::{JsonDiagnostic, render};
use super::lines::LineIndex;
use super::parse;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../runbooks/maintenance-shutdown.toml");

/// Parses, then renders whatever came out, as the CLI would.
fn exercise(source: &str) {
    match parse("fuzz.toml", source) {
        Ok(loaded) => {
            let _ = render("fuzz.toml", source, &loaded.warnings);
        }
        Err(failure) => {
            assert!(failure.diagnostics.iter().any(|d| d.is_error()));
            let _ = failure.render();
            let index = LineIndex::new(&failure.source);
            for d in &failure.diagnostics {
                let _ = JsonDiagnostic::new(&index, d);
            }
        }
    }
}

/// Fragments that are plausible in a runbook: keys, values, brackets, headers.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    "\n",
    " ",
    "#",
    "0",
    "-1",
    "1e9",
    "\"0%\"",
    "\"150%\"",
    "\"-5m\"",
    "\"0s\"",
    "\"\"",
    "[]",
    "[{}]",
    "{}",
    "true",
    "1979-05-27",
    "[[step]]\n",
    "[step]\n",
    "[limits]\n",
    "[api]\n",
    "password = \"s\"\n",
    "after = [\"web down\"]\n",
    "after = [\"batch pause\"]\n",
    "after = []\n",
    "after = [{ step = \"web down\", gate = { tcp = \"db:5432\" } }]\n",
    "{ step = ",
    "action = \"deallocate\"\n",
    "action = \"off\"\n",
    "targets = []\n",
    "targets = [{ hypervisor = \"KVM\" }]\n",
    "fallback = { after = \"1s\" }\n",
    "waves = { size = 0 }\n",
    "name = \"web down\"\n",
    "concurrency = 0\n",
    "vm = \"[\"",
    "é",
    "\u{0}",
    "\r\n",
    "\r",
    "\"\"\"",
    "99999999999999999999999",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    DuplicateLine { from: usize, to: usize },
    DropLine { line: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(from, to)| Mutation::DuplicateLine { from, to }),
        any::<usize>().prop_map(|line| Mutation::DropLine { line }),
    ]
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(source: &str, mutations: &[Mutation]) -> String {
    let mut s = source.to_owned();
    for m in mutations {
        match *m {
            Mutation::Delete { at, len } => {
                let start = boundary(&s, at);
                let end = boundary(&s, (start + len).min(s.len()));
                s.replace_range(start..end.max(start), "");
            }
            Mutation::Insert { at, token } => {
                let at = boundary(&s, at);
                s.insert_str(at, TOKENS[token % TOKENS.len()]);
            }
            Mutation::DuplicateLine { from, to } => {
                let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
                if !lines.is_empty() {
                    let line = lines[from % lines.len()].clone();
                    let to = to % (lines.len() + 1);
                    lines.insert(to, line);
                }
                s = lines.join("\n");
            }
            Mutation::DropLine { line } => {
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let n = lines.len();
                    lines.remove(line % n);
                }
                s = lines.join("\n");
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn toml_like_text_never_panics(text in "[a-z_\\[\\]{}=\"' ,.0-9%#\n-]{0,300}") {
        exercise(&text);
    }

    #[test]
    fn near_valid_runbooks_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        exercise(&apply(EXAMPLE, &mutations));
    }
}

#[test]
fn the_unmutated_example_is_valid() {
    assert!(parse("example.toml", &apply(EXAMPLE, &[])).is_ok());
}
