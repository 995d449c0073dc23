//! Executor: runs a plan with bounded concurrency and emits events.
//!
//! Steps start when the steps they come `after` are done; independent steps run side by side.
//! Within a step, waves run one after the other (with the configured pause); within a wave,
//! VMs run up to the step's concurrency, all steps sharing the run-wide limit. VM futures are
//! created lazily as slots free up, so memory follows the VMs in flight, not the total.
//! Failure thresholds, the deadline and Ctrl-C stop the launching of new VMs; VMs in flight
//! finish (Ctrl-C: within a bounded drain) and are reported.

mod confirm;
mod control;
pub mod event;
#[cfg(test)]
mod fake;
pub mod gate;
pub mod head;
pub mod poll;
pub mod resume;
pub mod sink;
mod slots;
pub mod status;
#[cfg(test)]
mod tests;
mod vm;

pub use control::{RunControl, StopReason};

use crate::abiquo::api::CloudApi;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::ListedVm;
use crate::exec::event::{
    Event, GateResult, PathTaken, ResultCounts, Summary, VmOutcome, VmResult,
};
use crate::exec::head::{Head, Listing, Streaming};
use crate::exec::poll::{PollPolicy, TaskWatch};
use crate::exec::resume::ResumeState;
use crate::exec::sink::EventSink;
use crate::pacing::TaskDurations;
use crate::plan::head::add_handed;
use crate::plan::{Listed, Plan, PlannedStep, VmRef};
use crate::runbook::model::{Amount, Gate, GateVm, OnFailure};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Knobs of a run that are not in the runbook.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub poll: PollPolicy,
    /// How long a LOCKED VM is waited for before it counts as failed.
    pub lock_wait: Duration,
    /// After Ctrl-C, how long in-flight tasks are followed before giving up on them.
    pub drain_timeout: Duration,
    /// Task durations learned so far (seed it with earlier runs' to start warm).
    pub durations: TaskDurations,
    /// How old a VM's state may be (as listed or read) for a request to be sent on it
    /// without reading the VM again. A request the API refuses because the state moved
    /// (VM-4, VM-26, or busy) is followed by a read and a fresh decision either way.
    pub state_max_age: Duration,
    /// Watch tasks in flight through reads of the plan's listing's pages when that takes
    /// fewer requests than polling each task (see `poll::watch`).
    pub watch: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            poll: PollPolicy::default(),
            lock_wait: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(60),
            durations: TaskDurations::new(),
            state_max_age: Duration::from_secs(30),
            watch: true,
        }
    }
}

/// Inputs of a run beyond the plan: what an earlier, interrupted run already did.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub resume: Option<ResumeState>,
    /// Who answers `approve` gates (none: they fail).
    pub approval: Option<gate::Approval>,
}

/// What every VM future borrows.
pub(crate) struct Ctx<'a, A> {
    client: &'a A,
    options: &'a RunOptions,
    /// Every event goes to each, in order (the journal first, so it is on disk before
    /// anyone reports it).
    sinks: &'a [&'a dyn EventSink],
    control: &'a RunControl,
    hooks: &'a Hooks,
    /// Run-wide concurrency: held by a VM only while it has a power task in flight.
    slots: &'a Semaphore,
    /// The VMs as the plan's listing saw them.
    listed: &'a Listed,
    /// Sees tasks end through their VMs' listings (when enabled).
    watch: Option<&'a TaskWatch>,
}

