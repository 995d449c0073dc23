//! The learned task-duration model: how long each action's tasks take on this cloud, from
//! the tasks already finished in this run and earlier runs' journals (as priors). Adaptive
//! polling places its polls by the [`Window`] it yields.

use crate::exec::event::Event;
use crate::runbook::model::Action;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Where the tasks of one action are expected to finish, measured from acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Earliest expected finish (5th percentile of the recent durations).
    pub lo: Duration,
    /// Latest expected finish (95th percentile); later counts as overdue.
    pub hi: Duration,
}

/// Durations kept per action: the most recent ones describe the cloud as it is now.
const RECENT: usize = 200;
/// Durations from earlier runs kept per action.
const PRIORS: usize = 200;
/// Below this many samples the window is the observed range, widened.
const FEW: usize = 5;

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

/// Learned task durations per action, shared by every VM of a run (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TaskDurations {
    inner: Arc<Mutex<HashMap<Action, Samples>>>,
}

impl TaskDurations {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, action: Action, f: impl FnOnce(&mut Samples) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(map.entry(action).or_default())
    }

    /// A task of `action` that finished successfully after about `took`.
    pub fn record(&self, action: Action, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.with(action, |s| {
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
        self.with(action, |s| {
            if s.priors.len() == PRIORS {
                s.priors.pop_front();
            }
            s.priors.push_back(ms);
            s.cached = None;
        });
    }

    /// Where tasks of `action` are expected to finish; `None` until something is known.
    pub fn window(&self, action: Action) -> Option<Window> {
        self.with(action, Samples::window)
    }

    /// Learns priors from an earlier run's events (a journal): every successful
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
pub(crate) const RECENT_FOR_TESTS: usize = RECENT;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::TaskState;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window(lo: u64, hi: u64) -> Option<Window> {
        Some(Window {
            lo: ms(lo),
            hi: ms(hi),
        })
    }

    #[test]
    fn window_is_the_widened_range_with_few_samples_then_percentiles() {
        let d = TaskDurations::new();
        assert_eq!(d.window(Action::Off), None);
        d.record(Action::Off, ms(2000));
        assert_eq!(d.window(Action::Off), window(1800, 2200));
        assert_eq!(d.window(Action::On), None, "per action");
        for i in 0..100 {
            d.record(Action::Off, ms(1000 + i * 10));
        }
        let w = d.window(Action::Off).unwrap();
        assert!(w.lo >= ms(1040) && w.lo <= ms(1060), "{w:?}");
        assert!(w.hi >= ms(1930) && w.hi <= ms(1960), "{w:?}");
    }

    #[test]
    fn recent_samples_replace_old_ones() {
        let d = TaskDurations::new();
        for _ in 0..RECENT {
            d.record(Action::On, ms(10_000));
        }
        for _ in 0..RECENT {
            d.record(Action::On, ms(1_000));
        }
        assert_eq!(d.window(Action::On), window(1000, 1000));
    }

    #[test]
    fn priors_guide_until_the_run_has_its_own_samples() {
        let d = TaskDurations::new();
        for _ in 0..50 {
            d.add_prior(Action::Shutdown, ms(30_000));
        }
        assert_eq!(d.window(Action::Shutdown), window(30_000, 30_000));
        for _ in 0..FEW {
            d.record(Action::Shutdown, ms(3_000));
        }
        assert_eq!(d.window(Action::Shutdown), window(3_000, 3_000));
    }

    #[test]
    fn journal_events_become_priors_per_step_action() {
        use crate::plan::{Plan, PlannedStep};
        use crate::runbook::model::Order;
        let step = |index, action| PlannedStep {
            index,
            name: format!("s{index}"),
            action,
            order: Order::Parallel,
            after: Vec::new(),
            concurrency: 1,
            waves: Vec::new(),
            wave_pause_ms: 0,
            fallback_after_ms: None,
            targets: Vec::new(),
        };
        let plan = Plan {
            format: 1,
            runbook_name: "r".into(),
            source_hash: String::new(),
            endpoint: "https://cloud/api".into(),
            created_at: String::new(),
            concurrency: 1,
            steps: vec![step(0, Action::Shutdown), step(1, Action::On)],
        };
        let finished = |step, state: Option<TaskState>, elapsed_ms| Event::TaskFinished {
            step,
            target: 0,
            vm: "vm".into(),
            task_href: "h".into(),
            state,
            polls: 3,
            elapsed_ms,
        };
        let events = [
            Event::RunStarted {
                started_at: String::new(),
                plan: Box::new(plan),
            },
            finished(0, Some(TaskState::FinishedSuccessfully), 40_000),
            finished(0, Some(TaskState::FinishedUnsuccessfully), 1_000),
            finished(1, Some(TaskState::FinishedSuccessfully), 5_000),
            finished(1, None, 99_000),
        ];
        let d = TaskDurations::new();
        assert_eq!(d.learn_from_events(&events, "https://cloud/api"), 2);
        assert_eq!(d.window(Action::Shutdown), window(36_000, 44_000));
        assert_eq!(d.window(Action::On), window(4_500, 5_500));
        let other = TaskDurations::new();
        assert_eq!(other.learn_from_events(&events, "https://other/api"), 0);
        assert_eq!(other.window(Action::On), None);
    }
}
