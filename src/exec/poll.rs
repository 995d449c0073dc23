//! Waiting for a task: poll its link until it is terminal, bounded by a timeout and
//! cancellable.
//!
//! Polling is adaptive: [`TaskDurations`] learns how long each action's tasks take (from the
//! tasks already finished in this run, and from earlier runs' journals as priors), and
//! [`PollPolicy::next_delay`] uses the learned window of finishing times to stay quiet until
//! just past the earliest expected finish, spread a small budget of polls across the window
//! (geometrically, so the detection delay stays a bounded share of the task time), and back
//! off once the task is overdue. With nothing learned yet it falls back to exponential
//! backoff from `initial`.

use crate::abiquo::api::CloudApi;
use crate::abiquo::backoff::{Backoff, scaled};
use crate::abiquo::error::ClientError;
use crate::abiquo::model::Task;
use crate::exec::event::Event;
use crate::journal::Record;
use crate::runbook::model::Action;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How tasks are polled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// First delay when nothing is known about the task's duration.
    pub initial: Duration,
    /// Growth of the gap while cold (exponential backoff) and once a task is overdue.
    pub factor: f64,
    /// Longest gap between two polls once the task may be finished (the quiet wait before
    /// the earliest expected finish is bounded by the learned durations and the timeout).
    pub max: Duration,
    /// Never two polls of a task closer than this.
    pub min_gap: Duration,
    /// Poll near the learned expected finish instead of backing off from `initial`.
    pub adaptive: bool,
    /// Polls spread across the learned window of finishing times.
    pub window_polls: u32,
    /// Within the window, no gap is longer than this share of the time since the task was
    /// accepted: the detection delay stays under about half of it.
    pub max_relative_gap: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            factor: 1.5,
            max: Duration::from_secs(5),
            min_gap: Duration::from_millis(25),
            adaptive: true,
            window_polls: 4,
            max_relative_gap: 0.2,
        }
    }
}

impl PollPolicy {
    /// Exponential schedule for waits with no duration to learn (LOCKED VMs).
    pub fn schedule(&self) -> PollSchedule {
        PollSchedule {
            backoff: self.backoff(self.max),
            next: 0,
        }
    }

    fn backoff(&self, max: Duration) -> Backoff {
        Backoff {
            initial: self.initial,
            factor: self.factor,
            max,
        }
    }

    /// Delay before the next poll of a task accepted `elapsed` ago, given the learned
    /// window of finishing times (if any). Pure, so the schedule can be tested exactly.
    pub fn next_delay(&self, elapsed: Duration, window: Option<Window>) -> Duration {
        let max = self.max.max(self.min_gap);
        let clamp = |d: Duration| d.clamp(self.min_gap, max);
        let growth = self.factor.max(1.0) - 1.0;
        let Some(w) = window.filter(|_| self.adaptive) else {
            // Cold: initial, then about ×factor per poll.
            return clamp(self.backoff(max).after(elapsed));
        };
        let ratio = self.window_ratio(w);
        // Quiet until one step into the window: a poll right at `lo` (the 5th percentile)
        // would find almost every task still running.
        let first = scaled(w.lo, ratio).max(w.lo.saturating_add(self.min_gap));
        if elapsed.saturating_add(self.min_gap) <= first {
            return first - elapsed;
        }
        // One step past `hi` still belongs to the window.
        let end = scaled(w.hi, ratio).saturating_add(self.min_gap);
        if elapsed <= end {
            return clamp(scaled(elapsed, ratio - 1.0));
        }
        // Overdue: the window was wrong for this task. Start from a gap relative to the
        // elapsed time and grow with the time overdue.
        let relative = (ratio - 1.0).max(self.max_relative_gap / 2.0);
        clamp(scaled(elapsed, relative).saturating_add(scaled(elapsed - end, growth)))
    }

    /// Geometric step across the window: `window_polls` steps from `lo` reach `hi`, never
    /// coarser than `max_relative_gap`.
    fn window_ratio(&self, w: Window) -> f64 {
        let lo = w.lo.as_secs_f64().max(1e-3);
        let span = (w.hi.as_secs_f64() / lo).max(1.0);
        let r = span.powf(1.0 / f64::from(self.window_polls.max(1)));
        r.clamp(1.0, 1.0 + self.max_relative_gap.max(0.0))
    }
}

