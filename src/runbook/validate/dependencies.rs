//! The `after` graph: step names, references between steps, dependency cycles, and
//! warnings for steps that may run at once on the same VMs with different actions.

use super::Validator;
use super::steps::Inherited;
use crate::runbook::conflicts;
use crate::runbook::diagnostic::{Diagnostic, did_you_mean};
use crate::runbook::graph::{self, Graph};
use crate::runbook::model::{EdgeGate, Step};
use crate::runbook::raw::{RawAfter, RawStep, Sp};
use std::collections::HashMap;
use std::ops::Range;

/// Steps named in a grouped conflict warning; the rest are counted.
const CONFLICT_NAMES: usize = 5;
/// Steps named (and edges drawn) in a dependency cycle; the rest are counted.
const CYCLE_NAMES: usize = 10;
/// References to unknown steps that get a "did you mean": each costs a pass over all names.
const SUGGESTIONS: usize = 100;

impl Validator<'_> {
    pub(super) fn steps(&mut self, raw: &[Sp<RawStep>], defaults: &Inherited) -> Vec<Step> {
        let steps: Vec<Step> = raw
            .iter()
            .map(|s| self.step(s.get_ref(), defaults))
            .collect();
        let names = self.step_names(raw);
        let mut steps = steps;
        let (edges, gates) = self.resolve_after(raw, &names);
        for ((step, after), gates) in steps.iter_mut().zip(&edges).zip(gates) {
            step.after = after.iter().map(|e| e.to).collect();
            step.after_gates = gates;
        }
        for (step, raw) in steps.iter().zip(raw) {
            if let (Some(gate), Some(raw_gate)) = (&step.gate, &raw.get_ref().gate)
                && gate.check.per_vm()
                && step.after.is_empty()
            {
                self.err(
                    "runbook::invalid-gate",
                    raw_gate.span(),
                    format!(
                        "step '{}' waits for no step, so its gate has no VMs for `{{vm.…}}`",
                        step.name
                    ),
                )
                .label("checked for the VMs of the steps this one waits for")
                .help("name the steps in `after`, or use `waves.gate` to check each wave's VMs");
            }
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

    /// Each step's edges, and the gates on them (every gate is validated, whether its step
    /// name resolves or not).
    fn resolve_after(
        &mut self,
        raw: &[Sp<RawStep>],
        names: &[Option<String>],
    ) -> (Vec<Vec<graph::Edge>>, Vec<Vec<EdgeGate>>) {
        // If some step has no usable name, a reference to it would be reported twice.
        let all_named = names.iter().all(Option::is_some);
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .rev() // the first of duplicates wins
            .filter_map(|(i, n)| n.as_deref().map(|n| (n, i)))
            .collect();
        let mut edges = Vec::new();
        let mut all_gates = Vec::new();
        let mut unknown = 0;
        for (i, step) in raw.iter().enumerate() {
            let mut out: Vec<graph::Edge> = Vec::new();
            let mut gates: Vec<EdgeGate> = Vec::new();
            match &step.get_ref().after {
                None if i > 0 => out.push(graph::Edge {
                    to: i - 1,
                    span: None,
                }),
                None => {}
                Some(list) => {
                    for entry in list.get_ref() {
                        // The step's name and where it is written; a table without `step`
                        // was reported by the reader.
                        let (target, span, gate) = match entry.get_ref() {
                            RawAfter::Step(name) => (name, entry.span(), None),
                            RawAfter::Gated(g) => {
                                let gate = g.gate.as_ref().and_then(|g| self.gate(g));
                                match &g.step {
                                    Some(name) => (name.get_ref(), name.span(), gate),
                                    None => continue,
                                }
                            }
                        };
                        match index.get(target.as_str()) {
                            Some(&to) => {
                                // Listing a step twice is harmless; each gate on it is kept.
                                if !out.iter().any(|e| e.to == to) {
                                    out.push(graph::Edge {
                                        to,
                                        span: Some(span),
                                    });
                                }
                                if let Some(gate) = gate {
                                    gates.push(EdgeGate { after: to, gate });
                                }
                            }
                            None if all_named => {
                                let mut d = Diagnostic::error(
                                    "runbook::unknown-step",
                                    span,
                                    format!("`after` names a step that does not exist: `{target}`"),
                                );
                                unknown += 1;
                                let suggestion = (unknown <= SUGGESTIONS)
                                    .then(|| {
                                        did_you_mean(
                                            target,
                                            names.iter().filter_map(|n| n.as_deref()),
                                        )
                                    })
                                    .flatten();
                                d = match suggestion {
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
            all_gates.push(gates);
        }
        (edges, all_gates)
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
        // A long cycle is named by its first steps and counted; its first edges are drawn.
        let mut path: Vec<String> = cycle
            .iter()
            .take(CYCLE_NAMES)
            .map(|&i| format!("`{}`", name(i)))
            .collect();
        if cycle.len() > CYCLE_NAMES {
            path.push(format!("… ({} steps in all)", cycle.len()));
        }
        if let Some(first) = path.first().cloned() {
            path.push(first);
        }
        let message = if cycle.len() == 1 {
            format!("step {} waits for itself", path[0])
        } else {
            format!("dependency cycle: {}", path.join(" → "))
        };
        let mut labels = Vec::new();
        for (k, &i) in cycle.iter().enumerate().take(CYCLE_NAMES) {
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

    /// Warns when steps that may run at the same time could act on the same VMs with
    /// different actions: one warning per group of such steps (see [`conflicts`]). Only what
    /// the text proves is reported (see [`graph::may_overlap`]).
    fn conflicts(&mut self, raw: &[Sp<RawStep>], steps: &[Step], graph: &Graph) {
        let found = conflicts::find(steps, graph);
        let span_of = |step: usize, t: usize| {
            raw.get(step)
                .and_then(|s| s.get_ref().targets.as_ref())
                .and_then(|ts| ts.get_ref().get(t))
                .map_or(0..0, |t| t.span())
        };
        let name = |i: usize| steps.get(i).map_or("?", |s| s.name.as_str());
        let action = |i: usize| steps.get(i).map_or("?", |s| s.action.as_str());
        for group in &found.groups {
            let [first, second, ..] = group.members.as_slice() else {
                continue;
            };
            if group.members.len() == 2 {
                // Two steps: name both, pointing at the later one.
                let (a, b) = (first, second);
                self.warn(
                    "runbook::conflicting-steps",
                    span_of(b.step, b.target),
                    format!(
                        "steps `{}` ({}) and `{}` ({}) can run at the same time and may select the same VMs",
                        name(a.step),
                        action(a.step),
                        name(b.step),
                        action(b.step)
                    ),
                )
                .label(format!("may overlap a target of `{}`", name(a.step)))
                .secondary(
                    span_of(a.step, a.target),
                    format!("`{}` selects these", name(a.step)),
                )
                .help(format!(
                    "make one step wait for the other (e.g. after = [\"{}\"]) or make the selectors disjoint",
                    name(a.step)
                ));
                continue;
            }
            let mut actions: Vec<&str> = group.members.iter().map(|m| action(m.step)).collect();
            actions.sort_unstable();
            actions.dedup();
            let listed: Vec<String> = group
                .members
                .iter()
                .take(CONFLICT_NAMES)
                .map(|m| format!("`{}`", name(m.step)))
                .collect();
            let rest = group.members.len() - listed.len();
            let names = if rest > 0 {
                format!("{} and {rest} more", listed.join(", "))
            } else {
                listed.join(", ")
            };
            let partner = first.partner;
            self.warn(
                "runbook::conflicting-steps",
                span_of(first.step, first.target),
                format!(
                    "{} steps can run at the same time and may select the same VMs with different actions ({}): {names}",
                    group.members.len(),
                    actions.join(", ")
                ),
            )
            .label(format!(
                "`{}` ({}) may overlap steps running at the same time",
                name(first.step),
                action(first.step)
            ))
            .secondary(
                span_of(partner, first.partner_target),
                format!("`{}` ({}) selects these", name(partner), action(partner)),
            )
            .help(
                "order the steps with `after` so that different actions on the same VMs never overlap, or make the selectors disjoint",
            );
        }
        if !found.complete {
            self.warn(
                "runbook::conflicts-unchecked",
                0..0,
                "too many steps and selectors to check every pair for conflicting actions",
            )
            .label("conflicts between steps were checked only in part")
            .help("split the runbook, or use fewer distinct glob selectors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

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
    fn an_after_entry_with_a_gate_waits_for_its_step_and_keeps_the_gate_on_that_edge() {
        use crate::runbook::model::{EdgeGate, Gate, GateCheck};
        let rb = runbook(&format!(
            "[[step]]\nname = \"network\"\n{STEP}\
             [[step]]\nname = \"db\"\nafter = []\n{STEP}\
             [[step]]\nname = \"app\"\n{STEP}\
             after = [\"network\", {{ step = \"db\", gate = {{ tcp = \"db:5432\", timeout = \"10m\" }} }}, \
             {{ step = \"db\", gate = {{ command = [\"check-db\"], interval = \"1s\" }} }}, {{ step = \"network\" }}]\n"
        ));
        let app = &rb.steps[2];
        assert_eq!(app.after, [0, 1]);
        assert_eq!(
            app.after_gates,
            [
                EdgeGate {
                    after: 1,
                    gate: Gate {
                        check: GateCheck::Tcp {
                            address: "db:5432".into()
                        },
                        timeout_ms: 600_000,
                        interval_ms: 5_000,
                    },
                },
                EdgeGate {
                    after: 1,
                    gate: Gate {
                        check: GateCheck::Command {
                            argv: vec!["check-db".into()]
                        },
                        timeout_ms: 300_000,
                        interval_ms: 1_000,
                    },
                },
            ]
        );
        assert!(rb.steps[0].after_gates.is_empty() && rb.steps[1].after_gates.is_empty());
    }

    #[test]
    fn a_gated_after_entry_is_checked_at_its_spans_like_any_after_entry_and_gate() {
        let src = format!(
            "name = \"t\"\n[[step]]\nname = \"db up\"\n{STEP}\
             [[step]]\nname = \"app\"\n{STEP}\
             after = [{{ step = \"db upp\", gate = {{ tcp = \"no-port\" }} }}, \
             {{ step = \"db up\", gate = {{ http = {{ url = \"https://db/health\", status = 700 }} }} }}, \
             {{ step = \"db up\", gate = {{ approve = \" \", timeout = \"soon\" }} }}, \
             {{ step = \"app\" }}]\n"
        );
        let failure = match crate::runbook::parse("t.toml", &src) {
            Ok(_) => panic!("accepted"),
            Err(f) => f,
        };
        let found: Vec<(&str, &str)> = failure
            .diagnostics
            .iter()
            .map(|d| (d.code, &src[d.span.clone().unwrap()]))
            .collect();
        assert_eq!(
            found,
            [
                ("runbook::unknown-step", "\"db upp\""),
                ("runbook::invalid-gate", "\"no-port\""),
                ("runbook::out-of-range", "700"),
                ("runbook::invalid-duration", "\"soon\""),
                ("runbook::dependency-cycle", "\"app\""),
            ],
            "{}",
            failure.render()
        );
        assert_eq!(
            failure.diagnostics[0].label.as_deref(),
            Some("did you mean `db up`?")
        );
    }
}