impl<A: CloudApi> Ctx<'_, A> {
    async fn emit(&self, event: Event) {
        for sink in self.sinks {
            sink.record(&event).await;
        }
    }

    /// Emits an event that must be safely stored before the run goes on (the intent before
    /// a mutation, the task link after it). A sink that cannot store it stops the run:
    /// acting without a record would break resume. The other sinks still get the event.
    async fn emit_durable(&self, event: Event) -> Result<(), String> {
        let mut failed = None;
        for sink in self.sinks {
            if let Err(e) = sink.record_durable(&event).await
                && failed.is_none()
            {
                self.control.abort(format!(
                    "{e}; stopping, since a resume could not rely on it"
                ));
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn resume(&self, step: usize, target: usize) -> Option<&resume::ResumeVm> {
        self.hooks.resume.as_ref().and_then(|r| r.get(step, target))
    }

    fn is_replayed(&self, step: usize, target: usize) -> bool {
        self.hooks
            .resume
            .as_ref()
            .is_some_and(|r| r.is_done(step, target))
    }
}

/// Run-wide tallies for the thresholds and the summary.
#[derive(Default)]
struct Tally {
    counts: ResultCounts,
    failures: usize,
    /// (step, target) of the VMs that ended ok or skipped: what a per-VM gate checks.
    served: HashSet<(usize, usize)>,
}

/// Runs `plan` and returns the summary. Events go to `events`; `control` stops it early.
pub async fn execute<A: CloudApi>(
    client: &A,
    plan: &Plan,
    options: &RunOptions,
    events: &mpsc::Sender<Event>,
    control: &RunControl,
) -> Summary {
    execute_with(client, plan, options, &[events], control, &Hooks::default()).await
}

/// [`execute`] with any sinks (each gets every event, in the order given; a journal goes
/// first) and/or the state of an earlier run to resume.
pub async fn execute_with<A: CloudApi>(
    client: &A,
    plan: &Plan,
    options: &RunOptions,
    sinks: &[&dyn EventSink],
    control: &RunControl,
    hooks: &Hooks,
) -> Summary {
    execute_from(client, Start::whole(plan), options, sinks, control, hooks).await
}

/// [`execute_with`] from a whole plan, or for a run that starts before its listing ends:
/// the head step's first wave runs on the VMs of the first pages, and the rest of the plan
/// once it is whole.
pub async fn execute_from<A, L>(
    client: &A,
    start: Start<'_, L>,
    options: &RunOptions,
    sinks: &[&dyn EventSink],
    control: &RunControl,
    hooks: &Hooks,
) -> Summary
where
    A: CloudApi,
    L: Listing,
{
    let started = Instant::now();
    let (first, listed) = match &start {
        Start::Whole(plan) => (*plan, &plan.listed),
        Start::Streaming(s) => (&s.skeleton, s.listed),
    };
    let slots = Semaphore::new(first.concurrency);
    let deadline = first.deadline();
    let watch = TaskWatch::new(options.poll, options.durations.clone(), client.page_size());
    let ctx = Ctx {
        client,
        options,
        sinks,
        control,
        hooks,
        slots: &slots,
        listed,
        watch: options.watch.then_some(&watch),
    };
    ctx.emit(Event::RunStarted {
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        plan: std::sync::Arc::new(first.clone()),
        partial: matches!(start, Start::Streaming(_)),
    })
    .await;
    let tally = Mutex::new(Tally::default());
    let steps = async {
        match start {
            Start::Whole(plan) => schedule(&ctx, plan, &tally, None).await,
            Start::Streaming(s) => stream_then_schedule(&ctx, *s, &tally).await,
        }
    };
    let announced = AtomicBool::new(false);
    let watchdog = watchdog(&ctx, deadline, &announced);
    // Runs as long as the steps do; it only looks while VMs are in flight.
    let looking = async {
        match ctx.watch {
            Some(w) => w.run(client).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(steps);
    tokio::pin!(watchdog);
    tokio::pin!(looking);
    tokio::select! {
        () = &mut steps => {}
        () = &mut watchdog => {}
        () = &mut looking => {}
    }
    if let Some(reason) = control.aborted()
        && !announced.load(Ordering::SeqCst)
    {
        // Stopped on the very last VM: the watchdog had no chance to say so.
        ctx.emit(Event::RunAborted { reason }).await;
    }
    let counts = tally.lock().unwrap_or_else(PoisonError::into_inner).counts;
    let summary = Summary {
        counts,
        wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        aborted: control.aborted(),
        interrupted: control.reason() == Some(StopReason::Interrupted),
        api: client.stats(),
    };
    ctx.emit(Event::RunFinished {
        summary: summary.clone(),
    })
    .await;
    summary
}

/// What a run starts from.
pub enum Start<'p, L> {
    Whole(&'p Plan),
    Streaming(Box<Streaming<'p, L>>),
}

/// The listing of a run that has its whole plan: none.
pub type NoListing = std::future::Ready<Result<Vec<ListedVm>, ClientError>>;

impl<'p> Start<'p, NoListing> {
    pub fn whole(plan: &'p Plan) -> Self {
        Start::Whole(plan)
    }
}

/// Runs every step of `plan` (steps start when those they come after are done); `head`:
/// the first wave of one of them already runs.
async fn schedule<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    plan: &Plan,
    tally: &Mutex<Tally>,
    head: Option<&Head>,
) {
    let done: Vec<watch::Sender<bool>> =
        plan.steps.iter().map(|_| watch::channel(false).0).collect();
    let sched = Scheduler {
        ctx,
        plan,
        tally,
        run_threshold: plan.max_failures.map(|l| (l.amount, l.tolerated)),
        done: &done,
        head,
    };
    futures::future::join_all(plan.steps.iter().map(|s| sched.run_step(s))).await;
}

/// The head step's first wave runs while the listing goes on; once it is in, the whole
/// plan runs, that wave taking up the results of the VMs already started.
async fn stream_then_schedule<A, L>(ctx: &Ctx<'_, A>, s: Streaming<'_, L>, tally: &Mutex<Tally>)
where
    A: CloudApi,
    L: Listing,
{
    let Streaming {
        skeleton,
        so_far,
        listed,
        targets,
        listing,
        complete,
    } = s;
    let Some(step) = skeleton.steps.first() else {
        return;
    };
    let head = Head::new(step.clone());
    let running = head.run(ctx, so_far, listed, targets);
    let rest = async {
        // A stop (Ctrl-C, the deadline) does not wait for a region's listing to end.
        let stop = ctx.control.stop_token();
        let listing = tokio::select! {
            listing = listing => Some(listing),
            () = stop.cancelled() => None,
        };
        if listing.is_none() {
            // No page will come: the head stops waiting for one.
            drop(so_far.end());
        }
        let handed = head.close();
        let plan = match listing {
            Some(Ok(vms)) => {
                let handed = handed.into_iter().map(|h| h.planned).collect();
                let (plan, estimate) = complete(vms, handed);
                let plan = std::sync::Arc::new(plan);
                ctx.emit(Event::Planned {
                    plan: std::sync::Arc::clone(&plan),
                    estimate: estimate.map(Box::new),
                })
                .await;
                plan
            }
            failed => {
                if let Some(Err(e)) = failed {
                    ctx.control.abort(format!(
                        "cannot list the VMs: {e}; the {} VMs already handed out are \
                         finished, nothing else is started: run the runbook again for the rest",
                        handed.len()
                    ));
                }
                // The plan as far as it got, as the journal has it.
                let mut plan = skeleton.clone();
                for h in &handed {
                    add_handed(&mut plan, step.index, h.target, &h.planned, h.pos.is_some());
                }
                std::sync::Arc::new(plan)
            }
        };
        schedule(ctx, &plan, tally, Some(&head)).await;
    };
    futures::future::join(running, rest).await;
}

/// Announces stops, enforces the deadline and the drain bound. Never completes.
async fn watchdog<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    deadline: Option<Duration>,
    announced: &AtomicBool,
) {
    let stop = ctx.control.stop_token().clone();
    let deadline_hit = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = deadline_hit => {
            if let Some(d) = deadline {
                ctx.control.abort(format!(
                    "the run's deadline of {} was reached",
                    humantime::format_duration(d)
                ));
            }
        }
    }
    if let Some(reason) = ctx.control.aborted() {
        announced.store(true, Ordering::SeqCst);
        ctx.emit(Event::RunAborted { reason }).await;
        // In-flight tasks finish on their own timeouts; a Ctrl-C now bounds the wait.
        ctx.control.interrupted_token().cancelled().await;
    }
    let drain = ctx.options.drain_timeout;
    ctx.emit(Event::RunInterrupted {
        drain_ms: u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
    })
    .await;
    tokio::time::sleep(drain).await;
    ctx.control.kill();
    std::future::pending::<()>().await;
}

/// VMs of a step in progress at once: its concurrency in tasks, plus half as many again (at
/// least 1, at most 64) reading and deciding ahead. Bounded, so memory and connections follow
/// the slots; a slot frees every task-duration/concurrency, and the next VM needs only one
/// round trip to be ready.
fn lookahead(concurrency: usize) -> usize {
    concurrency + (concurrency / 2).clamp(1, 64)
}

/// `3`, or `10% (2 of 15 VMs)`.
fn threshold_text(amount: Amount, max: usize, of: usize) -> String {
    match amount {
        Amount::Count(_) => amount.to_string(),
        Amount::Percent(_) => format!("{amount} ({max} of {of} VMs)"),
    }
}

/// How the gates on a step's `after` edges went.
struct EdgeGates {
    /// One did not pass: the step does not start.
    closed: bool,
    /// Failures they count for the step.
    failures: usize,
}

/// A step's counts so far, and its fresh failures (for its threshold).
struct StepTally {
    counts: ResultCounts,
    failures: usize,
}

/// Whose VMs a per-VM gate checks; expanded only for such a gate.
#[derive(Clone, Copy)]
enum GateScope<'s> {
    /// Every VM of these steps (by index).
    Steps(&'s [usize]),
    /// These targets of one step (a wave).
    Targets(&'s PlannedStep, &'s [usize]),
}

struct Scheduler<'a, A> {
    ctx: &'a Ctx<'a, A>,
    plan: &'a Plan,
    tally: &'a Mutex<Tally>,
    /// Run-wide threshold: (as written, resolved count).
    run_threshold: Option<(Amount, usize)>,
    done: &'a [watch::Sender<bool>],
    /// The first wave of a step that started before the plan was whole.
    head: Option<&'a Head>,
}

impl<A: CloudApi> Scheduler<'_, A> {
    async fn run_step(&self, step: &PlannedStep) {
        // A resumed step whose VMs are all done needs no gate.
        let all_replayed = step
            .waves
            .iter()
            .flatten()
            .all(|&t| self.ctx.is_replayed(step.index, t));
        let edges = self.dependencies(step, !all_replayed).await;
        self.ctx
            .emit(Event::StepStarted {
                step: step.index,
                name: step.name.to_string(),
                action: step.action,
                vms: step.live_count(),
                waves: step.waves.len(),
            })
            .await;
        let mut counts = ResultCounts::default();
        // Excluded and protected VMs are settled by the plan.
        for (i, t) in step.targets.iter().enumerate() {
            if !t.disposition.is_live() {
                let r = self.settled(
                    step,
                    i,
                    VmOutcome::Skipped {
                        reason: t.disposition.reason(),
                    },
                );
                self.record(&mut counts, r, false).await;
            }
        }
        let mut step_tally = StepTally {
            counts,
            failures: edges.failures,
        };
        // The step starts once the gates on its edges and its own gate pass.
        let mut closed = edges.closed;
        if let Some(gate) = &step.gate
            && !closed
            && !all_replayed
        {
            // A per-VM gate checks the VMs of the steps this one waits for.
            let scope = GateScope::Steps(&step.after);
            closed = !self
                .pass_gate(step, None, None, gate, scope, &mut step_tally)
                .await;
        }
        for (w, wave) in step.waves.iter().enumerate() {
            let stop = self.ctx.control.stop_token();
            // A wave an earlier run finished needs no pause before it.
            let replayed = wave.iter().all(|&t| self.ctx.is_replayed(step.index, t));
            if !closed
                && w > 0
                && !replayed
                && !stop.is_cancelled()
                && let Some(gate) = &step.wave_gate
            {
                if step.wave_pause_ms > 0 {
                    self.pause_before(step, w, stop).await;
                }
                // A per-VM gate checks the wave before this one.
                let scope = GateScope::Targets(step, &step.waves[w - 1]);
                closed = !self
                    .pass_gate(step, Some(w), None, gate, scope, &mut step_tally)
                    .await;
            }
            if closed {
                // Past a failed gate nothing of the step starts; a VM an earlier run
                // finished keeps its result.
                for &t in wave {
                    let r = match self.ctx.resume(step.index, t) {
                        Some(resume::ResumeVm::Done(prev)) => (**prev).clone(),
                        _ => self.settled(
                            step,
                            t,
                            VmOutcome::NotStarted {
                                reason: "its gate did not pass".into(),
                            },
                        ),
                    };
                    self.finished(step, &mut step_tally, r).await;
                }
                continue;
            }
            if w > 0
                && step.wave_pause_ms > 0
                && !stop.is_cancelled()
                && !replayed
                && step.wave_gate.is_none()
            {
                self.pause_before(step, w, stop).await;
            }
            if !stop.is_cancelled() {
                self.ctx
                    .emit(Event::WaveStarted {
                        step: step.index,
                        wave: w,
                        vms: wave.len(),
                    })
                    .await;
            }
            tracing::trace!(step = step.index, wave = w, "wave starts");
            // The first wave of a step that started before the plan was whole goes on
            // with the slots, and takes up the results, of the VMs it already started.
            let head = self.head.filter(|h| w == 0 && h.step.index == step.index);
            // The step's concurrency bounds its tasks in flight (a semaphore held like the
            // run-wide one); a few more VMs than that are read and decided ahead, so the
            // next one is ready to send the instant a slot frees.
            let own_slots;
            let step_slots = match head {
                Some(h) => &h.slots,
                None => {
                    own_slots = slots::StepSlots::new(step.concurrency);
                    &own_slots
                }
            };
            // Whose tasks succeeded, to confirm with one listing once the wave is done.
            let worth = confirm::worth_listing(
                wave.len(),
                self.ctx.listed.total(),
                self.ctx.client.page_size(),
            );
            let own_deferred = (worth && head.is_none()).then(confirm::Deferred::default);
            let deferred = match head {
                Some(h) => worth.then_some(&h.deferred),
                None => own_deferred.as_ref(),
            };
            // The head defers its VMs' checks whatever the wave's size: few pages hold them.
            let taken = |target| {
                head.and_then(|h| h.deferred.take(target))
                    .or_else(|| deferred.and_then(|d| d.take(target)))
            };
            // Nearly every VM of a wave waits for the listing: hold them without the
            // slack of a growing vector (a region's wave is 100,000 results).
            let mut pending = Vec::with_capacity(if deferred.is_some() { wave.len() } else { 0 });
            let mut results = futures::stream::iter(wave.iter().copied().enumerate())
                .map(|(pos, target)| {
                    let started = head.and_then(|h| h.result_of(target));
                    async move {
                        match started {
                            Some(result) => self.result_of_head(step, target, result).await,
                            None => self.run_vm(step, target, step_slots, pos, deferred).await,
                        }
                    }
                })
                .buffer_unordered(lookahead(step.concurrency.max(1)));
            while let Some(r) = results.next().await {
                tracing::trace!(step = step.index, target = r.target, "vm finished");
                match taken(r.target) {
                    Some(action) => pending.push((r, action)),
                    None => self.finished(step, &mut step_tally, r).await,
                }
            }
            drop(results);
            // VMs the head ran that the wave did not name (the plan disagreed with what was
            // handed out): reported all the same, never lost.
            for (_, result) in head.map(Head::unclaimed).unwrap_or_default() {
                let Ok(r) = result.await else { continue };
                match taken(r.target) {
                    Some(action) => pending.push((r, action)),
                    None => self.finished(step, &mut step_tally, r).await,
                }
            }
            self.confirm(step, &mut step_tally, pending).await;
        }
        self.ctx
            .emit(Event::StepFinished {
                step: step.index,
                name: step.name.to_string(),
                counts: step_tally.counts,
            })
            .await;
        self.mark_done(step);
    }

    /// Waits for every step `step` comes after, each on its own: the gates on an edge are
    /// checked (in the order written; not at all unless `check`) as soon as its step is
    /// done, while the others may still run. Once one fails, no further one is begun; the
    /// wait for every step goes on, so nothing after `step` starts before they are done.
    async fn dependencies(&self, step: &PlannedStep, check: bool) -> EdgeGates {
        if !check || step.after_gates.is_empty() {
            for &dep in &step.after {
                self.wait_for(step, dep).await;
            }
            return EdgeGates {
                closed: false,
                failures: 0,
            };
        }
        let closed = AtomicBool::new(false);
        let closed = &closed;
        let edges = step.after.iter().map(|&dep| async move {
            self.wait_for(step, dep).await;
            let mut tally = StepTally {
                counts: ResultCounts::default(),
                failures: 0,
            };
            for edge in step.after_gates.iter().filter(|e| e.after == dep) {
                if closed.load(Ordering::SeqCst) {
                    break;
                }
                if !self
                    .pass_gate(
                        step,
                        None,
                        Some(dep),
                        &edge.gate,
                        GateScope::Steps(std::slice::from_ref(&dep)),
                        &mut tally,
                    )
                    .await
                {
                    closed.store(true, Ordering::SeqCst);
                }
            }
            tally.failures
        });
        let failures = futures::future::join_all(edges).await.into_iter().sum();
        EdgeGates {
            closed: closed.load(Ordering::SeqCst),
            failures,
        }
    }

    /// Until step `dep` is done.
    async fn wait_for(&self, step: &PlannedStep, dep: usize) {
        if let Some(pos) = self.plan.steps.iter().position(|s| s.index == dep)
            && let Some(tx) = self.done.get(pos)
        {
            let mut rx = tx.subscribe();
            tracing::trace!(step = step.index, dep, "waiting for a step");
            // The sender lives as long as the run, so this only ends when the step did.
            let _ = rx.wait_for(|d| *d).await;
            tracing::trace!(step = step.index, dep, "dependency done");
        }
    }

    /// The pause before wave `w`.
    async fn pause_before(&self, step: &PlannedStep, w: usize, stop: &CancellationToken) {
        self.ctx
            .emit(Event::WavePaused {
                step: step.index,
                wave: w,
                pause_ms: step.wave_pause_ms,
            })
            .await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(step.wave_pause_ms)) => {}
            () = stop.cancelled() => {}
        }
    }

    /// Checks a gate of `step` (before it, before wave `wave`, or on its edge from step
    /// `after`). A failed gate counts as a failure of the step; with `on_failure = "abort"`
    /// it stops the run. False when it did not pass.
    async fn pass_gate(
        &self,
        step: &PlannedStep,
        wave: Option<usize>,
        after: Option<usize>,
        gate: &Gate,
        scope: GateScope<'_>,
        tally: &mut StepTally,
    ) -> bool {
        let stop = self.ctx.control.stop_token();
        if stop.is_cancelled() {
            return true;
        }
        let outcome = if gate.check.per_vm() {
            let vms = self.served_in(scope);
            let vms: Vec<GateVm<'_>> = vms
                .iter()
                .map(|vm| GateVm {
                    id: vm.id,
                    name: &vm.name,
                    ip: vm.ip.as_deref(),
                })
                .collect();
            gate::check_each(gate, &vms, stop).await
        } else {
            gate::check(gate, self.ctx.hooks.approval.as_ref(), stop).await
        };
        let where_ = match (wave, after) {
            (Some(w), _) => format!("before wave {}", w + 1),
            (None, Some(dep)) => format!("after '{}'", self.step_name(dep)),
            (None, None) => "before the step".to_owned(),
        };
        self.ctx
            .emit(Event::GateChecked(GateResult {
                step: step.index,
                wave,
                after,
                check: gate.check.to_string(),
                passed: outcome.passed,
                attempts: outcome.attempts,
                elapsed_ms: outcome.elapsed_ms,
                detail: outcome.detail.clone(),
            }))
            .await;
        if outcome.passed || stop.is_cancelled() {
            return outcome.passed;
        }
        tally.failures += 1;
        let reason = format!(
            "step '{}': gate {} ({where_}) failed: {}",
            step.name, gate.check, outcome.detail
        );
        if step.on_failure == OnFailure::Abort {
            self.ctx.control.abort(reason);
        } else {
            let threshold = step.max_failures.map(|l| (l.amount, l.tolerated));
            self.check_step_threshold(step, threshold, tally.failures);
            tracing::warn!("{reason}; the step's remaining VMs are not started");
        }
        false
    }

    /// The VMs of `scope` that ended ok or skipped (a failed one already failed its step),
    /// in plan order.
    fn served_in(&self, scope: GateScope<'_>) -> Vec<VmRef> {
        let tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let served = |step: &PlannedStep, target: usize| {
            tally
                .served
                .contains(&(step.index, target))
                .then(|| step.targets.get(target).map(|t| t.vm.clone()))
                .flatten()
        };
        match scope {
            GateScope::Steps(steps) => steps
                .iter()
                .filter_map(|&dep| self.plan.steps.iter().find(|s| s.index == dep))
                .flat_map(|dep| (0..dep.targets.len()).filter_map(move |t| served(dep, t)))
                .collect(),
            GateScope::Targets(step, targets) => {
                targets.iter().filter_map(|&t| served(step, t)).collect()
            }
        }
    }

    /// A VM's final result: counted against the thresholds, then reported.
    async fn finished(&self, step: &PlannedStep, tally: &mut StepTally, r: VmResult) {
        // Failures replayed from an earlier run do not count against thresholds again:
        // resuming must be able to continue after an abort.
        let fresh = !self.ctx.is_replayed(step.index, r.target);
        if r.outcome.is_failure() && fresh {
            tally.failures += 1;
            let threshold = step.max_failures.map(|l| (l.amount, l.tolerated));
            self.check_step_threshold(step, threshold, tally.failures);
        }
        self.record(&mut tally.counts, r, fresh).await;
    }

    /// The name of step `index` (its number when the plan has no such step).
    fn step_name(&self, index: usize) -> String {
        self.plan
            .steps
            .iter()
            .find(|s| s.index == index)
            .map_or_else(|| format!("#{index}"), |s| s.name.to_string())
    }

    fn mark_done(&self, step: &PlannedStep) {
        tracing::trace!(step = step.index, "step done");
        if let Some(pos) = self.plan.steps.iter().position(|s| s.index == step.index)
            && let Some(tx) = self.done.get(pos)
        {
            // `send` would drop the value when no dependent has subscribed yet (a step can
            // finish within its first poll); `send_replace` always stores it.
            tx.send_replace(true);
        }
    }

    /// One VM, unless the run is stopping. It takes its slots only around its power task.
    async fn run_vm(
        &self,
        step: &PlannedStep,
        target: usize,
        step_slots: &slots::StepSlots,
        pos: usize,
        deferred: Option<&confirm::Deferred>,
    ) -> VmResult {
        let r = if let Some(resume::ResumeVm::Done(prev)) = self.ctx.resume(step.index, target) {
            (**prev).clone()
        } else if self.ctx.control.stop_token().is_cancelled() {
            self.settled(step, target, vm::not_started(self.ctx))
        } else {
            vm::run(
                self.ctx,
                vm::VmJob {
                    step,
                    target,
                    planned: &step.targets[target],
                    step_slots,
                    pos,
                    deferred,
                    held: None,
                },
            )
            .await
        };
        // However it ended, the VMs after it no longer wait for its turn.
        step_slots.pass(pos);
        r
    }

    /// The result of target `target` of the wave, which the head started, once it is there.
    async fn result_of_head(
        &self,
        step: &PlannedStep,
        target: usize,
        result: tokio::sync::oneshot::Receiver<VmResult>,
    ) -> VmResult {
        result.await.unwrap_or_else(|_| {
            self.settled(
                step,
                target,
                VmOutcome::NotStarted {
                    reason: "the run stopped before it was started".into(),
                },
            )
        })
    }

    /// A result decided without touching the VM.
    fn settled(&self, step: &PlannedStep, target: usize, outcome: VmOutcome) -> VmResult {
        let t = &step.targets[target];
        VmResult {
            step: step.index,
            step_name: step.name.clone(),
            target,
            vm: t.vm.clone(),
            action: step.action,
            state_before: None,
            state_after: None,
            deallocated_after: None,
            path: match outcome {
                VmOutcome::NotStarted { .. } => PathTaken::NotStarted,
                _ => PathTaken::Skipped,
            },
            task_state: None,
            task_href: None,
            duration_ms: 0,
            started_at: None,
            finished_at: None,
            outcome,
            failed_jobs: Vec::new(),
        }
    }

    fn check_step_threshold(
        &self,
        step: &PlannedStep,
        threshold: Option<(Amount, usize)>,
        failures: usize,
    ) {
        if let Some((amount, max)) = threshold
            && failures > max
            && step.on_failure == OnFailure::Abort
        {
            self.ctx.control.abort(format!(
                "step '{}': {failures} failures exceed max_failures = {}",
                step.name,
                threshold_text(amount, max, step.live_count())
            ));
        }
    }

    /// Counts a result, checks the run-wide threshold (for `fresh` results, not replayed
    /// ones) and reports it.
    async fn record(&self, counts: &mut ResultCounts, r: VmResult, fresh: bool) {
        counts.add(&r.outcome);
        let failure = r.outcome.is_failure() && fresh;
        let run_failures = {
            let mut t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            t.counts.add(&r.outcome);
            let live = self
                .plan
                .steps
                .iter()
                .find(|s| s.index == r.step)
                .and_then(|s| s.targets.get(r.target))
                .is_some_and(|t| t.disposition.is_live());
            if live && matches!(r.outcome, VmOutcome::Ok | VmOutcome::Skipped { .. }) {
                t.served.insert((r.step, r.target));
            }
            if failure {
                t.failures += 1;
            }
            t.failures
        };
        if failure
            && let Some((amount, max)) = self.run_threshold
            && run_failures > max
        {
            self.ctx.control.abort(format!(
                "{run_failures} failures in the run exceed limits.max_failures = {}",
                threshold_text(amount, max, self.plan.total_live())
            ));
        }
        self.ctx
            .emit(Event::VmFinished {
                result: Box::new(r),
            })
            .await;
    }
}
