//! One VM in one step: read its state, skip/refuse/act, follow the task, confirm the result.
//! The graceful shutdown's fallback and resuming a VM in flight have files of their own.

mod fallback;
mod resume;

use fallback::after_graceful;
use resume::{inspect, reattach};

use crate::abiquo::api::{CloudApi, MutationAnswer};
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{PowerRequest, Task, VirtualMachine, VmState};
use crate::abiquo::tasks::{find_ours, task_id_of};
use crate::exec::Ctx;
use crate::exec::confirm::Deferred;
use crate::exec::event::{Event, FailedJob, Intent, PathTaken, VmOutcome, VmResult, utc_now_ms};
use crate::exec::poll::{TaskWait, Unlocked, wait_for_task, wait_for_task_paced};
use crate::exec::resume::ResumeVm;
use crate::exec::slots::StepSlots;
use crate::pacing::Pacing;
use crate::plan::{Disposition, PlannedFallback, PlannedStep, PlannedVm, rules};
use crate::runbook::model::Action;
use std::sync::PoisonError;
use std::time::Duration;
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

/// Which VM of which step.
#[derive(Clone, Copy)]
pub(crate) struct VmJob<'a> {
    pub step: &'a PlannedStep,
    pub target: usize,
    /// The step's target number `target` (its VM and what the plan predicted).
    pub planned: &'a PlannedVm,
    /// The step's concurrency, held like the run-wide slot, taken in list order.
    pub step_slots: &'a StepSlots,
    /// The VM's position in its wave: its turn for a step slot.
    pub pos: usize,
    /// Where a successful task leaves its VM to be confirmed after the wave (by a listing),
    /// when that is cheaper than reading it now.
    pub deferred: Option<&'a Deferred>,
    /// The slots the VM holds, given back once its last task reached its terminal state
    /// (set while they are held).
    pub held: Option<&'a dyn Release>,
}

impl<'a> VmJob<'a> {
    /// The same job, holding `held` until [`Self::release_slots`] or its end.
    fn holding<'b>(self, held: &'b dyn Release) -> VmJob<'b>
    where
        'a: 'b,
    {
        VmJob {
            held: Some(held),
            ..self
        }
    }

    fn release_slots(&self) {
        if let Some(held) = self.held {
            held.release();
        }
    }
}

/// Slots that can be given back early, once.
pub(crate) trait Release: Sync {
    fn release(&self);
}

/// A VM's slots from [`take_slots`] until it gives them back (or is done).
struct Held<'s, 'r>(std::sync::Mutex<Option<Slots<'s, 'r>>>);

impl<'s, 'r> Held<'s, 'r> {
    fn new(slots: Slots<'s, 'r>) -> Self {
        Held(std::sync::Mutex::new(Some(slots)))
    }
}

