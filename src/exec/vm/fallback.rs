//! The graceful shutdown's fallback: once the graceful task failed or took longer than the
//! step's `fallback.after`, the hard off that finishes the job.

use super::*;

/// How a graceful shutdown with a fallback goes on once its task ended (or timed out):
/// success, hard off after a failure, or a hard-off attempt after the fallback delay.
pub(super) async fn after_graceful<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    end: ActEnd,
    sent: Instant,
    fallback: PlannedFallback,
) -> VmOutcome {
    let timeout = job.step.task_timeout();
    match end {
        ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
        ActEnd::TaskFailed(task) => {
            r.failed_jobs
                .extend(FailedJob::from_task(&r.vm.name, &task));
            force_off(ctx, job, r).await
        }
        ActEnd::TimedOut { href, since, .. } => {
            // Too slow: try the hard off now. While the graceful task holds the lock
            // the API refuses it; then keep following the graceful task.
            match force_off_once(ctx, job, r).await {
                Some(outcome) => outcome,
                None => {
                    let remaining = timeout.saturating_sub(sent.elapsed());
                    r.path = PathTaken::Graceful;
                    r.task_href = Some(href.clone());
                    match follow(ctx, job, r, &href, since, remaining).await {
                        ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
                        ActEnd::TaskFailed(task) => {
                            r.failed_jobs
                                .extend(FailedJob::from_task(&r.vm.name, &task));
                            force_off(ctx, job, r).await
                        }
                        other => finish_other(ctx, r, other, timeout).await,
                    }
                }
            }
        }
        other => finish_other(ctx, r, other, fallback.after().min(timeout)).await,
    }
}

/// After Ctrl-C or SIGTERM nothing new is sent, and a hard off is new: the operator stopped
/// the run, and a forced power-off is the last thing to do behind their back. Resume starts
/// the VM's shutdown again.
fn interrupted_before_fallback<A: CloudApi>(ctx: &Ctx<'_, A>) -> Option<VmOutcome> {
    ctx.control
        .interrupted_token()
        .is_cancelled()
        .then(|| VmOutcome::Interrupted {
            reason: "graceful shutdown not done; the fallback hard off was not sent".into(),
        })
}

/// The fallback hard off after the graceful task failed: waits for the VM's lock if needed.
async fn force_off<A: CloudApi>(ctx: &Ctx<'_, A>, job: VmJob<'_>, r: &mut VmResult) -> VmOutcome {
    if let Some(stopped) = interrupted_before_fallback(ctx) {
        return stopped;
    }
    let vm = match read_settled(ctx, &r.vm.href).await {
        Ok(vm) => vm,
        Err(ReadStop::Failed(reason)) => return VmOutcome::Failed { reason },
        Err(ReadStop::Killed) => {
            return VmOutcome::Interrupted {
                reason: "before the fallback hard off".into(),
            };
        }
    };
    force_off_from(ctx, job, r, vm, OnBusy::Wait)
        .await
        .unwrap_or_else(|| VmOutcome::Failed {
            reason: BUSY.into(),
        })
}

/// One hard-off attempt while the graceful task may still hold the lock. `None` = busy.
async fn force_off_once<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
) -> Option<VmOutcome> {
    if let Some(stopped) = interrupted_before_fallback(ctx) {
        return Some(stopped);
    }
    let vm = match ctx.client.get_vm_at(&r.vm.href).await {
        Ok(vm) => vm,
        Err(e) => return Some(client_failure(ctx, &e)),
    };
    if vm.state == VmState::Locked {
        return None;
    }
    force_off_from(ctx, job, r, vm, OnBusy::Return).await
}

/// Hard off from a freshly read VM. `None` only with [`OnBusy::Return`] when busy.
async fn force_off_from<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    vm: VirtualMachine,
    busy: OnBusy,
) -> Option<VmOutcome> {
    r.state_after = Some(vm.state.clone());
    r.deallocated_after = vm.deallocated;
    if rules::reached(Action::Off, &vm.state, vm.deallocated) {
        // The graceful shutdown got there after all.
        r.path = PathTaken::Graceful;
        return Some(finish_ok(ctx, job, r, None, None).await);
    }
    r.path = PathTaken::Forced;
    let timeout = job.step.task_timeout();
    Some(
        match act(ctx, job, r, vm, PowerRequest::HARD_OFF, timeout, busy).await {
            ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
            ActEnd::Busy => {
                r.path = PathTaken::Graceful;
                return None;
            }
            other => finish_other(ctx, r, other, timeout).await,
        },
    )
}
