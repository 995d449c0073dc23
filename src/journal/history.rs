//! Earlier runs as evidence: how long power actions take on a cloud. [`TaskDurations`] is
//! the one learner: [`TaskDurations::read`] reads the journals of earlier runs once, and
//! both the plan estimator and the executor's adaptive polling start from what it learned
//! instead of guessing (the executor also teaches it the tasks of the run as they finish).

use crate::exec::event::{Event, PathTaken, VmOutcome, VmResult};
use crate::journal::{Journal, Record, RunView, load};
use crate::runbook::model::Action;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

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

/// Where the tasks of one action are expected to finish, measured from acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Earliest expected finish (5th percentile of the recent durations).
    pub lo: Duration,
    /// Latest expected finish (95th percentile); later counts as overdue.
    pub hi: Duration,
}

/// Durations kept per action: the most recent ones describe the cloud as it is now.
pub(crate) const RECENT: usize = 200;
/// Durations from earlier runs kept per action.
const PRIORS: usize = 200;
/// Below this many samples the window is the observed range, widened.
pub(crate) const FEW: usize = 5;

#[derive(Debug, Default)]
struct Samples {
    /// Milliseconds, oldest first.
    recent: VecDeque<u64>,
    /// From earlier runs: used until this run has learned enough on its own.
    priors: VecDeque<u64>,
    cached: Option<Option<Window>>,
}

impl Samples {
    fn window(&mut self) -> Option<Window> {
        if let Some(w) = self.cached {
            return w;
        }
        let mut all: Vec<u64> = if self.recent.len() >= FEW {
            self.recent.iter().copied().collect()
        } else {
            self.recent.iter().chain(&self.priors).copied().collect()
        };
        all.sort_unstable();
        let w = window_of(&all);
        self.cached = Some(w);
        w
    }
}

/// 5th–95th percentile of sorted durations; with few, the whole range widened by 10%.
fn window_of(sorted: &[u64]) -> Option<Window> {
    let (&first, &last) = (sorted.first()?, sorted.last()?);
    let (lo, hi) = if sorted.len() < FEW {
        (first * 9 / 10, last * 11 / 10)
    } else {
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[i.min(sorted.len() - 1)]
        };
        (at(0.05), at(0.95))
    };
    Some(Window {
        lo: Duration::from_millis(lo),
        hi: Duration::from_millis(hi.max(lo)),
    })
}

/// What is known per action. The two statistics measure different things, so both are
/// kept: a task's time from its 202 until it was seen finished (what polling paces itself
/// by), and the whole time an acted-on VM took, reads and polling included (what a plan
/// estimates a VM by).
#[derive(Debug, Default)]
struct Learned {
    tasks: HashMap<Action, Samples>,
    /// action → (sum of milliseconds, samples), from earlier runs of the same runbook.
    vm_times: BTreeMap<Action, (u128, u64)>,
}

/// Learned durations per action, shared by every VM of a run (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TaskDurations {
    inner: Arc<Mutex<Learned>>,
}

impl TaskDurations {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Learned) -> R) -> R {
        let mut learned = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut learned)
    }

    fn with_task<R>(&self, action: Action, f: impl FnOnce(&mut Samples) -> R) -> R {
        self.with(|l| f(l.tasks.entry(action).or_default()))
    }

    /// A task of `action` that finished successfully after about `took`.
    pub fn record(&self, action: Action, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.with_task(action, |s| {
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(ms);
            s.cached = None;
        });
    }

    /// A duration seen in an earlier run: guides polling until this run has its own.
    pub fn add_prior(&self, action: Action, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.with_task(action, |s| {
            if s.priors.len() == PRIORS {
                s.priors.pop_front();
            }
            s.priors.push_back(ms);
            s.cached = None;
        });
    }

    /// Where tasks of `action` are expected to finish; `None` until something is known.
    pub fn window(&self, action: Action) -> Option<Window> {
        self.with_task(action, Samples::window)
    }

    /// One VM of an earlier run that reached its target through `action` in `took`.
    pub fn record_vm(&self, action: Action, took: Duration) {
        self.with(|l| {
            let e = l.vm_times.entry(action).or_insert((0, 0));
            e.0 = e.0.saturating_add(took.as_millis());
            e.1 = e.1.saturating_add(1);
        });
    }

    /// Learns VM times from the results of an earlier run: the successful, acted-on VMs
    /// (skips, failures and fallbacks say nothing about the action's usual duration).
    /// Returns how many were learned.
    pub fn learn_from_results<'a>(&self, results: impl IntoIterator<Item = &'a VmResult>) -> u64 {
        let mut learned = 0;
        for r in results {
            if r.outcome == VmOutcome::Ok
                && matches!(r.path, PathTaken::Direct | PathTaken::Graceful)
            {
                self.record_vm(r.action, Duration::from_millis(r.duration_ms));
                learned += 1;
            }
        }
        learned
    }

    /// Mean time a VM took for `action` in earlier runs, and how many VMs that is.
    pub fn vm_mean(&self, action: Action) -> Option<(Duration, u64)> {
        let (sum, n) = self.with(|l| l.vm_times.get(&action).copied())?;
        let mean = sum.checked_div(u128::from(n))?;
        Some((
            Duration::from_millis(u64::try_from(mean).unwrap_or(u64::MAX)),
            n,
        ))
    }

    /// Learns task-time priors from an earlier run's events (a journal): every successful
    /// `TaskFinished` of a run against `endpoint`, keyed by its step's action. Returns how
    /// many were learned.
    pub fn learn_from_events<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Event>,
        endpoint: &str,
    ) -> usize {
        let mut actions: HashMap<usize, Action> = HashMap::new();
        let mut learned = 0;
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
                        self.add_prior(action, Duration::from_millis(*elapsed_ms));
                        learned += 1;
                    }
                }
                _ => {}
            }
        }
        learned
    }

    /// Reads the journals in `dir` of earlier runs against `endpoint` once, newest first:
    /// task times from the newest [`TASK_JOURNALS`] (any runbook: tasks take as long on a
    /// cloud whichever runbook sent them), VM times from the newest [`MAX_JOURNALS`] of the
    /// runbook named `runbook_name` (they depend on its steps). Torn or foreign files are
    /// passed over; a missing or unreadable directory just means starting cold.
    pub fn read(dir: &Path, endpoint: &str, runbook_name: &str) -> TaskDurations {
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
                tasks += learned.learn_from_events(events, endpoint);
            }
            if vm_journals < MAX_JOURNALS && journal.header.runbook_name == runbook_name {
                vm_journals += 1;
                vms += learned.learn_from_results(&RunView::of(&journal).results());
            }
        }
        if tasks > 0 || vms > 0 {
            tracing::debug!("learned {tasks} task and {vms} VM durations from earlier runs");
        }
        learned
    }

    /// [`TaskDurations::read`], off the async runtime.
    pub async fn from_journals(dir: &Path, endpoint: &str, runbook_name: &str) -> TaskDurations {
        let (dir, endpoint, name) = (dir.to_owned(), endpoint.to_owned(), runbook_name.to_owned());
        tokio::task::spawn_blocking(move || TaskDurations::read(&dir, &endpoint, &name))
            .await
            .unwrap_or_default()
    }
}

/// What an adaptive wait learns from, and feeds back into.
#[derive(Debug, Clone, Copy)]
pub struct Pacing<'a> {
    pub durations: &'a TaskDurations,
    /// The action whose durations apply (the hard off of a fallback is `Off`).
    pub action: Action,
    /// When the task was accepted (the 202 arrived).
    pub since: Instant,
}

#[cfg(test)]
mod tests;
