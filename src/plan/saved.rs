//! Saved plans (`powerbook plan --save FILE`, `powerbook run --plan FILE`): reading one back
//! and finding the VMs that changed since it was made.

use crate::abiquo::model::{ListedVm, VmState};
use crate::plan::document::{DOCUMENT_FORMAT, PlanDocument};
use crate::plan::{PLAN_FORMAT, Plan};
use comfy_table::{ContentArrangement, Table, presets};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Reads a saved plan document.
pub fn load_saved(path: &Path) -> Result<PlanDocument, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the saved plan {}: {e}", path.display()))?;
    let not_a_plan = |e: serde_json::Error| {
        format!(
            "{} is not a plan saved by `powerbook plan --save`: {e}",
            path.display()
        )
    };
    let (format, plan_format) = PlanDocument::formats_of(&text).map_err(not_a_plan)?;
    if format != DOCUMENT_FORMAT || plan_format != PLAN_FORMAT {
        return Err(format!(
            "{} has plan format {format}/{plan_format}, this powerbook reads \
             {DOCUMENT_FORMAT}/{PLAN_FORMAT}: make the plan again",
            path.display(),
        ));
    }
    serde_json::from_str(&text).map_err(not_a_plan)
}

/// A planned VM that is no longer as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleVm {
    pub name: String,
    /// Steps that planned it, in plan order.
    pub steps: Vec<String>,
    pub planned: String,
    /// `None`: the API no longer lists it.
    pub now: Option<String>,
}

fn state_text(state: &VmState, deallocated: Option<bool>) -> String {
    if deallocated == Some(true) {
        format!("{state} (deallocated)")
    } else {
        state.to_string()
    }
}

/// Every planned VM whose state (or deallocation) differs from what the plan saw, or that
/// is gone.
pub fn stale_vms(plan: &Plan, vms: &[ListedVm]) -> Vec<StaleVm> {
    let now: HashMap<u64, &ListedVm> = vms.iter().map(|v| (v.id, v)).collect();
    let mut out: BTreeMap<u64, StaleVm> = BTreeMap::new();
    let mut order = Vec::new();
    for step in &plan.steps {
        for t in &step.targets {
            let current = now.get(&t.vm.id);
            let changed = match current {
                None => true,
                Some(vm) => {
                    vm.state != t.state_seen
                        || (vm.deallocated == Some(true)) != (t.deallocated == Some(true))
                }
            };
            if !changed {
                continue;
            }
            let entry = out.entry(t.vm.id).or_insert_with(|| {
                order.push(t.vm.id);
                StaleVm {
                    name: t.vm.name.to_string(),
                    steps: Vec::new(),
                    planned: state_text(&t.state_seen, t.deallocated),
                    now: current.map(|vm| state_text(&vm.state, vm.deallocated)),
                }
            });
            if !entry.steps.iter().any(|s| **s == *step.name) {
                entry.steps.push(step.name.to_string());
            }
        }
    }
    order.into_iter().filter_map(|id| out.remove(&id)).collect()
}

/// The changed VMs as a table; `fixed_width` pins its width (deterministic test output).
pub fn stale_table(stale: &[StaleVm], fixed_width: Option<u16>) -> String {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if let Some(width) = fixed_width {
        t.force_no_tty().set_width(width);
    }
    t.set_header(vec!["VM", "Step", "Plan saw", "Now"]);
    for s in stale {
        t.add_row(vec![
            s.name.clone(),
            s.steps.join(", "),
            s.planned.clone(),
            s.now.clone().unwrap_or_else(|| "gone (not listed)".into()),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::VirtualMachine;
    use crate::plan::tests::{build, listed, runbook, sel_vm, step, vm};
    use crate::runbook::model::Action;

    fn stale_vms(plan: &Plan, vms: &[VirtualMachine]) -> Vec<StaleVm> {
        super::stale_vms(plan, &listed(vms))
    }

    #[test]
    fn stale_vms_lists_changed_and_vanished_vms_once_with_their_steps() {
        let vms = vec![
            vm(1, "web-01", "web", VmState::On, "KVM"),
            vm(2, "web-02", "web", VmState::On, "KVM"),
            vm(3, "web-03", "web", VmState::Off, "KVM"),
        ];
        let rb = runbook(vec![
            step("down", Action::Off, vec![sel_vm("web-*")]),
            step("up", Action::On, vec![sel_vm("web-*")]),
        ]);
        let plan = build(&rb, &vms, "http://x/api");
        assert!(stale_vms(&plan, &vms).is_empty());
        let mut now = vms.clone();
        now[0].state = VmState::Off;
        now.remove(2);
        let stale = stale_vms(&plan, &now);
        assert_eq!(
            stale,
            [
                StaleVm {
                    name: "web-01".into(),
                    steps: vec!["down".into(), "up".into()],
                    planned: "ON".into(),
                    now: Some("OFF".into()),
                },
                StaleVm {
                    name: "web-03".into(),
                    steps: vec!["down".into(), "up".into()],
                    planned: "OFF".into(),
                    now: None,
                },
            ]
        );
    }

    #[test]
    fn deallocation_counts_as_a_change() {
        let vms = vec![vm(1, "az-01", "az", VmState::Off, "AZURE")];
        let rb = runbook(vec![step("up", Action::On, vec![sel_vm("az-*")])]);
        let plan = build(&rb, &vms, "http://x/api");
        let mut now = vms.clone();
        now[0].deallocated = Some(true);
        let stale = stale_vms(&plan, &now);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].now.as_deref(), Some("OFF (deallocated)"));
    }
}
