//! A run that starts before its listing ends (see `plan::head`): the first wave of its head
//! step takes VMs as the listing hands them out and runs them at once, holding the step's
//! slots in list order like any wave. Their results wait for the whole plan: the step then
//! counts, checks and reports them with its other VMs, as if it had started them itself.
//!
//! The head stops taking VMs when the listing ends, when one of its VMs fails (the step's
//! and the run's thresholds are judged on the whole plan, so nothing more starts until
//! then) or when the run stops. Each VM it takes is journaled (`TargetListed`) before
//! anything is done with it, so a crash before the plan is whole can still be resumed.

use crate::abiquo::api::CloudApi;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::ListedVm;
use crate::abiquo::so_far::ListingSoFar;
use crate::exec::confirm::Deferred;
use crate::exec::event::{Event, VmResult};
use crate::exec::slots::StepSlots;
use crate::exec::{Ctx, lookahead, vm};
use crate::plan::estimate::Estimate;
use crate::plan::head::{HeadTargets, HeadVm, skeleton, whole_plan};
use crate::plan::{Listed, Plan, PlannedStep, PlannedVm};
use crate::runbook::model::Runbook;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use tokio::sync::oneshot;

/// The listing of a run that starts early: the whole listing once its last page is in.
pub trait Listing: Future<Output = Result<Vec<ListedVm>, ClientError>> + Send {}

impl<F: Future<Output = Result<Vec<ListedVm>, ClientError>> + Send> Listing for F {}

/// A run whose plan is made whole while its first step already runs.
pub struct Streaming<'a, L> {
    /// What the run starts from: the head step alone, without VMs.
    pub(crate) skeleton: Plan,
    /// The listing as its pages arrive.
    pub(crate) so_far: &'a ListingSoFar<ListedVm>,
    /// The run's view of the listed VMs: the head's are added as they are taken, the
    /// others by `complete`.
    pub(crate) listed: &'a Listed,
    /// Makes listed VMs targets of the head step.
    pub(crate) targets: HeadTargets<'a>,
    /// The listing; its whole result once its last page is in.
    pub(crate) listing: L,
    /// The whole plan from the whole listing and the head step's targets handed out so
    /// far (kept first, with their numbers), with what the plan expects of the run.
    pub(crate) complete: Complete<'a>,
}

/// Makes the whole plan of a run that started early (see [`Streaming::complete`]).
type Complete<'a> =
    Box<dyn FnOnce(Vec<ListedVm>, Vec<PlannedVm>) -> (Plan, Option<Estimate>) + Send + 'a>;

/// What a run does with its whole plan once it has it (shows it, estimates it), handing
/// it back with its estimate.
pub type OnPlan<'a> = Box<dyn FnOnce(Plan) -> (Plan, Option<Estimate>) + Send + 'a>;

impl<'a, L> Streaming<'a, L> {
    /// A run of `runbook` against `endpoint` whose step `index` (see
    /// [`crate::plan::head::head_step`]) starts on the VMs `listing` appends to `so_far`;
    /// `listed` keeps them for acting without a read. `None` if there is no such step.
    pub fn new(
        runbook: &'a Runbook,
        index: usize,
        endpoint: &'a str,
        (so_far, listed): (&'a ListingSoFar<ListedVm>, &'a Listed),
        listing: L,
        then: OnPlan<'a>,
    ) -> Option<Self> {
        let kept = listed.clone();
        Some(Streaming {
            skeleton: skeleton(runbook, index, endpoint),
            so_far,
            listed,
            targets: HeadTargets::new(runbook, index)?,
            listing,
            complete: Box::new(move |vms, handed| {
                then(whole_plan(runbook, vms, endpoint, index, handed, kept))
            }),
        })
    }
}

/// The head step's first wave while the plan is not whole, shared with the scheduler.
pub(crate) struct Head {
    /// The step, without VMs (what running one needs of it).
    pub(crate) step: PlannedStep,
    /// The first wave's slots: the wave goes on with them once the plan is whole.
    pub(crate) slots: StepSlots,
    /// Its VMs whose success is confirmed by a listing after the wave.
    pub(crate) deferred: Deferred,
    shared: Mutex<Shared>,
    /// One of its VMs failed: take no more.
    failed: AtomicBool,
}

struct Shared {
    /// Still taking VMs.
    open: bool,
    /// Every target handed out, in order (numbered from 0).
    targets: Vec<HeadVm>,
    /// The results to come of the VMs it runs, by target.
    results: HashMap<usize, oneshot::Receiver<VmResult>>,
}

