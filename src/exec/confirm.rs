//! Confirming that VMs whose tasks succeeded really reached their state: after a wave, one
//! listing of the cloud instead of one read per VM, when the listing costs fewer requests
//! (only the pages the VMs stood on, when their places in the plan's listing are known).
//! A VM the listing does not show settled (missing, LOCKED, or without the `deallocated`
//! flag a deallocation needs) is read on its own, as is every VM when the listing fails.

use crate::abiquo::api::CloudApi;
use crate::abiquo::client::PARALLEL_PAGES;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{VmSeen, VmState};
use crate::exec::event::VmResult;
use crate::exec::{Scheduler, StepTally, vm};
use crate::plan::PlannedStep;
use crate::runbook::model::Action;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

/// A listing of `page` VMs per page is worth it when its pages are at most a quarter of the
/// reads it replaces.
pub(crate) fn worth_listing(vms_to_confirm: usize, vms_listed: usize, page: usize) -> bool {
    vms_listed > 0 && vms_listed.div_ceil(page.max(1)) * 4 <= vms_to_confirm
}

/// The VMs of a wave whose check was left for the listing after it, with the action their
/// state is checked against.
#[derive(Default)]
pub(crate) struct Deferred(Mutex<HashMap<usize, Action>>);

impl Deferred {
    pub(crate) fn defer(&self, target: usize, action: Action) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target, action);
    }

    pub(crate) fn take(&self, target: usize) -> Option<Action> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&target)
    }
}

/// The listed VM, if it tells enough to confirm `action`.
fn settled_in<'l>(
    listing: &'l HashMap<&str, &VmSeen>,
    href: &str,
    action: Action,
) -> Option<&'l VmSeen> {
    listing.get(href).copied().filter(|vm| {
        vm.state != VmState::Locked && (action != Action::Deallocate || vm.deallocated.is_some())
    })
}

impl<A: CloudApi> Scheduler<'_, A> {
    /// The VMs of `pending` as listed now: only the pages of the listing they stood on
    /// when their place in it is known, the whole listing otherwise.
    async fn list_for(&self, pending: &[(VmResult, Action)]) -> Result<Vec<VmSeen>, ClientError> {
        let page = self.ctx.client.page_size().max(1);
        let starts: Option<BTreeSet<usize>> = pending
            .iter()
            .map(|(r, _)| Some(self.ctx.listed.position(&r.vm.href)? / page * page))
            .collect();
        let Some(starts) = starts else {
            return self.ctx.client.list_vm_states().await;
        };
        let mut seen = Vec::new();
        let mut pages = futures::stream::iter(starts)
            .map(|start| self.ctx.client.list_vm_states_range(start, page))
            .buffer_unordered(PARALLEL_PAGES);
        while let Some(page) = pages.next().await {
            seen.extend(page?);
        }
        Ok(seen)
    }

    /// Confirms the deferred VMs of a wave, finishing each as its outcome is final (none
    /// is held twice).
    pub(super) async fn confirm(
        &self,
        step: &PlannedStep,
        tally: &mut StepTally,
        pending: Vec<(VmResult, Action)>,
    ) {
        if pending.is_empty() {
            return;
        }
        let kill = self.ctx.control.kill_token();
        let listed = tokio::select! {
            l = self.list_for(&pending) => l.map_err(|e| {
                tracing::warn!("confirming by listing failed ({e}); reading each VM instead");
            }).ok(),
            () = kill.cancelled() => None,
        };
        let seen = listed.unwrap_or_default();
        let by_href: HashMap<&str, &VmSeen> = seen.iter().map(|s| (s.href.as_str(), s)).collect();
        let by_href = &by_href;
        let mut confirmed = futures::stream::iter(pending)
            .map(|(mut r, action)| async move {
                r.outcome = match settled_in(by_href, &r.vm.href, action) {
                    Some(seen) => vm::confirmed(&mut r, action, &seen.state, seen.deallocated),
                    None => vm::confirm_by_read(self.ctx, &mut r, action).await,
                };
                r
            })
            .buffer_unordered(step.concurrency.max(1));
        while let Some(r) = confirmed.next().await {
            self.finished(step, tally, r).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_used_only_when_its_pages_are_few_against_the_reads() {
        assert!(worth_listing(2_000, 2_000, 100));
        assert!(worth_listing(40, 1_000, 100));
        assert!(!worth_listing(39, 1_000, 100));
        assert!(!worth_listing(10, 10_000, 100));
        assert!(!worth_listing(100, 0, 100), "no listing known: read each");
    }
}
