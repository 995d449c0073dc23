//! Plan: resolve each step's selectors to VMs, decide per VM (act, skip, refuse), order the
//! steps and split them into waves. `run` executes a plan; `plan` shows one; a saved plan is
//! JSON (every type here is serde).

mod disposition;
pub mod document;
pub mod estimate;
pub mod head;
mod listed;
pub mod locks;
pub mod rules;
pub mod saved;
pub mod select;
pub mod text;

pub use listed::Listed;

pub use disposition::Disposition;

use crate::abiquo::api::CloudApi;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{ListedVm, VmState};
use crate::runbook::model::{
    Action, Amount, EdgeGate, Fallback, Gate, OnFailure, Order, Runbook, Step,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// Version of the plan's JSON shape. 2: steps and the plan carry what executing them
/// needs (timeouts, fallback, thresholds, deadline); dispositions are typed.
pub const PLAN_FORMAT: u32 = 2;

/// A resolved runbook: which VMs each step acts on, and how. It holds everything the
/// executor needs, so a saved plan runs as it was shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub format: u32,
    pub runbook_name: String,
    /// SHA-256 of the runbook source the plan was made from.
    pub source_hash: String,
    /// API root the VMs were listed from.
    pub endpoint: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Effective run-wide concurrency.
    pub concurrency: usize,
    /// Run-wide failure threshold (`limits.max_failures`), resolved against every live VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<FailureLimit>,
    /// Nothing new starts after this long (`limits.deadline`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    pub steps: Vec<PlannedStep>,
    /// The listing the plan was made from, for acting without a read while it is fresh;
    /// not saved (a saved plan's listing is old by the time it runs).
    #[serde(skip)]
    #[schemars(skip)]
    pub listed: Listed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedStep {
    /// Index in the runbook's steps.
    pub index: usize,
    pub name: Arc<str>,
    pub action: Action,
    pub order: Order,
    /// Steps this one waits for (indices).
    pub after: Vec<usize>,
    /// Gates on some of those edges: each checked once its step is done, before this one
    /// starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_gates: Vec<EdgeGate>,
    /// Effective limit of VMs in flight for this step (1 when sequential).
    pub concurrency: usize,
    /// Indices into `targets`, wave by wave. Excluded and protected VMs are in no wave;
    /// VMs predicted to be skipped or refused are re-checked in the first wave.
    pub waves: Vec<Vec<usize>>,
    /// Pause between waves, milliseconds.
    pub wave_pause_ms: u64,
    /// Checked before the step starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Checked before each wave after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_gate: Option<Gate>,
    /// How long one task may run before the VM counts as failed, milliseconds.
    pub task_timeout_ms: u64,
    /// Graceful-shutdown fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<PlannedFallback>,
    /// The step's failure threshold, resolved against its live VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<FailureLimit>,
    /// What crossing `max_failures` does.
    pub on_failure: OnFailure,
    pub targets: Vec<PlannedVm>,
}

/// Graceful-shutdown fallback: `action` (a hard off) when the graceful task fails or has not
/// finished after `after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedFallback {
    pub action: Action,
    pub after_ms: u64,
}

impl PlannedFallback {
    pub fn of(f: &Fallback) -> PlannedFallback {
        PlannedFallback {
            action: f.action,
            after_ms: millis(f.after),
        }
    }

    pub fn after(&self) -> Duration {
        Duration::from_millis(self.after_ms)
    }
}

/// A failure threshold: `max_failures` as written, and how many failures that tolerates
/// among the VMs it counts (one more crosses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailureLimit {
    /// As written: `3` or `10%`.
    #[serde(with = "amount_text")]
    #[schemars(with = "String")]
    pub amount: Amount,
    pub tolerated: usize,
}

impl FailureLimit {
    fn of(amount: Amount, vms: usize) -> FailureLimit {
        FailureLimit {
            amount,
            tolerated: amount.of(vms),
        }
    }
}

/// [`Amount`] as its runbook text (`3`, `10%`).
mod amount_text {
    use crate::runbook::model::Amount;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(amount: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(amount)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = match text.strip_suffix('%') {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(Amount::Percent),
            None => text.parse::<u64>().ok().map(Amount::Count),
        };
        parsed.ok_or_else(|| D::Error::custom(format!("not a count or a percentage: {text:?}")))
    }
}

// Its strings are shared with the listing, by every step and result about the VM, and the
// VDC, vApp and hypervisor names by every VM that has them: a region's plan holds each once.
/// Identity of a VM, enough to find it again (`href` is its `edit` link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmRef {
    pub id: u64,
    pub name: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Arc<str>>,
    pub href: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdc: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapp: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<Arc<str>>,
    /// Its first NIC's IP address (`nic0`), for gates' `{vm.ip}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Arc<str>>,
}

