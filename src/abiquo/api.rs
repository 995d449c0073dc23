//! The seam between powerbook's logic and an Abiquo API: everything the planner, the
//! executor and resume ask of a cloud. [`Client`](crate::abiquo::Client) implements it over
//! HTTP; tests implement it with scripted fakes.

use crate::abiquo::client::ClientStats;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{ListedVm, PowerRequest, Task, VirtualMachine, VmSeen, VmState};
use crate::abiquo::so_far::ListingSoFar;
use std::future::Future;

/// Result of a power request (state `PUT` or reset `POST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationAnswer {
    /// 202: the task to follow.
    Accepted { task_href: String },
    /// The answer was lost; the VM's `tasks` list showed the task our request created.
    Adopted { task_href: String },
    /// The answer was lost and no task of ours was found, but the VM already is in the
    /// requested state. There is no task to follow.
    AlreadyDone { state: VmState },
}

impl MutationAnswer {
    pub fn task_href(&self) -> Option<&str> {
        match self {
            MutationAnswer::Accepted { task_href } | MutationAnswer::Adopted { task_href } => {
                Some(task_href)
            }
            MutationAnswer::AlreadyDone { .. } => None,
        }
    }
}

/// What powerbook needs from a cloud. Every URL passed in is one the API gave earlier
/// (a VM's `edit` link, a task's `status` link).
pub trait CloudApi: Send + Sync {
    /// API root, as the operator named it (for reports and journals; never credentials).
    fn endpoint(&self) -> &str;

    /// Request counters so far.
    fn stats(&self) -> ClientStats;

    /// Every VM the user can see.
    fn list_vms(&self) -> impl Future<Output = Result<Vec<ListedVm>, ClientError>> + Send;

    /// [`Self::list_vms`], appending each page to `so_far` as it arrives (a reader starts on
    /// the first VMs meanwhile) and ending it when the pass is done. The whole listing is
    /// returned; when a pass had to be read again, `so_far` held only a prefix of an older
    /// one.
    fn list_vms_feeding(
        &self,
        so_far: &ListingSoFar<ListedVm>,
    ) -> impl Future<Output = Result<Vec<ListedVm>, ClientError>> + Send {
        async move {
            let vms = self.list_vms().await;
            so_far.end();
            vms
        }
    }

    /// Every VM's link, state and `deallocated` flag (a listing that holds nothing else).
    fn list_vm_states(&self) -> impl Future<Output = Result<Vec<VmSeen>, ClientError>> + Send;

    /// VMs per page of [`Self::list_vms`].
    fn page_size(&self) -> usize;

    /// The link, state and `deallocated` flag of each of the `limit` VMs from `startwith` on
    /// in the listing [`Self::list_vms`] reads (one page of it, or part of one).
    fn list_vm_states_range(
        &self,
        startwith: usize,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<VmSeen>, ClientError>> + Send;

    /// Reads a VM at its `edit` link.
    fn get_vm_at(
        &self,
        href: &str,
    ) -> impl Future<Output = Result<VirtualMachine, ClientError>> + Send;

    /// Reads a task at its `status` (or `self`) link.
    fn get_task(&self, href: &str) -> impl Future<Output = Result<Task, ClientError>> + Send;

    /// The VM's tasks, newest first.
    fn vm_tasks(
        &self,
        vm: &VirtualMachine,
    ) -> impl Future<Output = Result<Vec<Task>, ClientError>> + Send;

    /// Sends one power request through the VM's links. A lost answer is reconciled before
    /// anything is sent again.
    fn power(
        &self,
        vm: &VirtualMachine,
        request: PowerRequest,
    ) -> impl Future<Output = Result<MutationAnswer, ClientError>> + Send;
}