impl Release for Held<'_, '_> {
    fn release(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// The step's and the run's slots, held while the VM has a power task in flight (from the
/// request to its terminal state and the check after it). Reading and deciding happen
/// before, without them, so the next VM is ready the instant one frees.
struct Slots<'s, 'r> {
    _step: SemaphorePermit<'s>,
    _run: SemaphorePermit<'r>,
}

/// Waits for both slots, the step's first (so a step waiting on its own limit does not hold
/// run-wide slots others could use). `None`: the run stopped (or was killed) first.
async fn take_slots<'s, 'r, A: CloudApi>(
    ctx: &Ctx<'r, A>,
    job: VmJob<'s>,
) -> Option<Slots<'s, 'r>> {
    let stop = ctx.control.stop_token();
    let _waiting = ctx.watch.map(|w| w.waiting());
    let step = tokio::select! {
        p = job.step_slots.acquire(job.pos) => p?,
        () = stop.cancelled() => return None,
    };
    let run = tokio::select! {
        p = ctx.slots.acquire() => p.ok()?,
        () = stop.cancelled() => return None,
    };
    if stop.is_cancelled() {
        return None;
    }
    Some(Slots {
        _step: step,
        _run: run,
    })
}

/// What to do when the API says the VM is busy (LOCKED by another task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnBusy {
    /// Wait (bounded) for the lock to go, re-check, send again.
    Wait,
    /// Give up at once and say so (the caller holds the lock with its own task).
    Return,
}

/// How one mutation + task ended.
enum ActEnd {
    /// The task finished successfully (`None`: reconciliation found the VM already there),
    /// with the VM as the watch saw it after the task, if it did.
    Done(Option<Task>, Option<Unlocked>),
    TaskFailed(Task),
    TimedOut {
        href: String,
        /// When the task was accepted, if known.
        since: Option<Instant>,
        last: Option<Task>,
    },
    Busy,
    /// Ended without a task to report on (API refusal, state changed, interrupted...).
    Outcome(VmOutcome),
}

/// Why reading a VM gave up.
enum ReadStop {
    Failed(String),
    Killed,
}

pub(crate) async fn run<A: CloudApi>(ctx: &Ctx<'_, A>, job: VmJob<'_>) -> VmResult {
    let planned = job.planned;
    let started = Instant::now();
    let mut r = VmResult {
        step: job.step.index,
        step_name: job.step.name.clone(),
        target: job.target,
        vm: planned.vm.clone(),
        action: job.step.action,
        state_before: None,
        state_after: None,
        deallocated_after: None,
        path: PathTaken::NotStarted,
        task_state: None,
        task_href: None,
        duration_ms: 0,
        started_at: Some(utc_now_ms()),
        finished_at: None,
        outcome: VmOutcome::NotStarted {
            reason: String::new(),
        },
        failed_jobs: Vec::new(),
    };
    ctx.emit(Event::VmStarted {
        step: job.step.index,
        target: job.target,
        vm: planned.vm.clone(),
    })
    .await;
    r.outcome = match ctx.resume(job.step.index, job.target) {
        // A VM an earlier run left in flight may have a task running: it takes its slots
        // before anything else.
        Some(resumed @ (ResumeVm::Reattach { .. } | ResumeVm::Inspect { .. })) => {
            match take_slots(ctx, job).await {
                None => not_started(ctx),
                Some(slots) => {
                    let held = Held::new(slots);
                    let job = job.holding(&held);
                    match resumed {
                        ResumeVm::Reattach { href, intent } => {
                            reattach(ctx, job, &mut r, href, intent).await
                        }
                        ResumeVm::Inspect {
                            intent,
                            at_ms,
                            known_tasks,
                        } => inspect(ctx, job, &mut r, intent, *at_ms, known_tasks).await,
                        ResumeVm::Done(_) => not_started(ctx),
                    }
                }
            }
        }
        _ => drive(ctx, job, &mut r).await,
    };
    r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    r.finished_at = Some(utc_now_ms());
    r
}

async fn drive<A: CloudApi>(ctx: &Ctx<'_, A>, job: VmJob<'_>, r: &mut VmResult) -> VmOutcome {
    if r.vm.href.is_empty() {
        r.path = PathTaken::Skipped;
        return outcome_of(&job.planned.disposition);
    }
    let (vm, request, seen_at, max_age) = match from_listing(ctx, job, r) {
        Some((vm, request, listed_at)) => (vm, request, listed_at, ctx.options.state_max_age),
        None => match decide(ctx, job, r).await {
            Ok((vm, request)) => (vm, request, Instant::now(), read_max_age(ctx)),
            Err(outcome) => return outcome,
        },
    };
    // A resumed VM found not to have been acted on already holds its slots: taking a
    // second pair would wait for itself once such VMs hold every run-wide slot.
    let own;
    let job = match job.held {
        Some(_) => job,
        None => {
            let Some(slots) = take_slots(ctx, job).await else {
                return not_started(ctx);
            };
            own = Held::new(slots);
            job.holding(&own)
        }
    };
    // A decision that waited long for its slot is made again on a fresh read: the VM may
    // have changed meanwhile (another operator, another tool).
    let (vm, request) = if seen_at.elapsed() > max_age {
        match decide(ctx, job, r).await {
            Ok(decided) => decided,
            Err(outcome) => return outcome,
        }
    } else {
        (vm, request)
    };
    let timeout = job.step.task_timeout();
    // A graceful shutdown: a `shutdown` step's, or the first half of a `restart`.
    match (request.is_graceful(), job.step.fallback) {
        (true, Some(fallback)) => {
            r.path = PathTaken::Graceful;
            let sent = Instant::now();
            let end = act(
                ctx,
                job,
                r,
                vm,
                request,
                fallback.after().min(timeout),
                OnBusy::Wait,
            )
            .await;
            after_graceful(ctx, job, r, end, sent, fallback).await
        }
        (graceful, _) => {
            r.path = if graceful {
                PathTaken::Graceful
            } else {
                PathTaken::Direct
            };
            match act(ctx, job, r, vm, request, timeout, OnBusy::Wait).await {
                ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
                other => finish_other(ctx, r, other, timeout).await,
            }
        }
    }
}

const BUSY: &str = "the VM is busy with another task";

/// How old a VM's read may be when its slot comes for the decision to stand, at least.
const FRESH_DECISION: Duration = Duration::from_secs(2);

fn read_max_age<A: CloudApi>(ctx: &Ctx<'_, A>) -> Duration {
    ctx.options.state_max_age.max(FRESH_DECISION)
}

/// The decision from the plan's listing, when it is young enough and says to act. A VM the
/// listing says needs nothing is read before it is skipped: a stale skip would go unseen,
/// while a stale request is refused by the API and decided again on a read.
fn from_listing<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
) -> Option<(VirtualMachine, PowerRequest, Instant)> {
    // Taken whatever the decision: this step is the VM's first, and memory is freed.
    let (vm, listed_at) = ctx.listed.take(&r.vm.href)?;
    if ctx.options.state_max_age.is_zero() || listed_at.elapsed() > ctx.options.state_max_age {
        return None;
    }
    let Disposition::Act { request, .. } = evaluate(job, &vm) else {
        return None;
    };
    note_decided_on(r, &vm);
    Some((vm, request, listed_at))
}

