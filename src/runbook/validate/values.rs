//! Scalar values and their limits: choices, positive counts, amounts and durations.

use super::Validator;
use crate::runbook::diagnostic::{Diagnostic, did_you_mean};
use crate::runbook::model::{Action, Amount, OnFailure, Order};
use crate::runbook::raw::{RawAmount, Sp};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Durations beyond this are refused: nobody means them, and timers would overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The `user:password` part of a URL's authority (before the `@`), if it has one. With or
/// without a scheme, so that a mistyped URL does not show a password either.
pub(super) fn user_info(url: &str) -> Option<&str> {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rfind('@').map(|at| &authority[..at])
}

impl Validator<'_> {
    pub(super) fn action(&mut self, raw: &Sp<String>) -> Option<Action> {
        let text = raw.get_ref();
        if let Some(a) = Action::parse(text) {
            return Some(a);
        }
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        self.unknown_choice("runbook::unknown-action", "action", raw, &names);
        None
    }

    pub(super) fn on_failure(&mut self, raw: &Sp<String>) -> Option<OnFailure> {
        self.choice(
            "on_failure",
            raw,
            &[
                ("abort", OnFailure::Abort),
                ("continue", OnFailure::Continue),
            ],
        )
    }

    pub(super) fn order(&mut self, raw: &Sp<String>) -> Option<Order> {
        self.choice(
            "order",
            raw,
            &[
                ("parallel", Order::Parallel),
                ("sequential", Order::Sequential),
            ],
        )
    }

    /// One of a fixed set of words, each meaning a value.
    fn choice<T: Copy>(&mut self, key: &str, raw: &Sp<String>, choices: &[(&str, T)]) -> Option<T> {
        let text = raw.get_ref().as_str();
        if let Some((_, value)) = choices.iter().find(|(word, _)| *word == text) {
            return Some(*value);
        }
        let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
        self.unknown_choice("runbook::invalid-value", key, raw, &words);
        None
    }

    /// An absolute http(s) URL (trimmed); `expected` labels a refused one.
    pub(super) fn url(&mut self, key: &str, raw: &Sp<String>, expected: &str) -> Option<String> {
        let text = raw.get_ref().trim();
        let info = user_info(text);
        if info.is_some() {
            // Whatever else is wrong with it, a password in a URL is never shown back.
            self.secrets.push(raw.span());
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            return Some(text.to_owned());
        }
        let shown = match info {
            Some(info) => text.replacen(info, "<redacted>", 1),
            None => text.to_owned(),
        };
        self.err(
            "runbook::invalid-url",
            raw.span(),
            format!("`{key}` is not an http(s) URL: `{shown}`"),
        )
        .label(expected);
        None
    }

    pub(super) fn unknown_choice(
        &mut self,
        code: &'static str,
        what: &str,
        raw: &Sp<String>,
        known: &[&str],
    ) {
        let text = raw.get_ref();
        let mut d = Diagnostic::error(code, raw.span(), format!("unknown {what} `{text}`"));
        d = match did_you_mean(text, known.iter().copied()) {
            Some(s) => d.label(format!("did you mean `{s}`?")),
            None => d.label(format!("not a known {what}")),
        };
        self.diags
            .push(d.help(format!("expected one of: {}", known.join(", "))));
    }

    /// A positive integer (`concurrency`, `requests_per_second`).
    pub(super) fn positive(&mut self, key: &str, raw: &Sp<i64>) -> Option<NonZeroUsize> {
        let n = *raw.get_ref();
        if n == 0 && key == "concurrency" {
            self.err(
                "runbook::zero-concurrency",
                raw.span(),
                "`concurrency = 0` would never start a VM",
            )
            .label("must be at least 1");
            return None;
        }
        match usize::try_from(n).ok().and_then(NonZeroUsize::new) {
            Some(v) => Some(v),
            None => {
                self.err(
                    "runbook::out-of-range",
                    raw.span(),
                    format!("`{key}` must be at least 1, not {n}"),
                )
                .label("must be at least 1");
                None
            }
        }
    }

    /// A count (≥ `min_count`) or a percentage of 1–100%.
    pub(super) fn amount(
        &mut self,
        key: &str,
        raw: &Sp<RawAmount>,
        min_count: i64,
    ) -> Option<Amount> {
        match raw.get_ref() {
            RawAmount::Count(n) if *n >= min_count => u64::try_from(*n).ok().map(Amount::Count),
            RawAmount::Count(n) => {
                let (message, label) = if min_count == 0 {
                    (format!("`{key}` cannot be negative"), "negative".to_owned())
                } else {
                    (
                        format!("`{key}` must be at least {min_count}, not {n}"),
                        format!("must be at least {min_count}"),
                    )
                };
                self.err("runbook::out-of-range", raw.span(), message)
                    .label(label);
                None
            }
            RawAmount::Text(s) => {
                let text = s.trim();
                if let Some(number) = text.strip_suffix('%') {
                    match number.trim().parse::<u64>() {
                        Ok(p @ 1..=100) => u8::try_from(p).ok().map(Amount::Percent),
                        Err(_) if !number.trim().starts_with('-') => {
                            self.err(
                                "runbook::invalid-amount",
                                raw.span(),
                                format!("`{key}` is not a whole percentage: `{text}`"),
                            )
                            .label("expected e.g. \"10%\"");
                            None
                        }
                        // Out of range, or negative.
                        _ => {
                            self.err(
                                "runbook::percent-out-of-range",
                                raw.span(),
                                format!(
                                    "`{key}` percentage must be between 1% and 100%, not {text}"
                                ),
                            )
                            .label("outside 1–100%");
                            None
                        }
                    }
                } else {
                    let mut d = Diagnostic::error(
                        "runbook::invalid-amount",
                        raw.span(),
                        format!("`{key}` must be a count or a percentage, not `{text}`"),
                    )
                    .label("expected a count (3) or a percentage (\"10%\")");
                    if let Ok(n) = text.parse::<i64>() {
                        d = d.help(format!(
                            "write {n} without quotes for a count, or \"{n}%\" for a percentage"
                        ));
                    }
                    self.diags.push(d);
                    None
                }
            }
        }
    }

    pub(super) fn duration(&mut self, key: &str, raw: &Sp<String>) -> Option<Duration> {
        let text = raw.get_ref().trim();
        if text.starts_with('-') {
            self.err(
                "runbook::negative-duration",
                raw.span(),
                format!("`{key}` cannot be negative: `{text}`"),
            )
            .label("durations are positive");
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                let help = if key == "pause" {
                    "remove `pause` for no pause between waves"
                } else {
                    "give a positive duration such as \"30s\" or \"5m\""
                };
                self.err(
                    "runbook::zero-duration",
                    raw.span(),
                    format!("`{key}` must be longer than zero"),
                )
                .label("zero")
                .help(help);
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(
                    "runbook::out-of-range",
                    raw.span(),
                    format!("`{key}` is longer than a year"),
                )
                .label("too long");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    "runbook::invalid-duration",
                    raw.span(),
                    format!("`{key}` is not a duration: `{text}`"),
                )
                .label(e.to_string())
                .help("durations look like \"30s\", \"5m\", \"1h 30m\" or \"90m\"");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::user_info;

    #[test]
    fn user_info_is_found_in_the_authority_only() {
        assert_eq!(user_info("https://ops:pw@host/api"), Some("ops:pw"));
        assert_eq!(user_info("https://ops@host:443/api"), Some("ops"));
        assert_eq!(user_info("ops:p@ss@host/api"), Some("ops:p@ss"));
        assert_eq!(user_info("https://host/api?mail=a@b"), None);
        assert_eq!(user_info("https://host/api"), None);
    }

    #[test]
    fn percentages_accept_exactly_one_to_one_hundred() {
        for (text, ok) in [
            ("\"1%\"", true),
            ("\"100%\"", true),
            ("\"0%\"", false),
            ("\"101%\"", false),
        ] {
            let found = codes(&format!(
                "[[step]]\nname = \"a\"\nmax_failures = {text}\n{STEP}"
            ));
            assert_eq!(found.is_empty(), ok, "{text}: {found:?}");
        }
    }
}
