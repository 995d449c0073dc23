//! Starting before the listing ends. A region's listing takes seconds (a thousand pages);
//! when the runbook allows it, `run` starts its first step on the VMs of the first pages
//! while the rest are read, and the plan is made whole once the last page is in.
//!
//! The step that starts early is the first in step order, and only when what it does with
//! a VM depends on nothing but that VM: one selector (so its targets come in listing order
//! and the first pages give the first targets), no gate before it, waves sized by count (so
//! the first wave is known without the total), and no `approve` gate anywhere (the operator
//! would be asked before seeing the plan). Its VMs are handed out in the order, and with the
//! numbers, the whole plan gives them; [`complete`] keeps them so even when the listing
//! changed while it was read.

use crate::abiquo::model::ListedVm;
use crate::plan::{
    Disposition, FailureLimit, Listed, Plan, PlannedFallback, PlannedVm, build, step_order,
    target_of, waves,
};
use crate::runbook::model::{Amount, Gate, GateCheck, Runbook, Step};
use std::collections::HashSet;

/// The step of `runbook` that may start on the first pages, or why none may.
pub fn head_step(runbook: &Runbook) -> Result<usize, &'static str> {
    let Some(&index) = step_order(runbook).first() else {
        return Err("the runbook has no steps");
    };
    let Some(step) = runbook.steps.get(index) else {
        return Err("the runbook has no steps");
    };
    let approve = |g: &Gate| matches!(g.check, GateCheck::Approve { .. });
    let asks = runbook.steps.iter().any(|s| {
        s.gate.iter().any(approve)
            || s.waves.iter().filter_map(|w| w.gate.as_ref()).any(approve)
            || s.after_gates.iter().any(|e| approve(&e.gate))
    });
    if asks {
        Err("an `approve` gate asks the operator, who must see the whole plan first")
    } else if step.targets.len() != 1 {
        Err("its first step selects with more than one selector")
    } else if !step.after.is_empty() || step.gate.is_some() {
        Err("its first step waits for a gate")
    } else if step
        .waves
        .as_ref()
        .is_some_and(|w| !matches!(w.sizes.first(), None | Some(Amount::Count(_))))
    {
        Err("its first step's first wave is a share of its VMs")
    } else {
        Ok(index)
    }
}

/// The plan a run starts from before its listing ends: the head step alone, with no VMs
/// yet (they are journaled one by one as they are handed out).
pub fn skeleton(runbook: &Runbook, index: usize, endpoint: &str) -> Plan {
    let mut plan = build(runbook, &[], endpoint);
    plan.steps.retain(|s| s.index == index);
    plan
}

/// Adds to the head step of `plan` (a skeleton and what was added to it so far) its target
/// number `target`, as journaled when handed out; `in_first_wave` when it was placed there.
/// A target out of turn is left out: the plan holds only a prefix of the step's targets.
pub fn add_handed(
    plan: &mut Plan,
    step: usize,
    target: usize,
    planned: &PlannedVm,
    in_first_wave: bool,
) {
    let Some(step) = plan.steps.iter_mut().find(|s| s.index == step) else {
        return;
    };
    if step.targets.len() != target {
        return;
    }
    step.targets.push(planned.clone());
    if in_first_wave {
        match step.waves.first_mut() {
            Some(first) => first.push(target),
            None => step.waves.push(vec![target]),
        }
    }
}

/// A target of the head step, numbered as in the whole plan.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadVm {
    pub target: usize,
    pub planned: PlannedVm,
    /// Its place in the step's first wave, when it is in it (every VM the step looks at
    /// is, but the acting ones past a first wave of a given size).
    pub pos: Option<usize>,
}

/// Turns listed VMs, in listing order, into the head step's targets.
pub struct HeadTargets<'r> {
    step: &'r Step,
    fallback: Option<PlannedFallback>,
    seen: HashSet<u64>,
    /// Targets so far.
    targets: usize,
    /// Of which predicted to act.
    acting: usize,
    /// Acting VMs the first wave holds (`None`: all).
    first_wave: Option<usize>,
    /// VMs in the first wave so far.
    members: usize,
}

