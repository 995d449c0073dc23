//! The walk over the TOML tree: each table's keys, known or not, and the required ones.

use super::typed::{TypedValues, sorted};
use super::{Entry, Reader, is_credential};
use crate::runbook::diagnostic::{Diagnostic, did_you_mean};
use crate::runbook::raw::{
    RawAfter, RawAfterStep, RawApi, RawDefaults, RawFallback, RawGate, RawHttpGate, RawLimits,
    RawRunbook, RawSelector, RawStep, RawWaves, Sp, keys,
};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

impl Reader {
    /// The runbook from the top-level table; `steps` is the value of its `step` key, taken
    /// out of it by [`take_steps`].
    pub(super) fn runbook<'i>(
        &mut self,
        table: &DeTable<'i>,
        mut steps: Option<Spanned<DeValue<'i>>>,
    ) -> RawRunbook {
        let mut rb = RawRunbook::default();
        let entries = self.entries(table, keys::RUNBOOK, "at the top level");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "name" => rb.name = self.string(k, v),
                "description" => rb.description = self.string(k, v),
                "api" => rb.api = self.table(k, v).map(|t| self.api(t)),
                "limits" => rb.limits = self.table(k, v).map(|t| self.limits(t)),
                "defaults" => rb.defaults = self.table(k, v).map(|t| self.defaults(t)),
                "estimates" => rb.estimates = self.estimates(k, v),
                "step" => rb.steps = steps.take().and_then(|steps| self.steps(k, steps)),
                _ => {}
            }
        }
        if missing(table, &entries, keys::RUNBOOK, "name") {
            self.diagnostics.push(
                Diagnostic::error("runbook::missing-key", 0..0, "the runbook has no `name`")
                    .label("add `name = \"...\"` at the top")
                    .help("the name appears in plans, reports and the journal"),
            );
        }
        if missing(table, &entries, keys::RUNBOOK, "step") {
            self.diagnostics.push(
                Diagnostic::error("runbook::no-steps", 0..0, "the runbook has no steps")
                    .label("add at least one [[step]]")
                    .help(
                        "a step looks like:\n[[step]]\nname = \"web down\"\naction = \"shutdown\"\ntargets = [{ vdc = \"prod\", vapp = \"web-*\" }]",
                    ),
            );
        }
        rb
    }

    fn api(&mut self, table: &DeTable<'_>) -> RawApi {
        let mut api = RawApi::default();
        for (k, v) in self.entries(table, keys::API, "in [api]") {
            match k.get_ref().as_ref() {
                "endpoint" => api.endpoint = self.string(k, v),
                "version" => api.version = self.string(k, v),
                _ => {}
            }
        }
        api
    }

    fn limits(&mut self, table: &DeTable<'_>) -> RawLimits {
        let mut limits = RawLimits::default();
        for (k, v) in self.entries(table, keys::LIMITS, "in [limits]") {
            match k.get_ref().as_ref() {
                "concurrency" => limits.concurrency = self.integer(k, v),
                "requests_per_second" => limits.requests_per_second = self.integer(k, v),
                "deadline" => limits.deadline = self.duration(k, v),
                "max_failures" => limits.max_failures = self.amount(k, v),
                _ => {}
            }
        }
        limits
    }

    fn defaults(&mut self, table: &DeTable<'_>) -> RawDefaults {
        let mut d = RawDefaults::default();
        for (k, v) in self.entries(table, keys::DEFAULTS, "in [defaults]") {
            match k.get_ref().as_ref() {
                "task_timeout" => d.task_timeout = self.duration(k, v),
                "on_failure" => d.on_failure = self.string(k, v),
                "max_failures" => d.max_failures = self.amount(k, v),
                "concurrency" => d.concurrency = self.integer(k, v),
                "order" => d.order = self.string(k, v),
                "allow_protected" => d.allow_protected = self.boolean(k, v),
                "expected_duration" => d.expected_duration = self.duration(k, v),
                _ => {}
            }
        }
        d
    }

    fn estimates(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<BTreeMap<Sp<String>, Sp<String>>>> {
        let table = self.table(k, v)?;
        let mut out = BTreeMap::new();
        for (action, value) in sorted(table) {
            if is_credential(action.get_ref()) {
                self.credential(action, value, "in [estimates]");
                continue;
            }
            if let Some(d) = self.duration(action, value) {
                out.insert(Spanned::new(action.span(), action.get_ref().to_string()), d);
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    /// The steps, from the `step` value taken out of the tree: each step's table is dropped
    /// once read, so the parsed tree and the raw steps are never both whole in memory.
    fn steps(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: Spanned<DeValue<'_>>,
    ) -> Option<Vec<Sp<RawStep>>> {
        let span = v.span();
        let items = match v.into_inner() {
            DeValue::Array(items) => items,
            other => {
                self.wrong_type(
                    k,
                    &Spanned::new(span, other),
                    "an array of tables",
                    Some("write each step as [[step]]"),
                );
                return None;
            }
        };
        // Sized up front: growing doubles a vector of large structs (the 100,000-step case).
        let mut steps = Vec::with_capacity(items.len());
        for item in items {
            let span = item.span();
            match item.into_inner() {
                DeValue::Table(t) => {
                    let step = self.step(&t, span.clone());
                    steps.push(Spanned::new(span, step));
                }
                other => self.push_wrong_type(
                    span,
                    "a step",
                    "a table",
                    &other,
                    Some("write each step as [[step]]"),
                ),
            }
        }
        Some(steps)
    }

    fn step(&mut self, table: &DeTable<'_>, span: Range<usize>) -> RawStep {
        let mut s = RawStep::default();
        let entries = self.entries(table, keys::STEP, "in a [[step]]");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "name" => s.name = self.string(k, v),
                "action" => s.action = self.string(k, v),
                "targets" => s.targets = self.selectors(k, v),
                "exclude" => s.exclude = self.selectors(k, v),
                "after" => s.after = self.after(k, v),
                "order" => s.order = self.string(k, v),
                "concurrency" => s.concurrency = self.integer(k, v),
                "waves" => s.waves = self.waves(k, v),
                "fallback" => s.fallback = self.fallback(k, v),
                "gate" => s.gate = self.gate(k, v),
                "task_timeout" => s.task_timeout = self.duration(k, v),
                "on_failure" => s.on_failure = self.string(k, v),
                "max_failures" => s.max_failures = self.amount(k, v),
                "allow_protected" => s.allow_protected = self.boolean(k, v),
                "expected_duration" => s.expected_duration = self.duration(k, v),
                _ => {}
            }
        }
        for key in ["name", "action", "targets"] {
            if missing(table, &entries, keys::STEP, key) {
                self.missing_key(
                    span.clone(),
                    "this step",
                    key,
                    match key {
                        "name" => "every step needs a unique name, e.g. name = \"web down\"",
                        "action" => "action is one of: on, off, shutdown, pause, resume, reset, deallocate",
                        _ => "targets select the VMs, e.g. targets = [{ vdc = \"prod\", vapp = \"web-*\" }]",
                    },
                );
            }
        }
        s
    }

    /// `after`: step names, and tables naming a step with a gate on the edge, mixed.
    fn after(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<Vec<Sp<RawAfter>>>> {
        const EXPECTED: &str = "an array of step names";
        let items = match v.get_ref() {
            DeValue::Array(items) => items,
            DeValue::String(s) => {
                let help = format!("write a list: after = [\"{s}\"]");
                self.wrong_type(k, v, EXPECTED, Some(&help));
                return None;
            }
            DeValue::Table(_) => {
                self.wrong_type(
                    k,
                    v,
                    EXPECTED,
                    Some(
                        "wrap the entry in brackets: after = [{ step = \"...\", gate = { ... } }]",
                    ),
                );
                return None;
            }
            _ => {
                self.wrong_type(k, v, EXPECTED, None);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(
                    item.span(),
                    RawAfter::Step(s.to_string()),
                )),
                DeValue::Table(t) => {
                    let gated = self.after_step(t, item.span());
                    out.push(Spanned::new(item.span(), RawAfter::Gated(Box::new(gated))));
                }
                other => self.push_wrong_type(
                    item.span(),
                    "`after`",
                    "a step name (string) or a table { step, gate }",
                    other,
                    Some("e.g. after = [\"network\", { step = \"db up\", gate = { tcp = \"db-1:5432\" } }]"),
                ),
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    /// `{ step = "db up", gate = { ... } }` in `after`.
    fn after_step(&mut self, table: &DeTable<'_>, span: Range<usize>) -> RawAfterStep {
        let mut a = RawAfterStep::default();
        let entries = self.entries(table, keys::AFTER_STEP, "in an `after` entry");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "step" => a.step = self.string(k, v),
                "gate" => a.gate = self.gate(k, v),
                _ => {}
            }
        }
        if missing(table, &entries, keys::AFTER_STEP, "step") {
            self.missing_key(
                span,
                "this `after` entry",
                "step",
                "name the step to wait for, e.g. { step = \"db up\", gate = { tcp = \"db-1:5432\" } }",
            );
        }
        a
    }

    fn waves(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<RawWaves>> {
        let table = self.table(k, v)?;
        let mut w = RawWaves::default();
        let entries = self.entries(table, keys::WAVES, "in `waves`");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "size" => w.size = self.amount(k, v),
                "sizes" => w.sizes = self.amount_list(k, v),
                "gate" => w.gate = self.gate(k, v),
                "pause" => w.pause = self.duration(k, v),
                _ => {}
            }
        }
        if has(&entries, "size") && has(&entries, "sizes") {
            self.diagnostics.push(
                Diagnostic::error(
                    "runbook::conflicting-keys",
                    v.span(),
                    "`waves` has both `size` and `sizes`",
                )
                .label("one wave size, or a ramp of sizes, not both")
                .help("e.g. waves = { sizes = [1, \"10%\", \"25%\"] } for a canary, then 10%, then 25% at a time"),
            );
        } else if !has(&entries, "sizes") && missing(table, &entries, keys::WAVES, "size") {
            self.missing_key(
                v.span(),
                "`waves`",
                "size",
                "e.g. waves = { size = \"25%\", pause = \"30s\" }",
            );
        }
        Some(Spanned::new(v.span(), w))
    }

    fn gate(&mut self, k: &Spanned<DeString<'_>>, v: &Spanned<DeValue<'_>>) -> Option<Sp<RawGate>> {
        let table = self.table(k, v)?;
        let mut g = RawGate::default();
        let entries = self.entries(table, keys::GATE, "in `gate`");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "tcp" => g.tcp = self.string(k, v),
                "http" => g.http = self.http_gate(k, v),
                "command" => g.command = self.string_list(k, v),
                "approve" => g.approve = self.string(k, v),
                "timeout" => g.timeout = self.duration(k, v),
                "interval" => g.interval = self.duration(k, v),
                _ => {}
            }
        }
        let checks = ["tcp", "http", "command", "approve"]
            .iter()
            .filter(|c| has(&entries, c))
            .count();
        if checks != 1 {
            let message = if checks == 0 {
                "`gate` has no check"
            } else {
                "`gate` has more than one check"
            };
            self.diagnostics.push(
                Diagnostic::error("runbook::invalid-gate", v.span(), message)
                    .label("one of `tcp`, `http`, `command` or `approve`")
                    .help("e.g. gate = { tcp = \"db-1:5432\", timeout = \"5m\" }"),
            );
        }
        Some(Spanned::new(v.span(), g))
    }

    fn http_gate(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<RawHttpGate>> {
        let table = self.table(k, v)?;
        let mut h = RawHttpGate::default();
        let entries = self.entries(table, keys::HTTP_GATE, "in `http`");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "url" => h.url = self.string(k, v),
                "status" => h.status = self.integer(k, v),
                _ => {}
            }
        }
        if missing(table, &entries, keys::HTTP_GATE, "url") {
            self.missing_key(
                v.span(),
                "`http`",
                "url",
                "e.g. http = { url = \"https://app.example.com/health\", status = 200 }",
            );
        }
        Some(Spanned::new(v.span(), h))
    }

    fn fallback(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<RawFallback>> {
        let table = self.table(k, v)?;
        let mut f = RawFallback::default();
        let entries = self.entries(table, keys::FALLBACK, "in `fallback`");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "action" => f.action = self.string(k, v),
                "after" => f.after = self.duration(k, v),
                _ => {}
            }
        }
        if missing(table, &entries, keys::FALLBACK, "after") {
            self.missing_key(
                v.span(),
                "`fallback`",
                "after",
                "how long the graceful shutdown may take, e.g. fallback = { action = \"off\", after = \"5m\" }",
            );
        }
        Some(Spanned::new(v.span(), f))
    }

    fn selectors(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<Vec<Sp<RawSelector>>>> {
        let items = match v.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                self.wrong_type(
                    k,
                    v,
                    "an array of selectors",
                    Some("wrap the selector in brackets: [{ ... }]"),
                );
                return None;
            }
            _ => {
                self.wrong_type(
                    k,
                    v,
                    "an array of selectors",
                    Some("e.g. [{ vdc = \"prod\", vm = \"web-*\" }]"),
                );
                return None;
            }
        };
        if items.is_empty() && k.get_ref().as_ref() == "targets" {
            self.diagnostics.push(
                Diagnostic::error("runbook::no-targets", v.span(), "`targets` is empty")
                    .label("this step would act on no VM")
                    .help("add a selector, e.g. targets = [{ vdc = \"prod\", vapp = \"web-*\" }]"),
            );
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) if t.is_empty() => self.diagnostics.push(
                    Diagnostic::error(
                        "runbook::empty-selector",
                        item.span(),
                        format!("empty selector in `{}`", k.get_ref()),
                    )
                    .label("an empty selector would match every VM")
                    .help("a selector needs at least one of: vdc, vapp, vm, label, state, hypervisor, href"),
                ),
                DeValue::Table(t) => {
                    let sel = self.selector(t);
                    out.push(Spanned::new(item.span(), sel));
                }
                other => self.push_wrong_type(
                    item.span(),
                    &format!("`{}`", k.get_ref()),
                    "a selector table",
                    other,
                    Some("a selector looks like { vdc = \"prod\", vm = \"web-*\" }"),
                ),
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    fn selector(&mut self, table: &DeTable<'_>) -> RawSelector {
        let mut s = RawSelector::default();
        for (k, v) in self.entries(table, keys::SELECTOR, "in a selector") {
            match k.get_ref().as_ref() {
                "vdc" => s.vdc = self.name_or_id(k, v),
                "vapp" => s.vapp = self.name_or_id(k, v),
                "vm" => s.vm = self.string(k, v),
                "label" => s.label = self.string(k, v),
                "state" => s.state = self.string(k, v),
                "hypervisor" => s.hypervisor = self.string(k, v),
                "href" => s.href = self.string(k, v),
                _ => {}
            }
        }
        s
    }

    /// The table's entries in source order, minus unknown keys (reported here).
    fn entries<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        known: &[&str],
        place: &str,
    ) -> Vec<Entry<'a, 'i>> {
        let mut out = Vec::new();
        for (k, v) in sorted(table) {
            let key: &str = k.get_ref();
            if known.contains(&key) {
                out.push((k, v));
            } else if is_credential(key) {
                self.credential(k, v, place);
            } else {
                let mut d = Diagnostic::error(
                    "runbook::unknown-key",
                    k.span(),
                    format!("unknown key `{key}` {place}"),
                );
                d = match did_you_mean(key, known.iter().copied()) {
                    Some(s) => d.label(format!("did you mean `{s}`?")),
                    None => d.label("unknown key"),
                };
                d = match (place, key) {
                    ("in a selector", "name") => d.help("select VMs by name with `vm`"),
                    ("at the top level", "steps") => {
                        d.help("write each step as its own [[step]] table")
                    }
                    _ => d.help(format!("expected one of: {}", known.join(", "))),
                };
                self.diagnostics.push(d);
            }
        }
        out
    }

    fn credential(&mut self, k: &Spanned<DeString<'_>>, v: &Spanned<DeValue<'_>>, place: &str) {
        self.secrets.push(v.span());
        self.diagnostics.push(
            Diagnostic::error(
                "runbook::credentials",
                k.span(),
                format!(
                    "credentials do not belong in a runbook (`{}` {place})",
                    k.get_ref()
                ),
            )
            .label("remove this key")
            .help(
                "set ABIQUO_API_USERNAME and ABIQUO_API_PASSWORD, or ABIQUO_API_TOKEN, in the environment instead",
            ),
        );
    }

    /// `subject` (a step, `waves`, `fallback`) lacks its required `key`.
    fn missing_key(&mut self, span: Range<usize>, subject: &str, key: &str, help: &str) {
        self.diagnostics.push(
            Diagnostic::error(
                "runbook::missing-key",
                span,
                format!("{subject} has no `{key}`"),
            )
            .label(format!("`{key}` is required"))
            .help(help),
        );
    }
}

