//! [`raw`] runbook → validated [`model`]: values, references, the step graph and conflicts.
//! Every problem is collected; nothing stops at the first.

use super::diagnostic::{Diagnostic, did_you_mean};
use super::graph::{self, Graph};
use super::model::{
    Action, Amount, ApiSettings, Fallback, Limits, NameOrId, OnFailure, Order, Pattern, Runbook,
    Selector, Step, Waves,
};
use super::raw::{
    HYPERVISORS, RawAmount, RawDefaults, RawNameOrId, RawRunbook, RawSelector, RawStep, Sp,
};
use crate::abiquo::model::VmState;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::time::Duration;

/// Durations beyond this are refused: nobody means them, and timers would overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Validates `raw`, appending diagnostics. Returns a runbook whenever one could be built;
/// the caller discards it if any diagnostic is an error.
pub fn validate(raw: &RawRunbook, source_hash: String, diags: &mut Vec<Diagnostic>) -> Runbook {
    let mut v = Validator { diags };
    v.runbook(raw, source_hash)
}

struct Validator<'d> {
    diags: &'d mut Vec<Diagnostic>,
}

/// Step settings after applying `[defaults]`.
struct Inherited {
    task_timeout: Duration,
    on_failure: OnFailure,
    max_failures: Option<Amount>,
    concurrency: Option<NonZeroUsize>,
    order: Order,
    allow_protected: bool,
    expected_duration: Option<Duration>,
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

