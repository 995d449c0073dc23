//! The `after` graph: step names, references between steps, dependency cycles, and
//! warnings for steps that may run at once on the same VMs with different actions.

use super::Validator;
use super::steps::Inherited;
use crate::runbook::diagnostic::{Diagnostic, did_you_mean};
use crate::runbook::graph::{self, Graph};
use crate::runbook::model::Step;
use crate::runbook::raw::{RawStep, Sp};
use std::collections::HashMap;
use std::ops::Range;

impl Validator<'_> {
    pub(super) fn steps(&mut self, raw: &[Sp<RawStep>], defaults: &Inherited) -> Vec<Step> {
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
}
