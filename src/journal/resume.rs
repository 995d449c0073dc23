//! Resume planning: from a journal, what each VM of each step still needs.

use crate::exec::event::VmOutcome;
use crate::exec::resume::{ResumeState, ResumeVm};
use crate::journal::RunView;

/// How many VMs fall in each resume case (for the operator, before anything is sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeCounts {
    /// Finished earlier (ok, skipped, or failed without `--retry-failed`): not touched.
    pub done: usize,
    /// Failed earlier and retried.
    pub retried: usize,
    /// A task was in flight: followed again.
    pub reattach: usize,
    /// Intent recorded without an answer: inspected before acting.
    pub inspect: usize,
}

/// The executor's resume state for a journal's run.
pub fn plan_resume(view: &RunView, retry_failed: bool) -> (ResumeState, ResumeCounts) {
    let mut state = ResumeState::default();
    let mut counts = ResumeCounts::default();
    for (&key, track) in &view.vms {
        let finished = track.finished.as_ref();
        let entry = match finished.map(|r| &r.outcome) {
            Some(VmOutcome::Ok | VmOutcome::Skipped { .. }) => {
                finished.map(|r| ResumeVm::Done(Box::new(r.clone())))
            }
            Some(VmOutcome::Failed { .. }) if !retry_failed => {
                finished.map(|r| ResumeVm::Done(Box::new(r.clone())))
            }
            Some(VmOutcome::Failed { .. }) => {
                // A retried VM runs as new: it reads its state (waiting out a task still
                // holding it) and decides again.
                counts.retried += 1;
                None
            }
            // Not started, interrupted, or no result at all: see how far it got.
            _ => match (&track.intent, &track.task_href) {
                (Some((intent, _)), Some(href)) => Some(ResumeVm::Reattach {
                    href: href.clone(),
                    intent: intent.clone(),
                }),
                (Some((intent, at_ms)), None) => Some(ResumeVm::Inspect {
                    intent: intent.clone(),
                    at_ms: *at_ms,
                    known_tasks: view
                        .tasks_by_vm
                        .get(&*track.vm.href)
                        .cloned()
                        .unwrap_or_default(),
                }),
                (None, _) => None,
            },
        };
        match &entry {
            Some(ResumeVm::Done(_)) => counts.done += 1,
            Some(ResumeVm::Reattach { .. }) => counts.reattach += 1,
            Some(ResumeVm::Inspect { .. }) => counts.inspect += 1,
            None => {}
        }
        if let Some(e) = entry {
            state.vms.insert(key, e);
        }
    }
    (state, counts)
}