impl VmRef {
    pub fn of(vm: &ListedVm) -> VmRef {
        VmRef {
            id: vm.id,
            name: Arc::clone(&vm.name),
            label: vm.label.clone(),
            href: vm.href.clone().unwrap_or_else(|| "".into()),
            vdc: vm.vdc.name.clone(),
            vapp: vm.vapp.name.clone(),
            hypervisor: vm.hypervisor.clone(),
            ip: vm.ips.first().map(|ip| Arc::from(ip.as_ref())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedVm {
    pub vm: VmRef,
    /// State when listed.
    #[schemars(with = "String")]
    pub state_seen: VmState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocated: Option<bool>,
    /// State expected when the step starts, after the earlier steps did their work.
    #[schemars(with = "String")]
    pub state_expected: VmState,
    pub disposition: Disposition,
}

/// How many VMs of a step fall in each disposition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepCounts {
    pub act: usize,
    pub skip: usize,
    pub refuse: usize,
    pub excluded: usize,
    pub protected: usize,
}

impl PlannedStep {
    pub fn task_timeout(&self) -> Duration {
        Duration::from_millis(self.task_timeout_ms)
    }

    pub fn counts(&self) -> StepCounts {
        let mut c = StepCounts::default();
        for t in &self.targets {
            match t.disposition {
                Disposition::Act { .. } => c.act += 1,
                Disposition::Skip { .. } => c.skip += 1,
                Disposition::Refuse { .. } => c.refuse += 1,
                Disposition::Excluded => c.excluded += 1,
                Disposition::Protected { .. } => c.protected += 1,
            }
        }
        c
    }

    /// VMs the step looks at at run time.
    pub fn live_count(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.disposition.is_live())
            .count()
    }
}

impl Plan {
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline_ms.map(Duration::from_millis)
    }

    /// Names of the steps with an `approve` gate (on an `after` edge, before the step or
    /// between its waves).
    pub fn steps_with_approvals(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| {
                [&s.gate, &s.wave_gate]
                    .into_iter()
                    .flatten()
                    .chain(s.after_gates.iter().map(|e| &e.gate))
                    .any(|g| matches!(g.check, crate::runbook::model::GateCheck::Approve { .. }))
            })
            .map(|s| &*s.name)
            .collect()
    }

    pub fn total_targets(&self) -> usize {
        self.steps.iter().map(|s| s.targets.len()).sum()
    }

    /// Keeps the listed state of the VMs some step acts on, as listed at `asked`.
    pub fn keep_listing(&mut self, vms: Vec<ListedVm>, asked: tokio::time::Instant) {
        self.keep_listing_in(Listed::growing(asked), vms);
    }

    /// [`Self::keep_listing`] into `listed`, which already holds the VMs kept as the
    /// listing arrived.
    pub fn keep_listing_in(&mut self, listed: Listed, vms: Vec<ListedVm>) {
        let acted: HashSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| &s.targets)
            .filter(|t| matches!(t.disposition, Disposition::Act { .. }))
            .map(|t| &*t.vm.href)
            .collect();
        listed.extend(vms, |href| acted.contains(href));
        drop(acted);
        self.listed = listed;
    }

    pub fn total_live(&self) -> usize {
        self.steps.iter().map(PlannedStep::live_count).sum()
    }
}

/// Lists the VMs once and builds the plan.
pub async fn resolve<A: CloudApi>(client: &A, runbook: &Runbook) -> Result<Plan, ClientError> {
    let asked = tokio::time::Instant::now();
    let vms = client.list_vms().await?;
    Ok(of_listing(runbook, vms, client.endpoint(), asked))
}

/// Builds the plan from a VM listing asked for at `asked`, and keeps the listing for
/// acting without a read while it is fresh.
pub fn of_listing(
    runbook: &Runbook,
    vms: Vec<ListedVm>,
    endpoint: &str,
    asked: tokio::time::Instant,
) -> Plan {
    let mut plan = build(runbook, &vms, endpoint);
    plan.keep_listing(vms, asked);
    plan
}