impl<'r> HeadTargets<'r> {
    pub fn new(runbook: &'r Runbook, index: usize) -> Option<Self> {
        let step = runbook.steps.get(index)?;
        let first_wave = step
            .waves
            .as_ref()
            .and_then(|w| w.sizes.first())
            .map(|a| a.of(0).max(1));
        Some(Self {
            step,
            fallback: step.fallback.as_ref().map(PlannedFallback::of),
            seen: HashSet::new(),
            targets: 0,
            acting: 0,
            first_wave,
            members: 0,
        })
    }

    /// Its first wave has all the acting VMs it holds: the rest wait for the whole plan.
    pub fn first_wave_full(&self) -> bool {
        self.first_wave.is_some_and(|n| self.acting >= n)
    }

    /// The next listed VM: a target when the step's selector picks it.
    pub fn next(&mut self, vm: &ListedVm) -> Option<HeadVm> {
        let selector = self.step.targets.first()?;
        if !crate::plan::select::matches(selector, vm) || !self.seen.insert(vm.id) {
            return None;
        }
        let planned = target_of(self.step, self.fallback.as_ref(), vm, None);
        let target = self.targets;
        self.targets += 1;
        let acts = matches!(planned.disposition, Disposition::Act { .. });
        if acts {
            self.acting += 1;
        }
        let member = planned.disposition.is_live()
            && !(acts && self.first_wave.is_some_and(|n| self.acting > n));
        let pos = member.then(|| {
            self.members += 1;
            self.members - 1
        });
        Some(HeadVm {
            target,
            planned,
            pos,
        })
    }
}

/// [`complete`], keeping the listing for acting without a read in `listed` (which holds
/// the VMs the head took as they were listed).
pub fn whole_plan(
    runbook: &Runbook,
    vms: Vec<ListedVm>,
    endpoint: &str,
    index: usize,
    head: Vec<PlannedVm>,
    listed: Listed,
) -> Plan {
    let mut plan = complete(runbook, &vms, endpoint, index, head);
    plan.keep_listing_in(listed, vms);
    plan
}