/// Takes the value of the top-level `step` key out of the tree, leaving a placeholder, so that
/// it can be read and freed one step at a time.
pub(super) fn take_steps<'i>(table: &mut DeTable<'i>) -> Option<Spanned<DeValue<'i>>> {
    let (_, value) = table
        .iter_mut()
        .find(|(k, _)| k.get_ref().as_ref() == "step")?;
    let placeholder = Spanned::new(value.span(), DeValue::Boolean(false));
    Some(std::mem::replace(value, placeholder))
}

fn has(entries: &[Entry<'_, '_>], key: &str) -> bool {
    entries.iter().any(|(k, _)| k.get_ref().as_ref() == key)
}

/// A required key is missing, and no unknown key in the table is a likely misspelling of it
/// (that one is already reported with a "did you mean").
fn missing(table: &DeTable<'_>, entries: &[Entry<'_, '_>], known: &[&str], key: &str) -> bool {
    !has(entries, key)
        && !table.iter().any(|(k, _)| {
            let k: &str = k.get_ref();
            !known.contains(&k) && did_you_mean(k, known.iter().copied()) == Some(key)
        })
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use crate::runbook::raw::{RawAfter, RawRunbook, keys};
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn examples() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("tests/fixtures/issue-example.toml")];
        for entry in std::fs::read_dir(root.join("runbooks")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && path.file_name().is_some_and(|n| n != "lab.toml")
            {
                files.push(path);
            }
        }
        files
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn known_keys_match_the_schema_properties() {
        let schema: Value = serde_json::from_str(&crate::runbook::schema::schema_json()).unwrap();
        let props = |v: &Value| -> BTreeSet<String> {
            v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| s.to_string()).collect() };
        assert_eq!(props(&schema), set(keys::RUNBOOK));
        for (def, known) in [
            ("Api", keys::API),
            ("Limits", keys::LIMITS),
            ("Defaults", keys::DEFAULTS),
            ("Step", keys::STEP),
            ("Selector", keys::SELECTOR),
            ("Waves", keys::WAVES),
            ("AfterStep", keys::AFTER_STEP),
            ("Fallback", keys::FALLBACK),
        ] {
            assert_eq!(props(&schema["definitions"][def]), set(known), "{def}");
        }
    }

    #[test]
    fn reader_builds_what_serde_builds_from_the_examples() {
        let examples = examples();
        assert!(examples.len() >= 5);
        for (name, source) in examples {
            let by_serde: RawRunbook = toml::from_str(&source).unwrap();
            let by_reader = read(&source);
            assert!(
                by_reader.diagnostics.is_empty(),
                "{name}: {:?}",
                by_reader.diagnostics
            );
            assert_eq!(by_reader.raw, by_serde, "{name}");
        }
    }

    #[test]
    fn every_unknown_key_is_reported_where_serde_stops_at_the_first() {
        let src = "name = \"x\"\nnmae = 1\n[limits]\nconcurency = 1\n[[step]]\nname = \"a\"\naction = \"on\"\ntargets = [{ vmm = \"a\" }]\n";
        assert!(toml::from_str::<RawRunbook>(src).is_err());
        let unknown: Vec<&str> = read(src)
            .diagnostics
            .iter()
            .filter(|d| d.code == "runbook::unknown-key")
            .map(|d| &src[d.span.clone().unwrap()])
            .collect();
        assert_eq!(unknown, ["nmae", "concurency", "vmm"]);
    }

    const GATED_AFTER: &str = "name = \"x\"\n\
        [[step]]\nname = \"network\"\naction = \"on\"\ntargets = [{ vm = \"n\" }]\n\
        [[step]]\nname = \"db\"\naction = \"on\"\ntargets = [{ vm = \"d\" }]\n\
        [[step]]\nname = \"app\"\naction = \"on\"\ntargets = [{ vm = \"a\" }]\n\
        after = [\"network\", { step = \"db\", gate = { tcp = \"db:5432\", timeout = \"10m\" } }]\n";

    #[test]
    fn an_after_list_mixes_step_names_and_tables_with_a_gate() {
        let r = read(GATED_AFTER);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let steps = r.raw.steps.as_ref().unwrap();
        let after = steps[2].get_ref().after.as_ref().unwrap().get_ref();
        assert_eq!(after.len(), 2);
        assert_eq!(&GATED_AFTER[after[0].span()], "\"network\"");
        assert_eq!(after[0].get_ref(), &RawAfter::Step("network".into()));
        let RawAfter::Gated(gated) = after[1].get_ref() else {
            panic!("{:?}", after[1]);
        };
        let step = gated.step.as_ref().unwrap();
        assert_eq!(&GATED_AFTER[step.span()], "\"db\"");
        let gate = gated.gate.as_ref().unwrap().get_ref();
        assert_eq!(gate.tcp.as_ref().unwrap().get_ref(), "db:5432");
        assert_eq!(gate.timeout.as_ref().unwrap().get_ref(), "10m");
        // Serde reads the same tree, spans included.
        let by_serde: RawRunbook = toml::from_str(GATED_AFTER).unwrap();
        assert_eq!(by_serde, r.raw);
    }

    #[test]
    fn every_error_in_an_after_entry_is_reported_at_its_own_span() {
        let src = "name = \"x\"\n\
            [[step]]\nname = \"db\"\naction = \"on\"\ntargets = [{ vm = \"d\" }]\n\
            [[step]]\nname = \"app\"\naction = \"on\"\ntargets = [{ vm = \"a\" }]\n\
            after = [{ step = \"db\", gaet = {} }, { gate = { tcp = \"db:5432\" } }, 7, \
            { step = \"db\", gate = { timeout = \"1m\" } }, { step = \"db\", gate = { tcp = 5432 } }]\n";
        let r = read(src);
        let found: Vec<(&str, &str)> = r
            .diagnostics
            .iter()
            .map(|d| (d.code, &src[d.span.clone().unwrap()]))
            .collect();
        assert_eq!(
            found,
            [
                ("runbook::unknown-key", "gaet"),
                ("runbook::missing-key", "{ gate = { tcp = \"db:5432\" } }"),
                ("runbook::wrong-type", "7"),
                ("runbook::invalid-gate", "{ timeout = \"1m\" }"),
                ("runbook::wrong-type", "5432"),
            ],
            "{:#?}",
            r.diagnostics
        );
        assert_eq!(
            r.diagnostics[0].label.as_deref(),
            Some("did you mean `gate`?")
        );
        assert!(r.diagnostics[1].message.contains("has no `step`"));
    }
}