/// Builds the plan from a VM listing (no I/O).
pub fn build(runbook: &Runbook, vms: &[ListedVm], endpoint: &str) -> Plan {
    let run_limit = runbook
        .limits
        .concurrency
        .map_or(Runbook::DEFAULT_CONCURRENCY, NonZeroUsize::get);
    // Expected (state, deallocated) per VM id after the steps planned so far.
    let mut expected: HashMap<u64, (VmState, Option<bool>)> = HashMap::new();
    let mut planned: Vec<Option<PlannedStep>> = vec![None; runbook.steps.len()];
    for index in step_order(runbook) {
        let Some(step) = runbook.steps.get(index) else {
            continue;
        };
        let fallback = step.fallback.as_ref().map(PlannedFallback::of);
        let targets = plan_targets(step, fallback.as_ref(), vms, &expected);
        let live = targets.iter().filter(|t| t.disposition.is_live()).count();
        for t in &targets {
            if matches!(t.disposition, Disposition::Act { .. }) {
                expected.insert(t.vm.id, after_action(step.action, t));
            }
        }
        planned[index] = Some(PlannedStep {
            index,
            name: step.name.as_str().into(),
            action: step.action,
            order: step.order,
            after: step.after.clone(),
            after_gates: step.after_gates.clone(),
            concurrency: match step.order {
                Order::Sequential => 1,
                Order::Parallel => step
                    .concurrency
                    .map_or(run_limit, NonZeroUsize::get)
                    .min(run_limit),
            },
            waves: waves(step, &targets),
            wave_pause_ms: step.waves.as_ref().map_or(0, |w| millis(w.pause)),
            gate: step.gate.clone(),
            wave_gate: step.waves.as_ref().and_then(|w| w.gate.clone()),
            task_timeout_ms: millis(step.task_timeout),
            fallback,
            max_failures: step.max_failures.map(|a| FailureLimit::of(a, live)),
            on_failure: step.on_failure,
            targets,
        });
    }
    let mut plan = Plan {
        format: PLAN_FORMAT,
        runbook_name: runbook.name.clone(),
        source_hash: runbook.source_hash.clone(),
        endpoint: endpoint.to_owned(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        concurrency: run_limit,
        max_failures: None,
        deadline_ms: runbook.limits.deadline.map(millis),
        steps: planned.into_iter().flatten().collect(),
        listed: Listed::default(),
    };
    plan.max_failures = runbook
        .limits
        .max_failures
        .map(|a| FailureLimit::of(a, plan.total_live()));
    plan
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Targets in runbook order, VMs within one entry in API list order; the first match wins.
fn plan_targets(
    step: &Step,
    fallback: Option<&PlannedFallback>,
    vms: &[ListedVm],
    expected: &HashMap<u64, (VmState, Option<bool>)>,
) -> Vec<PlannedVm> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for selector in &step.targets {
        for vm in vms {
            if !select::matches(selector, vm) || !seen.insert(vm.id) {
                continue;
            }
            out.push(target_of(step, fallback, vm, expected.get(&vm.id).cloned()));
        }
    }
    out
}

/// What `step` does with `vm`, expected in `expected` (state, deallocated) when the step
/// starts (`None`: as listed).
pub(crate) fn target_of(
    step: &Step,
    fallback: Option<&PlannedFallback>,
    vm: &ListedVm,
    expected: Option<(VmState, Option<bool>)>,
) -> PlannedVm {
    let (state, deallocated) = expected.unwrap_or_else(|| (vm.state.clone(), vm.deallocated));
    let disposition = if step.exclude.iter().any(|s| select::matches(s, vm)) {
        Disposition::Excluded
    } else if vm.protected && !step.allow_protected {
        Disposition::Protected {
            cause: vm
                .protected_cause
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        }
    } else if vm.href().is_none() {
        Disposition::Refuse {
            code: None,
            reason: "the API gave no `edit` link for this VM".into(),
        }
    } else {
        rules::evaluate(
            step.action,
            &state,
            deallocated,
            vm.hypervisor.as_deref(),
            fallback,
        )
    };
    PlannedVm {
        vm: VmRef::of(vm),
        state_seen: vm.state.clone(),
        deallocated: vm.deallocated,
        state_expected: state,
        disposition,
    }
}

/// The (state, deallocated) a VM is expected to have once the action succeeded.
fn after_action(action: Action, t: &PlannedVm) -> (VmState, Option<bool>) {
    let azure = rules::is_azure(t.vm.hypervisor.as_deref());
    let deallocated = match action {
        _ if !azure => None,
        Action::Off | Action::Deallocate => Some(true),
        Action::Shutdown | Action::On | Action::Resume | Action::Restart => Some(false),
        Action::Pause | Action::Reset => t.deallocated,
    };
    (action.target_state(), deallocated)
}

/// Waves over the VMs predicted to act; the live VMs predicted to be skipped or refused are
/// re-checked in the first wave (they cost one read each).
pub(crate) fn waves(step: &Step, targets: &[PlannedVm]) -> Vec<Vec<usize>> {
    let live: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].disposition.is_live())
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let acting: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| matches!(targets[i].disposition, Disposition::Act { .. }))
        .collect();
    let Some(w) = step.waves.as_ref().filter(|_| !acting.is_empty()) else {
        return vec![live];
    };
    let mut out = Vec::new();
    let mut from = 0;
    for len in w.chunks(acting.len()) {
        out.push(acting[from..from + len].to_vec());
        from += len;
    }
    let rest: BTreeSet<usize> = live
        .iter()
        .copied()
        .filter(|&i| !matches!(targets[i].disposition, Disposition::Act { .. }))
        .collect();
    if let Some(first) = out.first_mut() {
        first.extend(rest);
        first.sort_unstable();
    }
    out
}

/// Steps in an order that respects `after` (lowest index first among the ready ones).
pub fn step_order(runbook: &Runbook) -> Vec<usize> {
    let n = runbook.steps.len();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| {
            !done[i]
                && runbook.steps[i]
                    .after
                    .iter()
                    .all(|&d| d >= n || done[d] || d == i)
        });
        // A cycle cannot pass validation; fall back to index order rather than loop.
        let Some(i) = next.or_else(|| (0..n).find(|&i| !done[i])) else {
            break;
        };
        done[i] = true;
        order.push(i);
    }
    order
}

#[cfg(test)]
pub(crate) mod tests;