impl Head {
    pub(crate) fn new(step: PlannedStep) -> Self {
        Self {
            slots: StepSlots::new(step.concurrency),
            step,
            deferred: Deferred::default(),
            shared: Mutex::new(Shared {
                open: true,
                targets: Vec::new(),
                results: HashMap::new(),
            }),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes no more VMs; the targets it handed out, in order.
    pub(crate) fn close(&self) -> Vec<HeadVm> {
        let mut s = self.lock();
        s.open = false;
        std::mem::take(&mut s.targets)
    }

    /// The result to come of `target`, when the head runs it (once).
    pub(crate) fn result_of(&self, target: usize) -> Option<oneshot::Receiver<VmResult>> {
        self.lock().results.remove(&target)
    }

    /// The results of the VMs it runs that the plan did not ask for (only if the plan
    /// disagreed with the targets handed out).
    pub(crate) fn unclaimed(&self) -> Vec<(usize, oneshot::Receiver<VmResult>)> {
        let mut left: Vec<_> = self.lock().results.drain().collect();
        left.sort_by_key(|(t, _)| *t);
        left
    }

    /// Hands out `h`, which stood at `position` in the listing, journaled before anything
    /// is done with it; for a VM of the first wave, the way its result reaches the plan.
    /// `None` once closed: the VM is left to the whole plan.
    async fn hand_out<A: CloudApi>(
        &self,
        ctx: &Ctx<'_, A>,
        listed: &Listed,
        (h, vm, position): (HeadVm, ListedVm, usize),
    ) -> Option<(HeadVm, Option<oneshot::Sender<VmResult>>)> {
        let tx = {
            let mut s = self.lock();
            if !s.open {
                return None;
            }
            s.targets.push(h.clone());
            h.pos.map(|_| {
                let (tx, rx) = oneshot::channel();
                s.results.insert(h.target, rx);
                tx
            })
        };
        if tx.is_some() {
            // Acted on from its listed state while that is fresh, like any VM.
            listed.add(position, vm);
        }
        ctx.emit(Event::TargetListed {
            step: self.step.index,
            target: h.target,
            planned: Box::new(h.planned.clone()),
            pos: h.pos,
        })
        .await;
        Some((h, tx))
    }

    /// Takes VMs as the listing hands them out and runs its first wave's, until closed,
    /// one of them failed or the run stops; returns once those it runs are done.
    pub(crate) async fn run<A: CloudApi>(
        &self,
        ctx: &Ctx<'_, A>,
        so_far: &ListingSoFar<ListedVm>,
        listed: &Listed,
        mut targets: HeadTargets<'_>,
    ) {
        let stop = ctx.control.stop_token();
        let taking = || !self.failed.load(Ordering::SeqCst) && !stop.is_cancelled();
        // Each listed VM in turn, with its place in the listing, that the step selects.
        let selected =
            futures::stream::unfold((0usize, &mut targets), |(mut i, targets)| async move {
                loop {
                    if !taking() || targets.first_wave_full() {
                        return None;
                    }
                    let vm = so_far.get(i).await?;
                    // A failure or a stop may have come while the page was awaited.
                    if !taking() {
                        return None;
                    }
                    i += 1;
                    if let Some(h) = targets.next(&vm) {
                        return Some(((h, vm, i - 1), (i, targets)));
                    }
                }
            });
        selected
            .then(|listed_vm| self.hand_out(ctx, listed, listed_vm))
            .take_while(|taken| futures::future::ready(taken.is_some()))
            .filter_map(|taken| {
                futures::future::ready(taken.and_then(|(h, tx)| Some((h.pos?, h, tx?))))
            })
            .map(|(pos, h, tx)| async move {
                let r = vm::run(
                    ctx,
                    vm::VmJob {
                        step: &self.step,
                        target: h.target,
                        planned: &h.planned,
                        step_slots: &self.slots,
                        pos,
                        deferred: Some(&self.deferred),
                        held: None,
                    },
                )
                .await;
                // However it ended, the VMs after it no longer wait for its turn.
                self.slots.pass(pos);
                if r.outcome.is_failure() {
                    self.failed.store(true, Ordering::SeqCst);
                }
                let _ = tx.send(r);
            })
            .buffer_unordered(lookahead(self.step.concurrency.max(1)))
            .for_each(|()| futures::future::ready(()))
            .await;
    }
}
