//! [`raw`](super::raw) runbook → validated [`model`](super::model): values, references, the
//! step graph and conflicts. Every problem is collected; nothing stops at the first.
//!
//! One `Validator` walks the raw tree; its methods are split by what they check: scalar
//! values ([`values`]), selectors ([`selectors`]), step settings and defaults ([`steps`]), and
//! the `after` graph with its cycles and conflicts ([`dependencies`]).

mod dependencies;
mod selectors;
mod steps;
mod values;

use super::diagnostic::Diagnostic;
use super::model::{Action, ApiSettings, Limits, Runbook};
use super::raw::{RawApi, RawLimits, RawRunbook, RawStep, Sp};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// Validates `raw`, appending diagnostics. Returns a runbook whenever one could be built;
/// the caller discards it if any diagnostic is an error.
/// Spans of values found to be secret (an endpoint's user info) are added to `secrets`.
pub fn validate(
    raw: &RawRunbook,
    source_hash: String,
    diags: &mut Vec<Diagnostic>,
    secrets: &mut Vec<Range<usize>>,
) -> Runbook {
    let mut v = Validator { diags, secrets };
    v.runbook(raw, source_hash)
}

struct Validator<'d> {
    diags: &'d mut Vec<Diagnostic>,
    secrets: &'d mut Vec<Range<usize>>,
}

impl Validator<'_> {
    fn runbook(&mut self, raw: &RawRunbook, source_hash: String) -> Runbook {
        let name = match &raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.err(
                    "runbook::empty-value",
                    n.span(),
                    "the runbook name is empty",
                )
                .label("give the runbook a name");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => String::new(),
        };
        let api = raw.api.as_ref().map(|a| self.api(a)).unwrap_or_default();
        let limits = raw
            .limits
            .as_ref()
            .map(|l| self.limits(l))
            .unwrap_or_default();
        let defaults = self.defaults(raw.defaults.as_ref());
        let estimates = raw
            .estimates
            .as_ref()
            .map(|e| self.estimates(e.get_ref()))
            .unwrap_or_default();
        let raw_steps: &[Sp<RawStep>] = raw.steps.as_deref().unwrap_or_default();
        let steps = self.steps(raw_steps, &defaults);
        Runbook {
            name,
            description: raw.description.as_ref().map(|d| d.get_ref().clone()),
            api,
            limits,
            estimates,
            steps,
            source_hash,
        }
    }

    fn api(&mut self, raw: &RawApi) -> ApiSettings {
        let endpoint = raw.endpoint.as_ref().and_then(|e| {
            if values::user_info(e.get_ref()).is_some() {
                // `run` refuses such an endpoint too; its password must not be shown back.
                self.secrets.push(e.span());
                self.err(
                    "runbook::credentials",
                    e.span(),
                    "the API endpoint must not carry credentials (`user:password@` in the URL)",
                )
                .label("remove the user info from the URL")
                .help(
                    "set ABIQUO_API_USERNAME and ABIQUO_API_PASSWORD, or ABIQUO_API_TOKEN, in the environment instead",
                );
                return None;
            }
            self.url(
                "endpoint",
                e,
                "expected e.g. https://abiquo.example.com/api",
            )
        });
        let version = raw.version.as_ref().and_then(|v| {
            let text = v.get_ref().trim();
            let ok = text.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
            if ok {
                Some(text.to_owned())
            } else {
                self.err(
                    "runbook::invalid-value",
                    v.span(),
                    format!("`version` must look like \"5.0\", not `{text}`"),
                )
                .label("expected MAJOR.MINOR");
                None
            }
        });
        ApiSettings { endpoint, version }
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        Limits {
            concurrency: raw
                .concurrency
                .as_ref()
                .and_then(|c| self.positive("concurrency", c)),
            requests_per_second: raw
                .requests_per_second
                .as_ref()
                .and_then(|c| self.positive("requests_per_second", c)),
            deadline: raw
                .deadline
                .as_ref()
                .and_then(|d| self.duration("deadline", d)),
            max_failures: raw
                .max_failures
                .as_ref()
                .and_then(|m| self.amount("max_failures", m, 0)),
        }
    }

    fn estimates(&mut self, raw: &BTreeMap<Sp<String>, Sp<String>>) -> BTreeMap<Action, Duration> {
        let mut out = BTreeMap::new();
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (k, v) in entries {
            let action = self.action(k);
            let duration = self.duration(k.get_ref(), v);
            if let (Some(a), Some(d)) = (action, duration) {
                out.insert(a, d);
            }
        }
        out
    }

    fn err(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Pending<'_> {
        self.pending(Diagnostic::error(code, span, message))
    }

    fn warn(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Pending<'_> {
        self.pending(Diagnostic::warning(code, span, message))
    }

    fn pending(&mut self, diag: Diagnostic) -> Pending<'_> {
        Pending {
            diags: self.diags,
            diag: Some(diag),
        }
    }
}

/// A diagnostic being built; pushed when dropped, so `self.err(..).label(..);` is enough.
struct Pending<'a> {
    diags: &'a mut Vec<Diagnostic>,
    diag: Option<Diagnostic>,
}

impl Pending<'_> {
    fn label(mut self, label: impl Into<String>) -> Self {
        self.diag = self.diag.take().map(|d| d.label(label));
        self
    }
    fn help(mut self, help: impl Into<String>) -> Self {
        self.diag = self.diag.take().map(|d| d.help(help));
        self
    }
    fn secondary(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.diag = self.diag.take().map(|d| d.with_secondary(span, label));
        self
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.diag.take() {
            self.diags.push(d);
        }
    }
}

#[cfg(test)]
mod test_support {
    use crate::runbook::model::Runbook;
    use crate::runbook::parse;

    pub fn runbook(body: &str) -> Runbook {
        let src = format!("name = \"t\"\n{body}");
        match parse("t.toml", &src) {
            Ok(loaded) => loaded.runbook,
            Err(f) => panic!("{}", f.render()),
        }
    }

    pub fn codes(body: &str) -> Vec<&'static str> {
        let src = format!("name = \"t\"\n{body}");
        match parse("t.toml", &src) {
            Ok(loaded) => loaded.warnings.iter().map(|d| d.code).collect(),
            Err(f) => f.diagnostics.iter().map(|d| d.code).collect(),
        }
    }

    pub const STEP: &str = "action = \"on\"\ntargets = [{ vm = \"x\" }]\n";
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use std::time::Duration;

    #[test]
    fn estimates_map_actions_to_durations() {
        let rb = runbook(&format!(
            "[estimates]\nshutdown = \"2m\"\non = \"90s\"\n[[step]]\nname = \"a\"\n{STEP}"
        ));
        assert_eq!(
            rb.estimates.get(&crate::runbook::model::Action::On),
            Some(&Duration::from_secs(90))
        );
        assert_eq!(rb.estimates.len(), 2);
    }
}