/// The state a decision rests on is the VM's state before, and after until it changes.
fn note_decided_on(r: &mut VmResult, vm: &VirtualMachine) {
    r.state_before = Some(vm.state.clone());
    r.state_after = Some(vm.state.clone());
    r.deallocated_after = vm.deallocated;
}

/// Reads the VM (waiting out a lock) and decides: the request to send, or the outcome.
async fn decide<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
) -> Result<(VirtualMachine, PowerRequest), VmOutcome> {
    let vm = match read_settled(ctx, &r.vm.href).await {
        Ok(vm) => vm,
        Err(ReadStop::Failed(reason)) => return Err(VmOutcome::Failed { reason }),
        Err(ReadStop::Killed) => return Err(not_started(ctx)),
    };
    note_decided_on(r, &vm);
    match evaluate(job, &vm) {
        Disposition::Act { request, .. } => Ok((vm, request)),
        other => {
            r.path = PathTaken::Skipped;
            Err(outcome_of(&other))
        }
    }
}

/// Sends one mutation (waiting out a lock if asked) and follows its task.
async fn act<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    vm: VirtualMachine,
    request: PowerRequest,
    timeout: Duration,
    on_busy: OnBusy,
) -> ActEnd {
    let (mut vm, mut request) = (vm, request);
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        let recorded = ctx
            .emit_durable(Event::VmActing {
                step: job.step.index,
                target: job.target,
                vm: r.vm.clone(),
                intent: Intent {
                    action: job.step.action,
                    request,
                    from: vm.state.clone(),
                    to: request.target_state(),
                    path: r.path,
                },
            })
            .await;
        if let Err(e) = recorded {
            // Nothing was sent: without the intent on disk a resume could send it twice.
            return ActEnd::Outcome(VmOutcome::NotStarted {
                reason: format!("journal: {e}"),
            });
        }
        let res = tokio::select! {
            res = ctx.client.power(&vm, request) => res,
            () = ctx.control.kill_token().cancelled() => {
                return ActEnd::Outcome(VmOutcome::Interrupted {
                    reason: format!("while sending {request}; its outcome is unknown"),
                });
            }
        };
        match res {
            Ok(answer) => break answer,
            Err(e) if e.is_vm_busy() && on_busy == OnBusy::Return => return ActEnd::Busy,
            // Busy, or the state moved since it was seen: read, decide again, resend.
            // A refusal means nothing was done, so resending is safe (a reset too).
            Err(e) if (e.is_vm_busy() || e.is_state_refusal()) && attempts < 3 => {
                let seen = (vm.state.clone(), vm.deallocated);
                vm = match read_settled(ctx, &r.vm.href).await {
                    Ok(vm) => vm,
                    Err(ReadStop::Failed(reason)) => {
                        return ActEnd::Outcome(VmOutcome::Failed { reason });
                    }
                    Err(ReadStop::Killed) => return ActEnd::Outcome(not_started(ctx)),
                };
                r.state_after = Some(vm.state.clone());
                r.deallocated_after = vm.deallocated;
                // Refused from a state that has not moved: that is the API's answer.
                if e.is_state_refusal() && (vm.state.clone(), vm.deallocated) == seen {
                    return ActEnd::Outcome(client_failure(ctx, &e));
                }
                if matches!(
                    r.path,
                    PathTaken::Forced | PathTaken::GracefulOn | PathTaken::ForcedOn
                ) {
                    // A fallback or a restart's power on finishes what the VM's first task
                    // began: done if the VM got there, otherwise the same request again.
                    let goal = r.path.task_action(job.step.action);
                    if rules::reached(goal, &vm.state, vm.deallocated) {
                        return ActEnd::Done(None, None);
                    }
                } else {
                    match evaluate(job, &vm) {
                        d @ (Disposition::Skip { .. } | Disposition::Refuse { .. }) => {
                            r.path = PathTaken::Skipped;
                            return ActEnd::Outcome(outcome_of(&d));
                        }
                        Disposition::Act { request: fresh, .. } => {
                            // A restart of a VM found OFF is only its power on.
                            if !fresh.is_graceful() && r.path == PathTaken::Graceful {
                                r.path = PathTaken::Direct;
                            }
                            request = fresh;
                        }
                        Disposition::Excluded | Disposition::Protected { .. } => {}
                    }
                    if ctx.control.stop_token().is_cancelled() {
                        // The VM's first request was refused, so nothing of it is in flight:
                        // a stopped run starts it no more than a VM it never reached. (A
                        // forced retry goes on: it finishes a graceful task already accepted.)
                        r.path = PathTaken::NotStarted;
                        return ActEnd::Outcome(not_started(ctx));
                    }
                }
            }
            Err(e) => return ActEnd::Outcome(client_failure(ctx, &e)),
        }
    };
    let accepted = Instant::now();
    let href = match answer {
        MutationAnswer::AlreadyDone { .. } => return ActEnd::Done(None, None),
        MutationAnswer::Accepted { task_href } => {
            // Even if the journal fails now, the task is ours to follow.
            let _ = emit_accepted(ctx, job, r, &task_href, false).await;
            task_href
        }
        MutationAnswer::Adopted { task_href } => {
            let _ = emit_accepted(ctx, job, r, &task_href, true).await;
            task_href
        }
    };
    follow(ctx, job, r, &href, Some(accepted), timeout).await
}