    fn api(&mut self, raw: &super::raw::RawApi) -> ApiSettings {
        let endpoint = raw.endpoint.as_ref().and_then(|e| {
            let text = e.get_ref().trim();
            if text.starts_with("https://") || text.starts_with("http://") {
                Some(text.to_owned())
            } else {
                self.err(
                    "runbook::invalid-url",
                    e.span(),
                    format!("`endpoint` is not an http(s) URL: `{text}`"),
                )
                .label("expected e.g. https://abiquo.example.com/api");
                None
            }
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

    fn limits(&mut self, raw: &super::raw::RawLimits) -> Limits {
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

    fn defaults(&mut self, raw: Option<&RawDefaults>) -> Inherited {
        let mut d = Inherited {
            task_timeout: Runbook::DEFAULT_TASK_TIMEOUT,
            on_failure: OnFailure::default(),
            max_failures: None,
            concurrency: None,
            order: Order::default(),
            allow_protected: false,
            expected_duration: None,
        };
        let Some(raw) = raw else { return d };
        if let Some(t) = raw
            .task_timeout
            .as_ref()
            .and_then(|t| self.duration("task_timeout", t))
        {
            d.task_timeout = t;
        }
        if let Some(o) = raw.on_failure.as_ref().and_then(|o| self.on_failure(o)) {
            d.on_failure = o;
        }
        d.max_failures = raw
            .max_failures
            .as_ref()
            .and_then(|m| self.amount("max_failures", m, 0));
        d.concurrency = raw
            .concurrency
            .as_ref()
            .and_then(|c| self.positive("concurrency", c));
        if let Some(o) = raw.order.as_ref().and_then(|o| self.order(o)) {
            d.order = o;
        }
        d.allow_protected = raw.allow_protected.as_ref().is_some_and(|b| *b.get_ref());
        d.expected_duration = raw
            .expected_duration
            .as_ref()
            .and_then(|e| self.duration("expected_duration", e));
        d
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

    fn steps(&mut self, raw: &[Sp<RawStep>], defaults: &Inherited) -> Vec<Step> {
        let steps: Vec<Step> = raw
            .iter()
            .map(|s| self.step(s.get_ref(), defaults))
            .collect();
        let names = self.step_names(raw);
        let mut steps = steps;
        let edges = self.resolve_after(raw, &names);
        for (step, after) in steps.iter_mut().zip(&edges) {
            step.after = after.iter().map(|e| e.to).collect();
        }
        let graph = Graph::new(&edges);
        let cycles = graph.cycles();
        for cycle in &cycles {
            self.report_cycle(raw, &edges, cycle);
        }
        if cycles.is_empty() {
            self.conflicts(raw, &steps, &graph);
        }
        steps
    }

    /// Step names by index (None when unusable), reporting empty and duplicate names.
    fn step_names(&mut self, raw: &[Sp<RawStep>]) -> Vec<Option<String>> {
        let mut seen: HashMap<String, Range<usize>> = HashMap::new();
        let mut names = Vec::new();
        for step in raw {
            let Some(name) = &step.get_ref().name else {
                names.push(None);
                continue;
            };
            let text = name.get_ref().clone();
            if text.trim().is_empty() {
                self.err(
                    "runbook::empty-step-name",
                    name.span(),
                    "step name is empty",
                )
                .label("give the step a unique name")
                .help("`after` refers to steps by name, and reports show it");
                names.push(None);
                continue;
            }
            if let Some(first) = seen.get(&text) {
                let first = first.clone();
                self.err(
                    "runbook::duplicate-step",
                    name.span(),
                    format!("duplicate step name `{text}`"),
                )
                .label("second step with this name")
                .secondary(first, "first defined here")
                .help("step names must be unique: `after` refers to them");
            } else {
                seen.insert(text.clone(), name.span());
            }
            names.push(Some(text));
        }
        names
    }

    fn resolve_after(
        &mut self,
        raw: &[Sp<RawStep>],
        names: &[Option<String>],
    ) -> Vec<Vec<graph::Edge>> {
        // If some step has no usable name, a reference to it would be reported twice.
        let all_named = names.iter().all(Option::is_some);
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .rev() // the first of duplicates wins
            .filter_map(|(i, n)| n.as_deref().map(|n| (n, i)))
            .collect();
        let mut edges = Vec::new();
        for (i, step) in raw.iter().enumerate() {
            let mut out: Vec<graph::Edge> = Vec::new();
            match &step.get_ref().after {
                None if i > 0 => out.push(graph::Edge {
                    to: i - 1,
                    span: None,
                }),
                None => {}
                Some(list) => {
                    for entry in list.get_ref() {
                        let target = entry.get_ref();
                        match index.get(target.as_str()) {
                            // Listing a step twice is harmless.
                            Some(&to) if out.iter().any(|e| e.to == to) => {}
                            Some(&to) => out.push(graph::Edge {
                                to,
                                span: Some(entry.span()),
                            }),
                            None if all_named => {
                                let mut d = Diagnostic::error(
                                    "runbook::unknown-step",
                                    entry.span(),
                                    format!("`after` names a step that does not exist: `{target}`"),
                                );
                                d = match did_you_mean(
                                    target,
                                    names.iter().filter_map(|n| n.as_deref()),
                                ) {
                                    Some(s) => d.label(format!("did you mean `{s}`?")),
                                    None => d.label("no step has this name"),
                                };
                                self.diags.push(d);
                            }
                            None => {}
                        }
                    }
                }
            }
            edges.push(out);
        }
        edges
    }

    fn report_cycle(&mut self, raw: &[Sp<RawStep>], edges: &[Vec<graph::Edge>], cycle: &[usize]) {
        let name = |i: usize| -> String {
            raw.get(i)
                .and_then(|s| s.get_ref().name.as_ref())
                .map_or_else(|| format!("#{}", i + 1), |n| n.get_ref().clone())
        };
        // Where edge i → j is written: the `after` entry, or the step's name when implicit.
        let edge_span = |i: usize, j: usize| -> (Range<usize>, bool) {
            let explicit = edges
                .get(i)
                .and_then(|es| es.iter().find(|e| e.to == j))
                .and_then(|e| e.span.clone());
            match explicit {
                Some(s) => (s, true),
                None => {
                    let step = raw.get(i);
                    let span = step
                        .and_then(|s| s.get_ref().name.as_ref().map(|n| n.span()))
                        .or_else(|| step.map(|s| s.span()))
                        .unwrap_or(0..0);
                    (span, false)
                }
            }
        };
        let mut path: Vec<String> = cycle.iter().map(|&i| format!("`{}`", name(i))).collect();
        if let Some(first) = path.first().cloned() {
            path.push(first);
        }
        let message = if cycle.len() == 1 {
            format!("step {} waits for itself", path[0])
        } else {
            format!("dependency cycle: {}", path.join(" → "))
        };
        let mut labels = Vec::new();
        for (k, &i) in cycle.iter().enumerate() {
            let j = cycle[(k + 1) % cycle.len()];
            let (span, explicit) = edge_span(i, j);
            let text = if explicit {
                format!("`{}` waits for `{}`", name(i), name(j))
            } else {
                format!(
                    "`{}` waits for `{}` (no `after`: the step above)",
                    name(i),
                    name(j)
                )
            };
            labels.push((span, text));
        }
        let mut labels = labels.into_iter();
        let Some((span, label)) = labels.next() else {
            return;
        };
        let mut d = Diagnostic::error("runbook::dependency-cycle", span, message)
            .label(label)
            .help("a step without `after` waits for the step above it; `after = []` starts a step at once");
        for (s, l) in labels {
            d = d.with_secondary(s, l);
        }
        self.diags.push(d);
    }

    /// Warns when two steps that may run at the same time could act on the same VMs with
    /// different actions. Only what the text proves is reported (see [`graph::may_overlap`]).
    fn conflicts(&mut self, raw: &[Sp<RawStep>], steps: &[Step], graph: &Graph) {
        for j in 0..steps.len() {
            for i in 0..j {
                let (a, b) = (&steps[i], &steps[j]);
                if a.action == b.action || !graph.concurrent(i, j) {
                    continue;
                }
                let found = a.targets.iter().enumerate().find_map(|(x, sa)| {
                    b.targets
                        .iter()
                        .enumerate()
                        .find(|(_, sb)| graph::may_overlap(sa, sb))
                        .map(|(y, _)| (x, y))
                });
                let Some((x, y)) = found else { continue };
                let span_of = |step: usize, t: usize| {
                    raw.get(step)
                        .and_then(|s| s.get_ref().targets.as_ref())
                        .and_then(|ts| ts.get_ref().get(t))
                        .map_or(0..0, |t| t.span())
                };
                let d = Diagnostic::warning(
                    "runbook::conflicting-steps",
                    span_of(j, y),
                    format!(
                        "steps `{}` ({}) and `{}` ({}) can run at the same time and may select the same VMs",
                        a.name, a.action, b.name, b.action
                    ),
                )
                .label(format!("may overlap a target of `{}`", a.name))
                .with_secondary(span_of(i, x), format!("`{}` selects these", a.name))
                .help(format!(
                    "make one step wait for the other (e.g. after = [\"{}\"]) or make the selectors disjoint",
                    a.name
                ));
                self.diags.push(d);
            }
        }
    }

    fn step(&mut self, raw: &RawStep, d: &Inherited) -> Step {
        let action = raw.action.as_ref().and_then(|a| self.action(a));
        let targets = self.selectors(raw.targets.as_ref(), action);
        let exclude = self.selectors(raw.exclude.as_ref(), None);
        let order = raw
            .order
            .as_ref()
            .and_then(|o| self.order(o))
            .unwrap_or(d.order);
        let concurrency = match &raw.concurrency {
            Some(c) => self.positive("concurrency", c),
            None => d.concurrency,
        };
        if let (Order::Sequential, Some(c)) = (order, &raw.concurrency) {
            self.warn(
                "runbook::ignored-key",
                c.span(),
                "`concurrency` has no effect with order = \"sequential\"",
            )
            .label("sequential steps act on one VM at a time");
        }
        let waves = raw.waves.as_ref().and_then(|w| {
            let w = w.get_ref();
            let size = w.size.as_ref().and_then(|s| self.amount("size", s, 1))?;
            let pause = match &w.pause {
                Some(p) => self.duration("pause", p)?,
                None => Duration::ZERO,
            };
            Some(Waves { size, pause })
        });
        let task_timeout = match &raw.task_timeout {
            Some(t) => self.duration("task_timeout", t).unwrap_or(d.task_timeout),
            None => d.task_timeout,
        };
        let fallback = raw
            .fallback
            .as_ref()
            .and_then(|f| self.fallback(f, raw.action.as_ref(), action));
        let on_failure = match &raw.on_failure {
            Some(o) => self.on_failure(o).unwrap_or(d.on_failure),
            None => d.on_failure,
        };
        let max_failures = match &raw.max_failures {
            Some(m) => self.amount("max_failures", m, 0),
            None => d.max_failures,
        };
        let expected_duration = match &raw.expected_duration {
            Some(e) => self.duration("expected_duration", e),
            None => d.expected_duration,
        };
        Step {
            name: raw
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_default(),
            action: action.unwrap_or(Action::On),
            targets,
            exclude,
            after: Vec::new(),
            order,
            concurrency,
            waves,
            fallback,
            task_timeout,
            on_failure,
            max_failures,
            allow_protected: raw
                .allow_protected
                .as_ref()
                .map_or(d.allow_protected, |b| *b.get_ref()),
            expected_duration,
        }
    }

    fn fallback(
        &mut self,
        raw: &Sp<super::raw::RawFallback>,
        raw_action: Option<&Sp<String>>,
        action: Option<Action>,
    ) -> Option<Fallback> {
        let f = raw.get_ref();
        let fb_action = match &f.action {
            Some(a) if a.get_ref() == "off" => Some(Action::Off),
            Some(a) => {
                self.err(
                    "runbook::invalid-value",
                    a.span(),
                    format!("unsupported fallback action `{}`", a.get_ref()),
                )
                .label("the only fallback is `off` (hard power off)");
                None
            }
            None => Some(Action::Off),
        };
        let after = f.after.as_ref().and_then(|a| self.duration("after", a));
        if let Some(a) = action
            && a != Action::Shutdown
        {
            let mut d = Diagnostic::error(
                "runbook::fallback-not-shutdown",
                raw.span(),
                format!("`fallback` only applies to `shutdown` steps, not `{a}`"),
            )
            .label("remove this fallback")
            .help("a fallback hard-offs VMs whose graceful shutdown fails or is too slow");
            if let Some(ra) = raw_action {
                d = d.with_secondary(ra.span(), format!("this step's action is `{a}`"));
            }
            self.diags.push(d);
            return None;
        }
        let after = after?;
        Some(Fallback {
            action: fb_action?,
            after,
        })
    }

    fn selectors(
        &mut self,
        raw: Option<&Sp<Vec<Sp<RawSelector>>>>,
        action: Option<Action>,
    ) -> Vec<Selector> {
        let Some(raw) = raw else { return Vec::new() };
        raw.get_ref()
            .iter()
            .map(|s| self.selector(s.get_ref(), action))
            .collect()
    }

    fn selector(&mut self, raw: &RawSelector, action: Option<Action>) -> Selector {
        let hypervisor = raw.hypervisor.as_ref().and_then(|h| {
            let text = h.get_ref();
            if HYPERVISORS.contains(&text.as_str()) {
                Some(text.clone())
            } else {
                self.unknown_choice("runbook::unknown-hypervisor", "hypervisor", h, HYPERVISORS);
                None
            }
        });
        if let (Some(Action::Deallocate), Some(h), Some(raw_h)) =
            (action, &hypervisor, &raw.hypervisor)
            && h != "AZURE"
        {
            self.err(
                "runbook::deallocate-non-azure",
                raw_h.span(),
                format!("`deallocate` only works on Azure VMs, but this selector pins `{h}`"),
            )
            .label("not AZURE")
            .help("use `off` or `shutdown` for VMs on other hypervisors");
        }
        let known_states: Vec<&str> = VmState::KNOWN.iter().map(VmState::as_str).collect();
        Selector {
            vdc: raw.vdc.as_ref().and_then(|v| self.name_or_id("vdc", v)),
            vapp: raw.vapp.as_ref().and_then(|v| self.name_or_id("vapp", v)),
            vm: raw.vm.as_ref().and_then(|v| self.pattern("vm", v)),
            label: raw.label.as_ref().and_then(|v| self.pattern("label", v)),
            state: raw
                .state
                .as_ref()
                .and_then(|s| match VmState::parse_known(s.get_ref()) {
                    Some(state) => Some(state),
                    None => {
                        self.unknown_choice("runbook::unknown-state", "state", s, &known_states);
                        None
                    }
                }),
            hypervisor,
            href: raw.href.as_ref().and_then(|h| {
                let text = h.get_ref().trim();
                if text.starts_with("https://") || text.starts_with("http://") {
                    Some(text.to_owned())
                } else {
                    self.err(
                        "runbook::invalid-url",
                        h.span(),
                        format!("`href` is not an http(s) URL: `{text}`"),
                    )
                    .label("expected the VM's full URL (its `edit` link)");
                    None
                }
            }),
        }
    }

    fn name_or_id(&mut self, key: &str, raw: &Sp<RawNameOrId>) -> Option<NameOrId> {
        match raw.get_ref() {
            RawNameOrId::Id(n) => match u64::try_from(*n) {
                Ok(id) => Some(NameOrId::Id(id)),
                Err(_) => {
                    self.err(
                        "runbook::out-of-range",
                        raw.span(),
                        format!("`{key}` id cannot be negative"),
                    )
                    .label("negative");
                    None
                }
            },
            RawNameOrId::Name(s) => self
                .pattern(key, &Sp::new(raw.span(), s.clone()))
                .map(NameOrId::Name),
        }
    }

    fn pattern(&mut self, key: &str, raw: &Sp<String>) -> Option<Pattern> {
        let text = raw.get_ref();
        if text.trim().is_empty() {
            self.err(
                "runbook::empty-value",
                raw.span(),
                format!("`{key}` is empty"),
            )
            .label("an empty pattern matches nothing")
            .help(format!(
                "remove `{key}` or give a name or glob such as \"web-*\""
            ));
            return None;
        }
        match Pattern::new(text) {
            Ok(p) => Some(p),
            Err(e) => {
                let reason = match e.kind() {
                    globset::ErrorKind::UnclosedClass => "unclosed character class `[`".to_owned(),
                    globset::ErrorKind::UnopenedAlternates => "`}` without `{`".to_owned(),
                    globset::ErrorKind::UnclosedAlternates => "unclosed `{`".to_owned(),
                    globset::ErrorKind::NestedAlternates => "nested `{` alternates".to_owned(),
                    other => other.to_string(),
                };
                self.err(
                    "runbook::invalid-glob",
                    raw.span(),
                    format!("invalid pattern in `{key}`: {reason}"),
                )
                .label("not a valid glob")
                .help("globs use * (any text), ? (one character), [abc] and {a,b}");
                None
            }
        }
    }

    fn action(&mut self, raw: &Sp<String>) -> Option<Action> {
        let text = raw.get_ref();
        if let Some(a) = Action::parse(text) {
            return Some(a);
        }
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        self.unknown_choice("runbook::unknown-action", "action", raw, &names);
        None
    }

    fn on_failure(&mut self, raw: &Sp<String>) -> Option<OnFailure> {
        match raw.get_ref().as_str() {
            "abort" => Some(OnFailure::Abort),
            "continue" => Some(OnFailure::Continue),
            _ => {
                self.unknown_choice(
                    "runbook::invalid-value",
                    "on_failure",
                    raw,
                    &["abort", "continue"],
                );
                None
            }
        }
    }

    fn order(&mut self, raw: &Sp<String>) -> Option<Order> {
        match raw.get_ref().as_str() {
            "parallel" => Some(Order::Parallel),
            "sequential" => Some(Order::Sequential),
            _ => {
                self.unknown_choice(
                    "runbook::invalid-value",
                    "order",
                    raw,
                    &["parallel", "sequential"],
                );
                None
            }
        }
    }

    fn unknown_choice(&mut self, code: &'static str, what: &str, raw: &Sp<String>, known: &[&str]) {
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
    fn positive(&mut self, key: &str, raw: &Sp<i64>) -> Option<NonZeroUsize> {
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
    fn amount(&mut self, key: &str, raw: &Sp<RawAmount>, min_count: i64) -> Option<Amount> {
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
                        Ok(_) => {
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
                        Err(_) if number.trim().starts_with('-') => {
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
                        Err(_) => {
                            self.err(
                                "runbook::invalid-amount",
                                raw.span(),
                                format!("`{key}` is not a whole percentage: `{text}`"),
                            )
                            .label("expected e.g. \"10%\"");
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

    fn duration(&mut self, key: &str, raw: &Sp<String>) -> Option<Duration> {
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

    fn err(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Pending<'_> {
        Pending {
            diags: self.diags,
            diag: Some(Diagnostic::error(code, span, message)),
        }
    }

    fn warn(
        &mut self,
        code: &'static str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Pending<'_> {
        Pending {
            diags: self.diags,
            diag: Some(Diagnostic::warning(code, span, message)),
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
mod tests {
    use crate::runbook::model::{Amount, Runbook};
    use crate::runbook::parse;
    use std::time::Duration;

    fn runbook(body: &str) -> Runbook {
        let src = format!("name = \"t\"\n{body}");
        match parse("t.toml", &src) {
            Ok(loaded) => loaded.runbook,
            Err(f) => panic!("{}", f.render()),
        }
    }

    fn codes(body: &str) -> Vec<&'static str> {
        let src = format!("name = \"t\"\n{body}");
        match parse("t.toml", &src) {
            Ok(loaded) => loaded.warnings.iter().map(|d| d.code).collect(),
            Err(f) => f.diagnostics.iter().map(|d| d.code).collect(),
        }
    }

    const STEP: &str = "action = \"on\"\ntargets = [{ vm = \"x\" }]\n";

    #[test]
    fn after_defaults_to_the_step_above_and_may_name_later_steps() {
        let rb = runbook(&format!(
            "[[step]]\nname = \"a\"\nafter = [\"c\"]\n{STEP}\
             [[step]]\nname = \"b\"\n{STEP}\
             [[step]]\nname = \"c\"\nafter = []\n{STEP}\
             [[step]]\nname = \"d\"\nafter = [\"a\", \"c\", \"a\"]\n{STEP}"
        ));
        let after: Vec<Vec<usize>> = rb.steps.iter().map(|s| s.after.clone()).collect();
        assert_eq!(after, vec![vec![2], vec![0], vec![], vec![0, 2]]);
    }

    #[test]
    fn step_settings_override_defaults_which_override_built_ins() {
        let rb = runbook(&format!(
            "[defaults]\ntask_timeout = \"1h 30m\"\nmax_failures = 0\norder = \"sequential\"\nallow_protected = true\n\
             [[step]]\nname = \"a\"\n{STEP}\
             [[step]]\nname = \"b\"\ntask_timeout = \"2m\"\nmax_failures = \"100%\"\norder = \"parallel\"\nallow_protected = false\n{STEP}"
        ));
        let (a, b) = (&rb.steps[0], &rb.steps[1]);
        assert_eq!(a.task_timeout, Duration::from_secs(5400));
        assert_eq!(a.max_failures, Some(Amount::Count(0)));
        assert_eq!(a.order, crate::runbook::model::Order::Sequential);
        assert!(a.allow_protected);
        assert_eq!(b.task_timeout, Duration::from_secs(120));
        assert_eq!(b.max_failures, Some(Amount::Percent(100)));
        assert_eq!(b.order, crate::runbook::model::Order::Parallel);
        assert!(!b.allow_protected);
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

    #[test]
    fn steps_that_wait_for_each_other_never_conflict() {
        let web = "targets = [{ vdc = \"prod\", vapp = \"web-*\" }]\n";
        // Same selectors, different actions, but sequential: fine.
        let sequential = format!(
            "[[step]]\nname = \"a\"\naction = \"shutdown\"\n{web}[[step]]\nname = \"b\"\naction = \"on\"\n{web}"
        );
        assert!(codes(&sequential).is_empty());
        let parallel = format!(
            "[[step]]\nname = \"a\"\naction = \"shutdown\"\n{web}[[step]]\nname = \"b\"\nafter = []\naction = \"on\"\n{web}"
        );
        assert_eq!(codes(&parallel), ["runbook::conflicting-steps"]);
        // Same action in parallel: duplicate work, not a conflict.
        let same = parallel.replace("\"on\"", "\"shutdown\"");
        assert!(codes(&same).is_empty());
    }

    #[test]
    fn deallocate_is_accepted_on_azure_or_unpinned_selectors() {
        let body = "[[step]]\nname = \"a\"\naction = \"deallocate\"\ntargets = [{ vdc = \"azure-prod\" }, { hypervisor = \"AZURE\" }]\n";
        assert!(codes(body).is_empty());
    }
}
