//! Resuming a VM an earlier run left in flight: follow the task it had, or find out whether
//! its request was processed before sending anything.

use super::*;

/// Resume: a task was accepted before the earlier run stopped. Follow it; send nothing.
pub(super) async fn reattach<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    href: &str,
    intent: &Intent,
) -> VmOutcome {
    r.state_before = Some(intent.from.clone());
    r.path = intent.path;
    if emit_accepted(ctx, job, r, href, true).await.is_err() {
        return not_started(ctx);
    }
    let timeout = job.step.task_timeout();
    match (job.step.action, job.step.fallback, intent.path) {
        (Action::Shutdown | Action::Restart, Some(fallback), PathTaken::Graceful) => {
            let sent = Instant::now();
            // Its age is unknown: no learned pacing for it.
            let end = follow(ctx, job, r, href, None, fallback.after().min(timeout)).await;
            after_graceful(ctx, job, r, end, sent, fallback).await
        }
        _ => match follow(ctx, job, r, href, None, timeout).await {
            ActEnd::Done(task, seen) => finish_ok(ctx, job, r, task, seen).await,
            other => finish_other(ctx, r, other, timeout).await,
        },
    }
}

/// Resume: the intent was recorded but not the answer, so the request may have been
/// processed. Re-attach to its task if the VM's tasks show one; otherwise skip the VM if it
/// already is where the request leads; act only if neither. A reset cannot be judged by the
/// state (the VM is ON before and after), so only its task counts: never a second reset.
pub(super) async fn inspect<A: CloudApi>(
    ctx: &Ctx<'_, A>,
    job: VmJob<'_>,
    r: &mut VmResult,
    intent: &Intent,
    at_ms: u64,
    known: &[String],
) -> VmOutcome {
    let sent_at = i64::try_from(at_ms / 1000).unwrap_or(i64::MAX);
    let known_ids: Vec<&str> = known.iter().map(|h| task_id_of(h)).collect();
    let mut vm = match ctx.client.get_vm_at(&r.vm.href).await {
        Ok(vm) => vm,
        Err(e) => return client_failure(ctx, &e),
    };
    for round in 0..2 {
        let tasks = match ctx.client.vm_tasks(&vm).await {
            Ok(t) => t,
            Err(e) => return client_failure(ctx, &e),
        };
        let ours = find_ours(&tasks, intent.request, &intent.from, sent_at, |id| {
            known_ids.contains(&id)
        });
        if let Some(href) = ours.and_then(|t| t.link("self")).map(|l| l.href.clone()) {
            return reattach(ctx, job, r, &href, intent).await;
        }
        if round == 0 && vm.state == VmState::Locked {
            // Busy: perhaps with our task, not listed yet. Wait for the lock, look again.
            vm = match read_settled(ctx, &r.vm.href).await {
                Ok(vm) => vm,
                Err(ReadStop::Failed(reason)) => return VmOutcome::Failed { reason },
                Err(ReadStop::Killed) => return not_started(ctx),
            };
        } else {
            break;
        }
    }
    let action = intent.effective_action();
    if action != Action::Reset && rules::reached(action, &vm.state, vm.deallocated) {
        r.state_before = Some(intent.from.clone());
        r.state_after = Some(vm.state.clone());
        r.deallocated_after = vm.deallocated;
        r.path = intent.path;
        return finish_ok(ctx, job, r, None, None).await;
    }
    drive(ctx, job, r).await
}