/// Records the task link (on disk before the task is followed).
async fn emit_accepted<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    href: &str,
    adopted: bool,
) -> Result<(), String> {
    r.task_href = Some(href.to_owned());
    ctx.emit_durable(Event::TaskAccepted {
        step: job.step.index,
        target: job.target,
        vm: r.vm.name.to_string(),
        task_href: href.to_owned(),
        adopted,
    })
    .await
}

/// Polls a task to its end: near its expected finish when we know when it was accepted
/// (`since`), with the cold backoff otherwise (a task re-attached on resume).
async fn follow<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    href: &str,
    since: Option<Instant>,
    timeout: Duration,
) -> ActEnd {
    let started = Instant::now();
    let (client, policy, kill) = (ctx.client, &ctx.options.poll, ctx.control.kill_token());
    let wait = match since {
        Some(since) => {
            let action = r.path.task_action(job.step.action);
            let pacing = Pacing {
                durations: &ctx.options.durations,
                action,
                since,
            };
            // A task that is the VM's last in its slots gives them back as soon as the VM
            // is seen out of LOCKED: the cloud is done with it, its outcome is read after.
            let release = || job.release_slots();
            let release: &(dyn Fn() + Sync) = &release;
            let early = last_in_slots(job, r).then_some(release);
            let mut watched = ctx
                .watch
                .zip(ctx.listed.position(&r.vm.href))
                .map(|(w, at)| w.register(at, &r.vm.href, action, since, early));
            wait_for_task_paced(
                client,
                href,
                policy,
                pacing,
                watched.as_mut(),
                timeout,
                kill,
            )
            .await
        }
        None => wait_for_task(client, href, policy, timeout, kill).await,
    };
    r.task_state = wait.last().map(|t| t.state.clone());
    ctx.emit(Event::TaskFinished {
        step: job.step.index,
        target: job.target,
        vm: r.vm.name.to_string(),
        task_href: href.to_owned(),
        state: r.task_state.clone(),
        polls: wait.polls(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
    .await;
    match wait {
        TaskWait::Finished { task, seen, .. } if task.state.is_success() => {
            ActEnd::Done(Some(task), seen)
        }
        TaskWait::Finished { task, .. } => ActEnd::TaskFailed(task),
        TaskWait::TimedOut { last, .. } => ActEnd::TimedOut {
            href: href.to_owned(),
            since,
            last,
        },
        TaskWait::Interrupted { last, .. } => ActEnd::Outcome(VmOutcome::Interrupted {
            reason: format!(
                "task still {} ({href})",
                last.map_or_else(|| "running".to_owned(), |t| t.state.to_string())
            ),
        }),
        TaskWait::Lost { error, .. } => ActEnd::Outcome(client_failure(ctx, &error)),
    }
}

/// Whether the task being followed is the last the VM sends in its slots: not a graceful
/// shutdown that may fall back, nor a restart's first half.
fn last_in_slots(job: VmJob<'_>, r: &VmResult) -> bool {
    let first_half = job.step.action == Action::Restart
        && matches!(r.path, PathTaken::Graceful | PathTaken::Forced);
    let may_fall_back = r.path == PathTaken::Graceful && job.step.fallback.is_some();
    !first_half && !may_fall_back
}

/// After a successful task: confirm the VM really reached the target state (from what the
/// watch saw after the task, when it tells enough).
async fn finish_ok<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    task: Option<Task>,
    seen: Option<Unlocked>,
) -> VmOutcome {
    if let Some(task) = &task {
        r.task_state = Some(task.state.clone());
    }
    if job.step.action == Action::Restart
        && matches!(r.path, PathTaken::Graceful | PathTaken::Forced)
    {
        // Down: the restart's power on follows, in the same slots.
        return Box::pin(power_on_after(ctx, job, r)).await;
    }
    // The task is over: its slots go to the next VM while this one is confirmed.
    job.release_slots();
    let action = r.path.task_action(job.step.action);
    let tells = |s: &Unlocked| {
        s.locked_at.is_some() && (action != Action::Deallocate || s.deallocated.is_some())
    };
    if let Some(seen) = seen.filter(tells) {
        return confirmed(r, action, &seen.state, seen.deallocated);
    }
    if let Some(deferred) = job.deferred {
        // Until the wave's listing says otherwise, the task's word stands.
        r.state_after = Some(action.target_state());
        deferred.defer(job.target, action);
        return VmOutcome::Ok;
    }
    confirm_by_read(ctx, r, action).await
}

/// A restart's second half: the VM is read (its shutdown is confirmed and its links are
/// fresh) and powered on. It is sent even after Ctrl-C, which starts no new VM but does not
/// leave a VM it took down; a second Ctrl-C stops it like any request.
async fn power_on_after<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
) -> VmOutcome {
    let vm = match read_settled(ctx, &r.vm.href).await {
        Ok(vm) => vm,
        Err(ReadStop::Failed(reason)) => {
            return VmOutcome::Failed {
                reason: format!("shut down, but could not be read to power it on: {reason}"),
            };
        }
        Err(ReadStop::Killed) => {
            return VmOutcome::Interrupted {
                reason: "shut down; the power on was not sent".into(),
            };
        }
    };
    r.state_after = Some(vm.state.clone());
    r.deallocated_after = vm.deallocated;
    r.path = r.path.then_on();
    if rules::reached(Action::On, &vm.state, vm.deallocated) {
        // Someone powered it on meanwhile.
        return finish_ok(ctx, job, r, None, None).await;
    }
    if !rules::reached(Action::Off, &vm.state, vm.deallocated) {
        return VmOutcome::Failed {
            reason: format!("the shutdown's task succeeded but the VM is {}", vm.state),
        };
    }
    let timeout = job.step.task_timeout();
    match act(ctx, job, r, vm, Action::On.request(), timeout, OnBusy::Wait).await {
        ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
        other => finish_other(ctx, r, other, timeout).await,
    }
}

/// Reads the VM to confirm `action` took it where it should be.
pub(crate) async fn confirm_by_read<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    r: &mut VmResult,
    action: Action,
) -> VmOutcome {
    match read_settled(ctx, &r.vm.href).await {
        Ok(vm) => confirmed(r, action, &vm.state, vm.deallocated),
        Err(ReadStop::Failed(reason)) => VmOutcome::Failed {
            reason: format!("the task finished but the VM could not be checked: {reason}"),
        },
        Err(ReadStop::Killed) => VmOutcome::Interrupted {
            reason: "while confirming the VM's state".into(),
        },
    }
}