/// The whole plan from the whole listing, the head step's first targets being `head`,
/// as they were handed out. When the listing did not change while it was read they are
/// what it gives anyway; otherwise the step's other VMs follow them, and its waves and
/// thresholds are made again.
pub fn complete(
    runbook: &Runbook,
    vms: &[ListedVm],
    endpoint: &str,
    index: usize,
    head: Vec<PlannedVm>,
) -> Plan {
    let mut plan = build(runbook, vms, endpoint);
    let (Some(step), Some(rb_step)) = (
        plan.steps.iter_mut().find(|s| s.index == index),
        runbook.steps.get(index),
    ) else {
        return plan;
    };
    if step.targets.len() >= head.len() && step.targets.iter().zip(&head).all(|(a, b)| a == b) {
        return plan;
    }
    tracing::warn!(
        "the VMs changed while they were listed; step '{}' keeps the {} it started with",
        step.name,
        head.len()
    );
    let ids: HashSet<u64> = head.iter().map(|t| t.vm.id).collect();
    let rest: Vec<PlannedVm> = std::mem::take(&mut step.targets)
        .into_iter()
        .filter(|t| !ids.contains(&t.vm.id))
        .collect();
    step.targets = head;
    step.targets.extend(rest);
    step.waves = waves(rb_step, &step.targets);
    let live = step.live_count();
    step.max_failures = rb_step.max_failures.map(|a| FailureLimit::of(a, live));
    plan.max_failures = runbook
        .limits
        .max_failures
        .map(|a| FailureLimit::of(a, plan.total_live()));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{lab, listed, runbook, sel_vm, step};
    use crate::runbook::model::{Action, EdgeGate, Waves};
    use std::time::Duration;

    fn waves(sizes: Vec<Amount>) -> Option<Waves> {
        Some(Waves {
            sizes,
            pause: Duration::ZERO,
            gate: None,
        })
    }

    fn gate(check: GateCheck) -> Gate {
        Gate {
            check,
            timeout_ms: 1000,
            interval_ms: 100,
        }
    }

    #[test]
    fn a_run_starts_early_only_when_its_first_step_depends_on_each_vm_alone() {
        let off = || step("off", Action::Off, vec![sel_vm("*")]);
        assert_eq!(head_step(&runbook(vec![off()])), Ok(0));
        // The first in step order, not in the file.
        let mut later = off();
        later.after = vec![1];
        assert_eq!(head_step(&runbook(vec![later, off()])), Ok(1));
        let mut two = off();
        two.targets.push(sel_vm("db-*"));
        assert!(head_step(&runbook(vec![two])).is_err());
        let mut gated = off();
        gated.gate = Some(gate(GateCheck::Tcp {
            address: "127.0.0.1:22".into(),
        }));
        assert!(head_step(&runbook(vec![gated])).is_err());
        let mut share = off();
        share.waves = waves(vec![Amount::Percent(10)]);
        assert!(head_step(&runbook(vec![share])).is_err());
        let mut count = off();
        count.waves = waves(vec![Amount::Count(5), Amount::Percent(50)]);
        assert_eq!(head_step(&runbook(vec![count])), Ok(0));
        // An operator asked anywhere in the run must have seen the plan.
        let mut asks = off();
        asks.after = vec![0];
        asks.after_gates = vec![EdgeGate {
            after: 0,
            gate: gate(GateCheck::Approve {
                message: "go?".into(),
            }),
        }];
        assert!(head_step(&runbook(vec![off(), asks])).is_err());
    }

    #[test]
    fn targets_handed_out_are_numbered_and_placed_as_the_whole_plan_has_them() {
        let mut s = step("off", Action::Off, vec![sel_vm("*")]);
        s.waves = waves(vec![Amount::Count(2)]);
        s.exclude = vec![sel_vm("db-02")];
        let rb = runbook(vec![s]);
        let vms = listed(&lab());
        let mut head = HeadTargets::new(&rb, 0).unwrap();
        let handed: Vec<HeadVm> = vms.iter().filter_map(|vm| head.next(vm)).collect();
        let plan = build(&rb, &vms, "http://x/api");
        let whole = &plan.steps[0];
        let planned: Vec<&PlannedVm> = handed.iter().map(|h| &h.planned).collect();
        assert_eq!(planned, whole.targets.iter().collect::<Vec<_>>());
        assert!(handed.iter().enumerate().all(|(i, h)| h.target == i));
        // Its first wave, in order: each VM's place in it is the one the plan gives.
        let members: Vec<usize> = handed
            .iter()
            .filter(|h| h.pos.is_some())
            .map(|h| h.target)
            .collect();
        assert_eq!(members, whole.waves[0]);
        for h in &handed {
            if let Some(pos) = h.pos {
                assert_eq!(whole.waves[0][pos], h.target);
            }
        }
    }

    #[test]
    fn the_whole_plan_keeps_the_targets_handed_out_first_when_the_listing_changed() {
        let rb = runbook(vec![step("off", Action::Off, vec![sel_vm("*")])]);
        let vms = listed(&lab());
        let plan = build(&rb, &vms, "http://x/api");
        let handed: Vec<PlannedVm> = plan.steps[0].targets[..3].to_vec();
        // Unchanged: the plan the listing gives.
        assert_eq!(
            complete(&rb, &vms, "http://x/api", 0, handed.clone()).steps,
            plan.steps
        );
        // Read again: web-02 is gone and the order changed.
        let mut again = vms.clone();
        again.retain(|vm| &*vm.name != "web-02");
        again.reverse();
        let changed = complete(&rb, &again, "http://x/api", 0, handed.clone());
        let st = &changed.steps[0];
        assert_eq!(st.targets[..3], handed[..]);
        assert_eq!(st.targets.len(), vms.len(), "each VM once");
        let live: Vec<usize> = (0..st.targets.len())
            .filter(|&t| st.targets[t].disposition.is_live())
            .collect();
        assert_eq!(st.waves, vec![live]);
    }
}