/// The delays of one exponential wait, in order.
#[derive(Debug, Clone)]
pub struct PollSchedule {
    backoff: Backoff,
    /// Delays handed out so far.
    next: u32,
}

impl PollSchedule {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff.delay(self.next);
        self.next = self.next.saturating_add(1);
        d
    }
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

    /// Priors from the newest journals in `dir` of runs against `endpoint` (read with the
    /// journal's own reader, so torn or foreign files are passed over). A missing or
    /// unreadable directory just means starting cold. Reads off the runtime.
    pub async fn from_journals(dir: &Path, endpoint: &str) -> TaskDurations {
        let durations = TaskDurations::new();
        let (dir, endpoint, learner) = (dir.to_owned(), endpoint.to_owned(), durations.clone());
        let read = tokio::task::spawn_blocking(move || {
            crate::journal::history::past_journals(&dir, &endpoint, None)
                .iter()
                .take(JOURNALS)
                .map(|journal| {
                    let events = journal.records.iter().filter_map(|r| match r {
                        Record::Event { event, .. } => Some(event),
                        _ => None,
                    });
                    learner.learn_from_events(events, &endpoint)
                })
                .sum::<usize>()
        });
        match read.await {
            Ok(n) if n > 0 => tracing::debug!("learned {n} task durations from earlier runs"),
            _ => {}
        }
        durations
    }
}

/// Earlier runs' journals read for priors.
const JOURNALS: usize = 5;

/// How a wait ended.
#[derive(Debug)]
pub enum TaskWait {
    /// The task reached a terminal state.
    Finished { task: Task, polls: u32 },
    /// Not terminal within the timeout.
    TimedOut { last: Option<Task>, polls: u32 },
    /// The cancellation token fired (drain timeout after Ctrl-C).
    Interrupted { last: Option<Task>, polls: u32 },
    /// The task cannot be read any more (gone, or a fatal API error).
    Lost { error: ClientError, polls: u32 },
}

impl TaskWait {
    pub fn polls(&self) -> u32 {
        match self {
            TaskWait::Finished { polls, .. }
            | TaskWait::TimedOut { polls, .. }
            | TaskWait::Interrupted { polls, .. }
            | TaskWait::Lost { polls, .. } => *polls,
        }
    }