/// The outcome of a successful `action` on the VM as seen after it.
pub(crate) fn confirmed(
    r: &mut VmResult,
    action: Action,
    state: &VmState,
    deallocated: Option<bool>,
) -> VmOutcome {
    r.state_after = Some(state.clone());
    r.deallocated_after = deallocated;
    if rules::reached(action, state, deallocated) {
        VmOutcome::Ok
    } else {
        let dealloc = match deallocated {
            Some(true) => " (deallocated)",
            Some(false) if action == Action::Deallocate => " (not deallocated)",
            _ => "",
        };
        VmOutcome::Failed {
            reason: format!("the task succeeded but the VM is {state}{dealloc}"),
        }
    }
}

/// Every ending but success.
async fn finish_other<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    r: &mut VmResult,
    end: ActEnd,
    timeout: Duration,
) -> VmOutcome {
    match end {
        ActEnd::Done(..) => VmOutcome::Ok,
        ActEnd::TaskFailed(task) => {
            r.task_state = Some(task.state.clone());
            r.failed_jobs
                .extend(FailedJob::from_task(&r.vm.name, &task));
            refresh_after(ctx, r).await;
            VmOutcome::Failed {
                reason: task_failure(&task),
            }
        }
        ActEnd::TimedOut { last, .. } => {
            refresh_after(ctx, r).await;
            VmOutcome::Failed {
                reason: format!(
                    "task not finished after {} (still {})",
                    humantime::format_duration(timeout),
                    last.map_or_else(|| "unknown".to_owned(), |t| t.state.to_string())
                ),
            }
        }
        ActEnd::Busy => VmOutcome::Failed {
            reason: BUSY.into(),
        },
        ActEnd::Outcome(o) => o,
    }
}

