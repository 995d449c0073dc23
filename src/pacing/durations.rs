//! What has been learned about how long power actions take on a cloud, per action: task
//! times from the 202 until the task was seen finished (what polling paces itself by) and
//! whole VM times from earlier runs (what a plan estimates a VM by). Earlier runs' journals
//! feed it through `journal::history`; the executor teaches it the run's own tasks.

use crate::runbook::model::Action;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
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
    /// From blind waits of this run (polls placed before anything was known, far apart):
    /// a rough guess, used like the priors until precise samples exist.
    coarse: VecDeque<u64>,
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
            self.recent
                .iter()
                .chain(&self.priors)
                .chain(&self.coarse)
                .copied()
                .collect()
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
    /// Smoothed round trip of a poll, milliseconds (`None` until one is measured).
    round_trip_ms: Option<f64>,
}

/// Weight of a new round trip in the smoothed one (as TCP's SRTT).
const ROUND_TRIP_GAIN: f64 = 0.125;
/// A poll that took longer than this was retried or stalled: not the network's round trip.
const ROUND_TRIP_MAX: Duration = Duration::from_secs(5);

/// Learned durations per action, shared by every VM of a run (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TaskDurations {
    inner: Arc<Mutex<Learned>>,
    /// Woken when an action's first duration is learned: waits that were backing off
    /// blind can aim at the window instead.
    first_learned: Arc<Notify>,
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
        self.push(action, took, |s| &mut s.recent);
    }

    /// A task of `action` found finished by a poll placed blind: known only roughly, it
    /// guides polling until this run has a few precise durations.
    pub fn record_coarse(&self, action: Action, took: Duration) {
        self.push(action, took, |s| &mut s.coarse);
    }

    /// Adds a run's own duration to one of an action's lists; waits backing off blind are
    /// woken when it is the action's first.
    fn push(&self, action: Action, took: Duration, list: fn(&mut Samples) -> &mut VecDeque<u64>) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let first = self.with_task(action, |s| {
            let first = s.recent.is_empty() && s.priors.is_empty() && s.coarse.is_empty();
            let kept = list(s);
            if kept.len() == RECENT {
                kept.pop_front();
            }
            kept.push_back(ms);
            s.cached = None;
            first
        });
        if first {
            self.first_learned.notify_waiters();
        }
    }

    /// Resolves when some action's first duration is learned (after this call).
    pub fn first_learned(&self) -> Notified<'_> {
        self.first_learned.notified()
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

    /// A poll's answer arrived `took` after it was sent.
    pub fn record_round_trip(&self, took: Duration) {
        if took > ROUND_TRIP_MAX {
            return;
        }
        let ms = took.as_secs_f64() * 1000.0;
        self.with(|l| {
            l.round_trip_ms = Some(match l.round_trip_ms {
                Some(srtt) => srtt + ROUND_TRIP_GAIN * (ms - srtt),
                None => ms,
            });
        });
    }

    /// Half the smoothed round trip: how long after a poll is sent the API looks at the
    /// task (zero until measured).
    pub fn half_round_trip(&self) -> Duration {
        self.with(|l| l.round_trip_ms).map_or(Duration::ZERO, |ms| {
            Duration::from_secs_f64(ms.max(0.0) / 2000.0)
        })
    }

    /// One VM of an earlier run that reached its target through `action` in `took`.
    pub fn record_vm(&self, action: Action, took: Duration) {
        self.with(|l| {
            let e = l.vm_times.entry(action).or_insert((0, 0));
            e.0 = e.0.saturating_add(took.as_millis());
            e.1 = e.1.saturating_add(1);
        });
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
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    use crate::pacing::window_ms as window;

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
    fn coarse_durations_guide_only_until_precise_ones_exist() {
        let d = TaskDurations::new();
        d.record_coarse(Action::Off, ms(400));
        assert!(d.window(Action::Off).is_some());
        for _ in 0..FEW {
            d.record(Action::Off, ms(500));
        }
        let w = d.window(Action::Off).unwrap();
        assert_eq!((w.lo, w.hi), (ms(500), ms(500)));
    }

    #[test]
    fn round_trips_are_smoothed_and_stalls_ignored() {
        let d = TaskDurations::new();
        assert_eq!(d.half_round_trip(), Duration::ZERO);
        d.record_round_trip(ms(80));
        assert_eq!(d.half_round_trip(), ms(40));
        // A retried poll says nothing about the network.
        d.record_round_trip(Duration::from_secs(30));
        assert_eq!(d.half_round_trip(), ms(40));
        for _ in 0..100 {
            d.record_round_trip(ms(200));
        }
        let half = d.half_round_trip();
        assert!(half > ms(99) && half <= ms(100), "{half:?}");
    }

    #[test]
    fn vm_times_are_means_per_action() {
        let d = TaskDurations::new();
        d.record_vm(Action::Off, Duration::from_secs(10));
        d.record_vm(Action::Off, Duration::from_secs(20));
        assert_eq!(d.vm_mean(Action::Off), Some((Duration::from_secs(15), 2)));
        assert_eq!(d.vm_mean(Action::On), None);
        // The two statistics are apart: VM times do not pace the polling.
        assert_eq!(d.window(Action::Off), None);
    }
}