    pub fn last(&self) -> Option<&Task> {
        match self {
            TaskWait::Finished { task, .. } => Some(task),
            TaskWait::TimedOut { last, .. } | TaskWait::Interrupted { last, .. } => last.as_ref(),
            TaskWait::Lost { .. } => None,
        }
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

/// Polls `href` until the task is terminal, `timeout` elapses or `cancel` fires, with the
/// cold (exponential) schedule. Transient read failures (already retried by the client) do
/// not end the wait; a vanished task (404) or a fatal API error does.
pub async fn wait_for_task<A: CloudApi>(
    client: &A,
    href: &str,
    policy: &PollPolicy,
    timeout: Duration,
    cancel: &CancellationToken,
) -> TaskWait {
    wait_with(
        || client.get_task(href),
        href,
        policy,
        None,
        timeout,
        cancel,
    )
    .await
}

/// [`wait_for_task`], polling near the expected finish learned in `pacing` and teaching it
/// this task's duration when it succeeds.
pub async fn wait_for_task_paced<A: CloudApi>(
    client: &A,
    href: &str,
    policy: &PollPolicy,
    pacing: Pacing<'_>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> TaskWait {
    wait_with(
        || client.get_task(href),
        href,
        policy,
        Some(pacing),
        timeout,
        cancel,
    )
    .await
}

/// The poll loop, over any task reader (tests use a fake one under paused time).
pub(crate) async fn wait_with<F, Fut>(
    mut read: F,
    href: &str,
    policy: &PollPolicy,
    pacing: Option<Pacing<'_>>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> TaskWait
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Task, ClientError>>,
{
    let start = Instant::now();
    // A timeout too large to add is as good as none.
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let since = pacing.map_or_else(Instant::now, |p| p.since);
    let mut polls = 0u32;
    let mut last: Option<Task> = None;
    // When the last poll found the task still running (time since acceptance).
    let mut pending_at: Option<Duration> = None;
    // The window the first poll was placed by.
    let mut first_window: Option<Window> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return TaskWait::TimedOut { last, polls };
        }
        let window = pacing.and_then(|p| p.durations.window(p.action));
        if polls == 0 {
            first_window = window;
        }
        // Never sleep past the deadline; still poll once right at it.
        let delay = policy
            .next_delay(now.saturating_duration_since(since), window)
            .min(deadline - now);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return TaskWait::Interrupted { last, polls },
        }
        polls += 1;
        let sent = Instant::now();
        let answer = read().await;
        // About when the server looked at the task.
        let at = sent.saturating_duration_since(since) + sent.elapsed() / 2;
        match answer {
            Ok(task) if task.state.is_terminal() => {
                if let Some(p) = pacing
                    && task.state.is_success()
                {
                    // It finished between the last two polls. Found done at the very first
                    // poll, it may have finished much earlier: count it just below the
                    // window, so that the window moves down when such tasks become common
                    // (the cloud got faster) and stays put while they are rare.
                    let took = match (pending_at, first_window) {
                        (Some(before), _) => (before + at) / 2,
                        (None, Some(w)) => scaled(w.lo, 0.9),
                        (None, None) => scaled(at, 0.9),
                    };
                    p.durations.record(p.action, took);
                }
                return TaskWait::Finished { task, polls };
            }
            Ok(task) => {
                last = Some(task);
                pending_at = Some(at);
            }
            Err(error) if error.status() == Some(404) || error.is_fatal_for_run() => {
                return TaskWait::Lost { error, polls };
            }
            Err(error) => {
                tracing::warn!("cannot read task {href} (will retry): {error}");
            }
        }
    }
}

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

    fn task(state: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "taskId": "t-1", "type": "POWER_OFF", "state": state,
        }))
        .unwrap()
    }

    /// A fake task that finishes `after` its acceptance; counts reads.
    struct Fake {
        since: Instant,
        after: Duration,
        reads: std::cell::Cell<u32>,
    }

    impl Fake {
        fn new(after: Duration) -> Self {
            Self {
                since: Instant::now(),
                after,
                reads: std::cell::Cell::new(0),
            }
        }

        async fn read(&self) -> Result<Task, ClientError> {
            self.reads.set(self.reads.get() + 1);
            // One millisecond of network, like loopback.
            tokio::time::sleep(ms(1)).await;
            Ok(if self.since.elapsed() >= self.after {
                task("FINISHED_SUCCESSFULLY")
            } else {
                task("STARTED")
            })
        }
    }

    /// Runs one paced wait for a task taking `took`; returns (polls, detection delay).
    async fn paced(
        durations: &TaskDurations,
        policy: &PollPolicy,
        took: Duration,
    ) -> (u32, Duration) {
        let fake = Fake::new(took);
        let pacing = Pacing {
            durations,
            action: Action::Off,
            since: fake.since,
        };
        let cancel = CancellationToken::new();
        let wait = wait_with(
            || fake.read(),
            "t",
            policy,
            Some(pacing),
            Duration::from_secs(600),
            &cancel,
        )
        .await;
        assert!(matches!(wait, TaskWait::Finished { .. }), "{wait:?}");
        assert_eq!(wait.polls(), fake.reads.get());
        (wait.polls(), fake.since.elapsed() - took)
    }

    /// The delays as computed before the schedules shared one backoff, to the nanosecond:
    /// the plan estimator replays them and tests count requests by them.
    #[test]
    fn schedules_keep_their_exact_figures() {
        let p = PollPolicy::default();
        let mut s = p.schedule();
        let locked: Vec<u128> = (0..12).map(|_| s.next_delay().as_nanos()).collect();
        let expected = [
            250_000_000,
            375_000_000,
            562_500_000,
            843_750_000,
            1_265_625_000,
            1_898_437_500,
            2_847_656_250,
            4_271_484_375,
            5_000_000_000,
            5_000_000_000,
            5_000_000_000,
            5_000_000_000,
        ];
        assert_eq!(locked, expected);
        let mut elapsed = Duration::ZERO;
        let mut cold = Vec::new();
        for _ in 0..12 {
            let d = p.next_delay(elapsed, None);
            cold.push(d.as_nanos());
            elapsed += d;
        }
        assert_eq!(cold, expected);
        let q = PollPolicy {
            initial: ms(300),
            factor: 1.7,
            max: Duration::from_secs(7),
            ..PollPolicy::default()
        };
        let mut s = q.schedule();
        let got: Vec<u128> = (0..8).map(|_| s.next_delay().as_nanos()).collect();
        assert_eq!(
            got,
            [
                300_000_000,
                510_000_000,
                867_000_000,
                1_473_900_000,
                2_505_630_000,
                4_259_571_000,
                7_000_000_000,
                7_000_000_000,
            ]
        );
    }

    #[test]
    fn schedule_grows_by_the_factor_up_to_the_cap() {
        let p = PollPolicy {
            initial: ms(100),
            factor: 2.0,
            max: ms(500),
            ..PollPolicy::default()
        };
        let mut s = p.schedule();
        let got: Vec<u128> = (0..6).map(|_| s.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500, 500]);
    }

    #[test]
    fn a_factor_below_one_does_not_shrink_delays() {
        let p = PollPolicy {
            initial: ms(100),
            factor: 0.5,
            max: Duration::from_secs(1),
            ..PollPolicy::default()
        };
        let mut s = p.schedule();
        assert_eq!(s.next_delay(), ms(100));
        assert_eq!(s.next_delay(), ms(100));
        assert_eq!(p.next_delay(ms(800), None), ms(100));
    }

    #[test]
    fn an_initial_above_the_cap_is_capped() {
        let p = PollPolicy {
            initial: Duration::from_secs(10),
            factor: 1.5,
            max: Duration::from_secs(2),
            ..PollPolicy::default()
        };
        assert_eq!(p.schedule().next_delay(), Duration::from_secs(2));
        assert_eq!(p.next_delay(Duration::ZERO, None), Duration::from_secs(2));
    }

    #[test]
    fn cold_polling_backs_off_exponentially_up_to_the_cap() {
        let p = PollPolicy::default();
        let mut elapsed = Duration::ZERO;
        let mut at = Vec::new();
        for _ in 0..12 {
            elapsed += p.next_delay(elapsed, None);
            at.push(elapsed.as_millis());
        }
        assert_eq!(&at[..5], [250, 625, 1187, 2031, 3296]);
        let gaps: Vec<u128> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert_eq!(*gaps.last().unwrap(), 5000);
    }

    #[test]
    fn known_durations_keep_quiet_until_the_window_then_poll_across_it() {
        let p = PollPolicy::default();
        // Quiet until one step into the window, whatever `max` says.
        let first = p.next_delay(Duration::ZERO, window(1800, 2200));
        assert!(first > ms(1850) && first < ms(1950), "{first:?}");
        let later = p.next_delay(ms(30_000), window(60_000, 90_000));
        assert!(later > ms(35_000) && later < ms(37_000), "{later:?}");
        // Inside the window: `window_polls` geometric steps from lo reach hi.
        let mut elapsed = first;
        let mut polls = 1;
        while elapsed < ms(2200) {
            elapsed += p.next_delay(elapsed, window(1800, 2200));
            polls += 1;
        }
        assert_eq!(polls, 4);
        assert!(elapsed < ms(2260), "{elapsed:?}");
    }

    #[test]
    fn a_wide_window_never_gaps_more_than_the_relative_bound() {
        let p = PollPolicy::default();
        let gap = p.next_delay(ms(10_000), window(1_000, 60_000));
        assert_eq!(gap, ms(2_000), "20% of the elapsed time");
        // …nor more than the cap.
        assert_eq!(p.next_delay(ms(50_000), window(1_000, 60_000)), p.max);
    }

    #[test]
    fn overdue_tasks_are_polled_less_and_less_often_up_to_the_cap() {
        let p = PollPolicy::default();
        let w = window(1800, 2200);
        let gaps: Vec<Duration> = [2300, 3000, 5000, 10_000, 60_000]
            .into_iter()
            .map(|e| p.next_delay(ms(e), w))
            .collect();
        assert!(gaps.windows(2).all(|g| g[1] > g[0]) || gaps[4] == p.max);
        assert!(gaps[0] < ms(200), "{gaps:?}");
        assert_eq!(gaps[4], p.max);
    }

    #[test]
    fn a_zero_width_window_still_keeps_the_minimum_gap() {
        let p = PollPolicy::default();
        assert_eq!(p.next_delay(ms(2000), window(2000, 2000)), p.min_gap);
        assert_eq!(p.next_delay(ms(2010), window(2000, 2000)), p.min_gap);
    }

    #[test]
    fn absurd_settings_saturate_instead_of_panicking() {
        let p = PollPolicy {
            factor: f64::INFINITY,
            max_relative_gap: f64::INFINITY,
            ..PollPolicy::default()
        };
        assert_eq!(p.next_delay(Duration::from_secs(10), None), p.max);
        assert_eq!(p.next_delay(Duration::MAX, window(1, 2)), p.max);
        let nan = PollPolicy {
            factor: f64::NAN,
            ..PollPolicy::default()
        };
        assert!(nan.next_delay(Duration::from_secs(10), None) <= nan.max);
    }

    #[test]
    fn adaptive_off_ignores_the_window() {
        let p = PollPolicy {
            adaptive: false,
            ..PollPolicy::default()
        };
        assert_eq!(p.next_delay(Duration::ZERO, window(1800, 2200)), ms(250));
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

    #[tokio::test(start_paused = true)]
    async fn cold_wait_backs_off_from_the_initial_delay() {
        let d = TaskDurations::new();
        // Polls at 0.25, 0.63, 1.19, 2.03 s.
        let (polls, delay) = paced(&d, &PollPolicy::default(), ms(2000)).await;
        assert_eq!(polls, 4);
        assert!(delay <= ms(50), "{delay:?}");
        // …and it taught the durations something close to the truth.
        let w = d.window(Action::Off).unwrap();
        assert!(w.lo <= ms(2000) && w.hi >= ms(1700), "{w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn learned_waits_poll_at_most_4_times_with_a_small_delay() {
        let d = TaskDurations::new();
        let policy = PollPolicy::default();
        // Tasks of 1.8 s to 2.2 s, as the scale benchmark's.
        let took = |i: u64| ms(1800 + (i * 37) % 400);
        for i in 0..20 {
            paced(&d, &policy, took(i)).await;
        }
        let (mut polls, mut delay) = (0, Duration::ZERO);
        let n = 200;
        for i in 20..20 + n {
            let (p, dl) = paced(&d, &policy, took(i)).await;
            polls += p;
            delay += dl;
        }
        let mean_polls = f64::from(polls) / f64::from(n as u32);
        let mean_delay = delay / n as u32;
        assert!(mean_polls <= 4.0, "mean polls {mean_polls}");
        // ≤ 10% of a 2 s task.
        assert!(mean_delay <= ms(200), "mean delay {mean_delay:?}");
        // Far better than cold polling.
        assert!(mean_delay <= ms(100), "mean delay {mean_delay:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cloud_that_gets_slower_is_followed() {
        let d = TaskDurations::new();
        let policy = PollPolicy::default();
        for _ in 0..20 {
            paced(&d, &policy, ms(2000)).await;
        }
        // Now tasks take 10 s: overdue backoff finds them (gently at first: most overdue
        // tasks are only a little late), and the window moves.
        let (polls, delay) = paced(&d, &policy, ms(10_000)).await;
        assert!(polls <= 16, "{polls}");
        assert!(delay <= policy.max, "{delay:?}");
        for _ in 0..RECENT {
            paced(&d, &policy, ms(10_000)).await;
        }
        let (polls, delay) = paced(&d, &policy, ms(10_000)).await;
        assert!(polls <= policy.window_polls + 1, "{polls}");
        assert!(delay <= ms(500), "{delay:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cloud_that_gets_faster_is_followed() {
        let d = TaskDurations::new();
        let policy = PollPolicy::default();
        for _ in 0..RECENT {
            paced(&d, &policy, ms(10_000)).await;
        }
        // Tasks now take 1 s: found done at the first poll, each time a bit earlier.
        let mut last_delay = Duration::MAX;
        for _ in 0..(RECENT * 3) {
            last_delay = paced(&d, &policy, ms(1000)).await.1;
        }
        assert!(last_delay <= ms(200), "{last_delay:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_wait_is_bounded_by_its_timeout() {
        let d = TaskDurations::new();
        for _ in 0..10 {
            d.record(Action::Off, Duration::from_secs(3600));
        }
        let fake = Fake::new(Duration::from_secs(7200));
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let wait = wait_with(
            || fake.read(),
            "t",
            &PollPolicy::default(),
            Some(Pacing {
                durations: &d,
                action: Action::Off,
                since: fake.since,
            }),
            Duration::from_secs(60),
            &cancel,
        )
        .await;
        assert!(matches!(wait, TaskWait::TimedOut { .. }), "{wait:?}");
        // One poll right at the deadline, none before (the window starts later).
        assert_eq!(wait.polls(), 1);
        assert!(started.elapsed() <= Duration::from_secs(61));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_quiet_wait_at_once() {
        let d = TaskDurations::new();
        d.record(Action::Off, Duration::from_secs(600));
        let fake = Fake::new(Duration::from_secs(600));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let wait = wait_with(
            || fake.read(),
            "t",
            &PollPolicy::default(),
            Some(Pacing {
                durations: &d,
                action: Action::Off,
                since: fake.since,
            }),
            Duration::from_secs(900),
            &cancel,
        )
        .await;
        assert!(
            matches!(wait, TaskWait::Interrupted { polls: 0, .. }),
            "{wait:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
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

    #[tokio::test]
    async fn the_newest_journals_of_the_same_cloud_seed_the_durations() {
        let dir = tempfile::tempdir().unwrap();
        let line = |endpoint: &str, step_action: &str, ms: u64| {
            format!(
                "{{\"event\":\"run_started\",\"started_at\":\"\",\"plan\":{{\"format\":1,\
                 \"runbook_name\":\"r\",\"source_hash\":\"\",\"endpoint\":\"{endpoint}\",\
                 \"created_at\":\"\",\"concurrency\":1,\"steps\":[{{\"index\":0,\"name\":\"s\",\
                 \"action\":\"{step_action}\",\"order\":\"parallel\",\"after\":[],\"concurrency\":1,\
                 \"waves\":[],\"wave_pause_ms\":0,\"fallback_after_ms\":null,\"targets\":[]}}]}}}}\n\
                 {{\"event\":\"task_finished\",\"step\":0,\"target\":0,\"vm\":\"v\",\"task_href\":\"h\",\
                 \"state\":\"FINISHED_SUCCESSFULLY\",\"polls\":2,\"elapsed_ms\":{ms}}}\n"
            )
        };
        // As the journal writes them: each event wrapped in a record, after a header.
        let records: String = line("http://x/api", "off", 7000)
            .lines()
            .map(|l| format!("{{\"record\":\"event\",\"at_ms\":1,\"event\":{l}}}\n"))
            .collect();
        let header = |endpoint: &str| {
            let h = Record::Header(crate::journal::Header {
                format: crate::journal::JOURNAL_FORMAT,
                powerbook: "test".into(),
                runbook_path: "/r.toml".into(),
                runbook_name: "r".into(),
                source_hash: String::new(),
                endpoint: endpoint.into(),
                started_at: String::new(),
                started_ms: 0,
            });
            serde_json::to_string(&h).unwrap()
        };
        let journal = format!("{}\n{records}", header("http://x/api"));
        std::fs::write(dir.path().join("a-1.jsonl"), journal).unwrap();
        let records: String = line("http://y/api", "on", 9000)
            .lines()
            .map(|l| format!("{{\"record\":\"event\",\"at_ms\":1,\"event\":{l}}}\n"))
            .collect();
        let other_cloud = format!("{}\n{records}", header("http://y/api"));
        std::fs::write(dir.path().join("a-2.jsonl"), other_cloud).unwrap();
        std::fs::write(dir.path().join("notes.txt"), line("http://x/api", "on", 1)).unwrap();
        let d = TaskDurations::from_journals(dir.path(), "http://x/api").await;
        assert_eq!(d.window(Action::Off), window(6300, 7700));
        assert_eq!(d.window(Action::On), None);
        let none = TaskDurations::from_journals(&dir.path().join("missing"), "x").await;
        assert_eq!(none.window(Action::Off), None);
    }
}