/// Best effort: the state after a failure, for the table.
async fn refresh_after<A: CloudApi>(ctx: &Ctx<'_, A>, r: &mut VmResult) {
    if let Ok(vm) = ctx.client.get_vm_at(&r.vm.href).await {
        r.state_after = Some(vm.state);
        r.deallocated_after = vm.deallocated;
    }
}

/// `PAUSE task FINISHED_UNSUCCESSFULLY (job PAUSE FAILED, rollback ROLLBACK_DONE)`.
fn task_failure(task: &Task) -> String {
    let mut text = format!("{} task {}", task.task_type, task.state);
    if let Some(job) = task.failed_jobs().next() {
        text.push_str(&format!(
            " (job {} {}, rollback {})",
            job.job_type, job.state, job.rollback_state
        ));
    }
    text
}

fn evaluate(job: VmJob<'_>, vm: &VirtualMachine) -> Disposition {
    rules::evaluate(
        job.step.action,
        &vm.state,
        vm.deallocated,
        vm.hypervisor(),
        job.step.fallback.as_ref(),
    )
}

fn outcome_of(d: &Disposition) -> VmOutcome {
    match d {
        Disposition::Act { .. } => VmOutcome::Ok,
        Disposition::Skip { .. } | Disposition::Excluded | Disposition::Protected { .. } => {
            VmOutcome::Skipped { reason: d.reason() }
        }
        Disposition::Refuse { .. } => VmOutcome::Failed { reason: d.reason() },
    }
}

pub(crate) fn not_started<A: CloudApi>(ctx: &Ctx<'_, A>) -> VmOutcome {
    VmOutcome::NotStarted {
        reason: ctx.control.short_reason(),
    }
}

/// A client error as a VM failure; a fatal one also stops the run.
fn client_failure<A: CloudApi>(ctx: &Ctx<'_, A>, e: &ClientError) -> VmOutcome {
    if e.is_fatal_for_run() {
        ctx.control.abort(format!("the API refused us: {e}"));
    }
    VmOutcome::Failed {
        reason: e.to_string(),
    }
}

/// Reads the VM; while it is LOCKED (another task running), waits with backoff, bounded by
/// the run's `lock_wait`.
async fn read_settled<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    href: &str,
) -> Result<VirtualMachine, ReadStop> {
    let deadline = Instant::now() + ctx.options.lock_wait;
    let mut schedule = ctx.options.poll.schedule();
    loop {
        let vm = ctx
            .client
            .get_vm_at(href)
            .await
            .map_err(|e| match client_failure(ctx, &e) {
                VmOutcome::Failed { reason } => ReadStop::Failed(reason),
                _ => ReadStop::Failed(e.to_string()),
            })?;
        if vm.state != VmState::Locked {
            return Ok(vm);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadStop::Failed(format!(
                "still LOCKED after {}: another operation is running on the VM",
                humantime::format_duration(ctx.options.lock_wait)
            )));
        }
        let delay = schedule.next_delay().min(deadline - now);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.control.kill_token().cancelled() => return Err(ReadStop::Killed),
        }
    }
}
