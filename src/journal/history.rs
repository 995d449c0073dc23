//! Earlier runs as evidence: [`read_durations`] reads the journals of earlier runs once into
//! the one learner, [`TaskDurations`], so both the plan estimator and the executor's adaptive
//! polling start from what it learned instead of guessing.

use crate::exec::event::{Event, PathTaken, VmOutcome, VmResult};
use crate::journal::{Journal, Record, RunView, load};
use crate::pacing::TaskDurations;
use crate::runbook::model::Action;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many of the newest journals of a runbook teach VM times: enough for a stable mean,
/// cheap at start-up.
pub const MAX_JOURNALS: usize = 20;
/// How many of the newest journals of a cloud teach task times (priors for polling).
pub const TASK_JOURNALS: usize = 5;

/// The journals in `dir` of runs against `endpoint`, newest first, read one by one as the
/// iterator is consumed. Unreadable files are passed over: history only sharpens guesses,
/// it never blocks a run.
fn newest_journals<'a>(dir: &Path, endpoint: &'a str) -> impl Iterator<Item = Journal> + 'a {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("jsonl"))
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files
        .into_iter()
        .filter_map(|(_, p)| load(&p).ok())
        .filter(move |j| j.header.endpoint == endpoint)
}

/// The newest journals in `dir` of runs against `endpoint` (and of the runbook named
/// `runbook_name`, when given), newest first, at most [`MAX_JOURNALS`].
pub fn past_journals(dir: &Path, endpoint: &str, runbook_name: Option<&str>) -> Vec<Journal> {
    newest_journals(dir, endpoint)
        .filter(|j| runbook_name.is_none_or(|n| j.header.runbook_name == n))
        .take(MAX_JOURNALS)
        .collect()
}

/// Learns VM times from the results of an earlier run: the successful, acted-on VMs
/// (skips, failures and fallbacks say nothing about the action's usual duration).
/// Returns how many were learned.
pub fn learn_from_results<'a>(
    learned: &TaskDurations,
    results: impl IntoIterator<Item = &'a VmResult>,
) -> u64 {
    let mut count = 0;
    for r in results {
        if r.outcome == VmOutcome::Ok && matches!(r.path, PathTaken::Direct | PathTaken::Graceful) {
            learned.record_vm(r.action, Duration::from_millis(r.duration_ms));
            count += 1;
        }
    }
    count
}

/// Learns task-time priors from an earlier run's events (a journal): every successful
/// `TaskFinished` of a run against `endpoint`, keyed by its step's action. Returns how
/// many were learned.
pub fn learn_from_events<'a>(
    learned: &TaskDurations,
    events: impl IntoIterator<Item = &'a Event>,
    endpoint: &str,
) -> usize {
    let mut actions: HashMap<usize, Action> = HashMap::new();
    let mut count = 0;
    for event in events {
        match event {
            // Another cloud's durations say nothing about this one.
            Event::RunStarted { plan, .. } if plan.endpoint != endpoint => actions.clear(),
            Event::RunStarted { plan, .. } => {
                actions = plan.steps.iter().map(|s| (s.index, s.action)).collect();
            }
            Event::TaskFinished {
                step,
                state: Some(state),
                elapsed_ms,
                ..
            } if state.is_success() => {
                if let Some(&action) = actions.get(step) {
                    learned.add_prior(action, Duration::from_millis(*elapsed_ms));
                    count += 1;
                }
            }
            _ => {}
        }
    }
    count
}

/// Reads the journals in `dir` of earlier runs against `endpoint` once, newest first:
/// task times from the newest [`TASK_JOURNALS`] (any runbook: tasks take as long on a
/// cloud whichever runbook sent them), VM times from the newest [`MAX_JOURNALS`] of the
/// runbook named `runbook_name` (they depend on its steps). Torn or foreign files are
/// passed over; a missing or unreadable directory just means starting cold.
pub fn read_durations(dir: &Path, endpoint: &str, runbook_name: &str) -> TaskDurations {
    let learned = TaskDurations::new();
    let (mut task_journals, mut vm_journals) = (0, 0);
    let (mut tasks, mut vms) = (0, 0);
    for journal in newest_journals(dir, endpoint) {
        if task_journals == TASK_JOURNALS && vm_journals == MAX_JOURNALS {
            break;
        }
        if task_journals < TASK_JOURNALS {
            task_journals += 1;
            let events = journal.records.iter().filter_map(|r| match r {
                Record::Event { event, .. } => Some(event),
                _ => None,
            });
            tasks += learn_from_events(&learned, events, endpoint);
        }
        if vm_journals < MAX_JOURNALS && journal.header.runbook_name == runbook_name {
            vm_journals += 1;
            vms += learn_from_results(&learned, &RunView::of(&journal).results());
        }
    }
    if tasks > 0 || vms > 0 {
        tracing::debug!("learned {tasks} task and {vms} VM durations from earlier runs");
    }
    learned
}

/// [`read_durations`], off the async runtime.
pub async fn durations_from_journals(
    dir: &Path,
    endpoint: &str,
    runbook_name: &str,
) -> TaskDurations {
    let (dir, endpoint, name) = (dir.to_owned(), endpoint.to_owned(), runbook_name.to_owned());
    tokio::task::spawn_blocking(move || read_durations(&dir, &endpoint, &name))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
