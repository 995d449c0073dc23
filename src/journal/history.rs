//! Earlier runs as evidence: [`read_durations`] reads the journals of earlier runs once into
//! the one learner, [`TaskDurations`], so both the plan estimator and the executor's adaptive
//! polling start from what it learned instead of guessing.

use crate::abiquo::model::TaskState;
use crate::exec::event::PathTaken;
use crate::journal::JOURNAL_FORMAT;
use crate::pacing::TaskDurations;
use crate::runbook::model::Action;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many of the newest journals of a runbook teach VM times: enough for a stable mean,
/// cheap at start-up.
pub const MAX_JOURNALS: usize = 20;
/// How many of the newest journals of a cloud teach task times (priors for polling).
pub const TASK_JOURNALS: usize = 5;

/// The `.jsonl` files in `dir`, newest first.
fn newest_files(dir: &Path) -> Vec<PathBuf> {
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
    files.into_iter().map(|(_, p)| p).collect()
}

// A journal line read only for what durations need: the rest of it (a region's plan is
// tens of MB on one line) is skipped by the parser, never built.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    record: Cow<'a, str>,
    format: Option<u32>,
    #[serde(borrow)]
    endpoint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    runbook_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<LineEvent<'a>>,
}

#[derive(Deserialize)]
struct LineEvent<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    plan: Option<LinePlan<'a>>,
    step: Option<usize>,
    target: Option<usize>,
    state: Option<TaskState>,
    elapsed_ms: Option<u64>,
    #[serde(borrow)]
    result: Option<LineResult<'a>>,
}

#[derive(Deserialize)]
struct LinePlan<'a> {
    #[serde(borrow)]
    endpoint: Cow<'a, str>,
    steps: Vec<LineStep>,
}

#[derive(Deserialize)]
struct LineStep {
    index: usize,
    action: Action,
}

#[derive(Deserialize)]
struct LineResult<'a> {
    step: usize,
    target: usize,
    action: Action,
    path: PathTaken,
    duration_ms: u64,
    #[serde(borrow)]
    result: Cow<'a, str>,
}

/// What one earlier run teaches.
#[derive(Default)]
struct Lessons {
    /// Successful task times, by their step's action.
    tasks: Vec<(Action, u64)>,
    /// Per VM (step, target), the time of its last result if that one teaches one.
    vms: HashMap<(usize, usize), (Action, u64)>,
    /// A run of the runbook whose VM times were asked for.
    of_runbook: bool,
}

/// Reads what a journal of a run against `endpoint` teaches, line by line: task times
/// when `tasks`, VM times when `vms_of` names its runbook. `None` for a file that is not
/// such a journal or is damaged before its last line (a torn last line is what a crash
/// leaves, and is passed over).
fn read_lessons(path: &Path, endpoint: &str, tasks: bool, vms_of: Option<&str>) -> Option<Lessons> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut lessons = Lessons::default();
    let mut line = Vec::new();
    // Step index → action, of the run (or resume) the events belong to.
    let mut actions: HashMap<usize, Action> = HashMap::new();
    let mut first = true;
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line).ok()? == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = match serde_json::from_slice::<Line>(&line) {
            Ok(parsed) if complete => parsed,
            // Torn: the last line, cut short or garbled by a crash.
            _ if file.fill_buf().ok()?.is_empty() => break,
            // A record of a shape these figures do not know teaches nothing; the rest may.
            _ if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_ok() => continue,
            _ => return None,
        };
        if std::mem::take(&mut first) {
            let foreign = parsed.record != "header"
                || parsed.format != Some(JOURNAL_FORMAT)
                || parsed.endpoint.as_deref() != Some(endpoint);
            if foreign {
                return None;
            }
            lessons.of_runbook =
                vms_of.is_some_and(|name| parsed.runbook_name.as_deref() == Some(name));
            if !tasks && !lessons.of_runbook {
                return Some(lessons);
            }
            continue;
        }
        let Some(event) = parsed.event else { continue };
        match &*event.event {
            // A run that started before its listing ended has its whole plan in `planned`.
            "run_started" | "planned" => {
                // Another cloud's durations say nothing about this one.
                actions = event
                    .plan
                    .filter(|p| p.endpoint == endpoint)
                    .map(|p| p.steps.iter().map(|s| (s.index, s.action)).collect())
                    .unwrap_or_default();
            }
            "task_finished" if tasks => {
                let action = event.step.and_then(|step| actions.get(&step));
                if let (Some(&action), Some(state), Some(ms)) =
                    (action, event.state, event.elapsed_ms)
                    && state.is_success()
                {
                    lessons.tasks.push((action, ms));
                }
            }
            // Acting again clears what the VM's last result said.
            "vm_acting" if lessons.of_runbook => {
                if let (Some(step), Some(target)) = (event.step, event.target) {
                    lessons.vms.remove(&(step, target));
                }
            }
            "vm_finished" if lessons.of_runbook => {
                let Some(r) = event.result else { continue };
                // Skips, failures and fallbacks say nothing about the action's usual time.
                let teaches =
                    r.result == "ok" && matches!(r.path, PathTaken::Direct | PathTaken::Graceful);
                if teaches {
                    lessons
                        .vms
                        .insert((r.step, r.target), (r.action, r.duration_ms));
                } else {
                    lessons.vms.remove(&(r.step, r.target));
                }
            }
            _ => {}
        }
    }
    (!first).then_some(lessons)
}

/// Reads the journals in `dir` of earlier runs against `endpoint` once, newest first:
/// task times from the newest [`TASK_JOURNALS`] (any runbook: tasks take as long on a
/// cloud whichever runbook sent them), VM times from the newest [`MAX_JOURNALS`] of the
/// runbook named `runbook_name` (they depend on its steps). Each journal is read a line at
/// a time for those figures alone: a region's journal is hundreds of MB. Torn or foreign
/// files are passed over; a missing or unreadable directory just means starting cold.
pub fn read_durations(dir: &Path, endpoint: &str, runbook_name: &str) -> TaskDurations {
    let learned = TaskDurations::new();
    let (mut task_journals, mut vm_journals) = (0, 0);
    let (mut tasks, mut vms) = (0, 0);
    for path in newest_files(dir) {
        let want_tasks = task_journals < TASK_JOURNALS;
        let want_vms = vm_journals < MAX_JOURNALS;
        if !want_tasks && !want_vms {
            break;
        }
        let vms_of = want_vms.then_some(runbook_name);
        let Some(lessons) = read_lessons(&path, endpoint, want_tasks, vms_of) else {
            continue;
        };
        if want_tasks {
            task_journals += 1;
            for &(action, ms) in &lessons.tasks {
                learned.add_prior(action, Duration::from_millis(ms));
            }
            tasks += lessons.tasks.len();
        }
        if lessons.of_runbook {
            vm_journals += 1;
        }
        for &(action, ms) in lessons.vms.values() {
            learned.record_vm(action, Duration::from_millis(ms));
            vms += 1;
        }
    }
    if tasks > 0 || vms > 0 {
        tracing::debug!("learned {tasks} task and {vms} VM durations from earlier runs");
    }
    learned
}

/// [`read_durations`], off the async runtime, from now on: a region's journals take
/// seconds, read while the run logs in and lists.
pub fn durations_from_journals(
    dir: &Path,
    endpoint: &str,
    runbook_name: &str,
) -> tokio::task::JoinHandle<TaskDurations> {
    let (dir, endpoint, name) = (dir.to_owned(), endpoint.to_owned(), runbook_name.to_owned());
    tokio::task::spawn_blocking(move || read_durations(&dir, &endpoint, &name))
}

#[cfg(test)]
mod tests;
