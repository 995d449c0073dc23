//! Why a LOCKED VM is refused: the task that holds it, read from its tasks list (GET only).

use crate::abiquo::api::CloudApi;
use crate::abiquo::model::{ListedVm, VmState};
use crate::plan::{Disposition, Plan, rules};
use std::collections::HashMap;

/// A LOCKED VM is refused for now; say which task holds it (GET on its tasks).
pub async fn explain_locks<A: CloudApi>(client: &A, plan: &mut Plan, vms: &[ListedVm]) {
    let by_id: HashMap<u64, &ListedVm> = vms.iter().map(|v| (v.id, v)).collect();
    let mut holders: HashMap<u64, Option<String>> = HashMap::new();
    for step in &mut plan.steps {
        for t in &mut step.targets {
            let Disposition::Refuse { reason, .. } = &mut t.disposition else {
                continue;
            };
            if t.state_seen != VmState::Locked {
                continue;
            }
            let holder = match holders.get(&t.vm.id) {
                Some(h) => h.clone(),
                None => {
                    let h = match by_id.get(&t.vm.id) {
                        Some(vm) => running_task(client, vm).await,
                        None => None,
                    };
                    holders.insert(t.vm.id, h.clone());
                    h
                }
            };
            if let Some(h) = holder {
                *reason = reason.replacen(rules::LOCKED_REASON, &h, 1);
            }
        }
    }
}

/// `LOCKED by a running SHUTDOWN task (STARTED)`, from the VM's tasks list.
async fn running_task<A: CloudApi>(client: &A, vm: &ListedVm) -> Option<String> {
    let tasks = client.vm_tasks(&vm.to_vm()).await.ok()?;
    let task = tasks.iter().find(|t| !t.state.is_terminal())?;
    Some(format!(
        "LOCKED by a running {} task ({})",
        task.task_type, task.state
    ))
}
