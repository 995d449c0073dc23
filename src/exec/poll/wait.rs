//! Following one task: poll its link until it is terminal, bounded by a timeout and
//! cancellable, teaching the learned durations when it succeeds.

use crate::abiquo::api::CloudApi;
use crate::abiquo::backoff::scaled;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::Task;
use crate::exec::poll::PollPolicy;
use crate::exec::poll::watch::{Unlocked, Watched};
use crate::pacing::{Pacing, Window};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a wait ended.
#[derive(Debug)]
pub enum TaskWait {
    /// The task reached a terminal state; `seen`: the VM as the watch saw it leave LOCKED.
    Finished {
        task: Task,
        polls: u32,
        seen: Option<Unlocked>,
    },
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
        None,
        timeout,
        cancel,
    )
    .await
}

/// [`wait_for_task`], polling near the expected finish learned in `pacing` and teaching it
/// this task's duration when it succeeds. While `watched` covers the VM, its looks stand in
/// for polls, and the task is read as soon as one sees the VM out of LOCKED.
pub async fn wait_for_task_paced<A: CloudApi>(
    client: &A,
    href: &str,
    policy: &PollPolicy,
    pacing: Pacing<'_>,
    watched: Option<&mut Watched<'_>>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> TaskWait {
    wait_with(
        || client.get_task(href),
        href,
        policy,
        Some(pacing),
        watched,
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
    mut watched: Option<&mut Watched<'_>>,
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
    // When the last poll found the task still running (time since acceptance), and
    // whether that poll was placed blind.
    let mut pending_at: Option<Duration> = None;
    let mut pending_blind = false;
    // The window the first poll was placed by.
    let mut first_window: Option<Window> = None;
    // When the API last looked at the task, once polls are aimed at those looks.
    let mut last_look: Option<Duration> = None;
    // Blind waits of tasks started together would all look at the same moments after
    // their start, and the first finish of a run would be seen only at the first look
    // after it, up to half a task time late; spread by task, some look early, and the
    // first finish they see sets the window every other wait then aims at.
    let dither = dither_of(href);
    // The VM as a look of the watch saw it leave LOCKED: the task is read at once.
    let mut unlocked: Option<Unlocked> = None;
    let mut read_now = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return TaskWait::TimedOut { last, polls };
        }
        // Registered before the window is read, so a first duration learned meanwhile
        // is not missed.
        let learned = pacing.map(|p| p.durations.first_learned());
        let window = pacing.and_then(|p| p.durations.window(p.action));
        if polls == 0 {
            first_window = window;
        }
        // The API looks at a task half a round trip after the poll is sent, and the answer
        // comes back half a round trip later: the schedule is of those looks. The next look
        // is placed from the last one (or from the earliest possible, for the first poll)
        // and the poll sent half a round trip ahead of it.
        let lead = match (pacing, window) {
            (Some(p), Some(_)) => p.durations.half_round_trip(),
            _ => Duration::ZERO,
        };
        let elapsed = now.saturating_duration_since(since);
        // While the watch keeps looking at the VM and finds it LOCKED, its looks stand in
        // for polls (until the task is overdue): each counts as this wait's last look, and
        // the wait only polls if they stop coming for longer than its own next gap.
        let covered = if read_now {
            None
        } else {
            covered_by(watched.as_deref(), policy, window, since, elapsed, lead)
        };
        if let Some((looked, _)) = covered
            && pending_at.is_none_or(|p| looked > p)
        {
            pending_at = Some(looked);
            pending_blind = false;
            if lead > Duration::ZERO {
                last_look = Some(looked);
            }
        }
        let basis = last_look.unwrap_or(elapsed + lead);
        let mut look_in = policy.next_delay(basis, window);
        if window.is_none() && pacing.is_some() {
            look_in = look_in.mul_f64(dither);
        }
        // Never sleep past the deadline; still poll once right at it.
        let delay = match covered {
            _ if read_now => Duration::ZERO,
            Some((_, stale)) => (stale - elapsed).min(deadline - now),
            None => (basis + look_in)
                .saturating_sub(elapsed + lead)
                .min(deadline - now),
        };
        // A blind backoff is cut short once the action's durations become known: the
        // first tasks of a run finishing tell the others when to look.
        let aim_again = async {
            match learned {
                Some(learned) if window.is_none() => learned.await,
                _ => std::future::pending().await,
            }
        };
        let seen = async {
            match watched.as_deref_mut() {
                Some(w) if unlocked.is_none() => w.unlocked().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = aim_again => continue,
            seen = seen => {
                unlocked = Some(seen);
                read_now = true;
                continue;
            }
            () = cancel.cancelled() => return TaskWait::Interrupted { last, polls },
        }
        // Covered, or a look came in while this wait slept towards its own poll.
        let elapsed = Instant::now().saturating_duration_since(since);
        if !read_now
            && (covered.is_some()
                || covered_by(watched.as_deref(), policy, window, since, elapsed, lead)
                    .is_some_and(|(looked, _)| pending_at.is_none_or(|p| looked > p)))
        {
            continue;
        }
        read_now = false;
        polls += 1;
        let sent = Instant::now();
        let answer = read().await;
        let round_trip = sent.elapsed();
        if let Some(p) = pacing
            && answer.is_ok()
        {
            p.durations.record_round_trip(round_trip);
        }
        // About when the server looked at the task.
        let at = sent.saturating_duration_since(since) + round_trip / 2;
        if lead > Duration::ZERO {
            last_look = Some(at);
        }
        match answer {
            Ok(task) if task.state.is_terminal() => {
                if let Some(p) = pacing
                    && task.state.is_success()
                {
                    if let Some(seen) = &unlocked {
                        // The watch saw when it ended: between its last look finding the VM
                        // LOCKED and the one that did not.
                        let end = seen.at.saturating_duration_since(since);
                        // Precise when the two looks were close (always, once polls are
                        // aimed: the watch then looks a few times per gap).
                        match seen.locked_at.map(|b| b.saturating_duration_since(since)) {
                            Some(before)
                                if window.is_some() || end.saturating_sub(before) <= end / 10 =>
                            {
                                p.durations.record(p.action, (before + end) / 2);
                            }
                            _ => p.durations.record_coarse(p.action, end),
                        }
                    } else if window.is_some() && !pending_blind {
                        // It finished between the last two polls. Found done at the very
                        // first poll, it may have finished much earlier: count it just below
                        // the window, so that the window moves down when such tasks become
                        // common (the cloud got faster) and stays put while they are rare.
                        let took = match (pending_at, first_window) {
                            (Some(before), _) => (before + at) / 2,
                            (None, Some(w)) => scaled(w.lo, 0.9),
                            (None, None) => scaled(at, 0.9),
                        };
                        p.durations.record(p.action, took);
                    } else {
                        // This poll or the one before it was placed blind, far apart: the
                        // finish is known only roughly. Its upper bound guides until precise
                        // durations exist: a first aimed poll placed late costs a little
                        // delay once, one placed early costs polls.
                        p.durations.record_coarse(p.action, at);
                    }
                }
                return TaskWait::Finished {
                    task,
                    polls,
                    seen: unlocked,
                };
            }
            Ok(task) => {
                last = Some(task);
                pending_at = Some(at);
                pending_blind = window.is_none();
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

/// When the watch last saw the VM LOCKED (time since acceptance) and until when that look
/// stands in for this wait's polls, if it does: the task is not overdue (or, blind, not
/// older than four `max` gaps), and the look no older than two of the wait's own gaps (and
/// a round trip).
fn covered_by(
    watched: Option<&Watched<'_>>,
    policy: &PollPolicy,
    window: Option<Window>,
    since: Instant,
    elapsed: Duration,
    lead: Duration,
) -> Option<(Duration, Duration)> {
    let w = watched?;
    match window {
        Some(win) if policy.overdue(elapsed + lead, win) => return None,
        // Blind, a task is polled on its own again after a while, whatever the watch
        // sees: the VM may be LOCKED by something else than this task.
        None if elapsed > policy.max * 4 => return None,
        _ => {}
    }
    let looked = w.locked_at()?.saturating_duration_since(since);
    // The watch looks at least twice per own gap: two gaps without a look, it stopped.
    let gap = policy.next_delay(looked, window).max(policy.min_gap);
    let stale = looked + gap * 2 + lead * 2;
    (stale > elapsed).then_some((looked, stale))
}

/// A factor in [0.5, 1) fixed per task link (FNV-1a of it).
fn dither_of(href: &str) -> f64 {
    let hash = href.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    0.5 + (hash % 1000) as f64 / 2000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::{RECENT, TaskDurations};
    use crate::runbook::model::Action;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
        /// Each way of a round trip.
        one_way: Duration,
    }

    impl Fake {
        fn new(after: Duration) -> Self {
            // One millisecond of network, like loopback.
            Self::behind(after, ms(1))
        }

        fn behind(after: Duration, round_trip: Duration) -> Self {
            Self {
                since: Instant::now(),
                after,
                reads: std::cell::Cell::new(0),
                one_way: round_trip / 2,
            }
        }

        async fn read(&self) -> Result<Task, ClientError> {
            self.reads.set(self.reads.get() + 1);
            tokio::time::sleep(self.one_way).await;
            let done = self.since.elapsed() >= self.after;
            tokio::time::sleep(self.one_way).await;
            Ok(task(if done {
                "FINISHED_SUCCESSFULLY"
            } else {
                "STARTED"
            }))
        }
    }

    /// Runs one paced wait for a task taking `took`; returns (polls, detection delay).
    async fn paced(
        durations: &TaskDurations,
        policy: &PollPolicy,
        took: Duration,
    ) -> (u32, Duration) {
        paced_behind(durations, policy, took, ms(1)).await
    }

    /// [`paced`] with each poll taking `round_trip`.
    async fn paced_behind(
        durations: &TaskDurations,
        policy: &PollPolicy,
        took: Duration,
        round_trip: Duration,
    ) -> (u32, Duration) {
        paced_as("t", durations, policy, took, round_trip).await
    }

    /// [`paced_behind`] for the task at `href` (which sets its blind dither).
    async fn paced_as(
        href: &str,
        durations: &TaskDurations,
        policy: &PollPolicy,
        took: Duration,
        round_trip: Duration,
    ) -> (u32, Duration) {
        let fake = Fake::behind(took, round_trip);
        let pacing = Pacing {
            durations,
            action: Action::Off,
            since: fake.since,
        };
        let cancel = CancellationToken::new();
        let wait = wait_with(
            || fake.read(),
            href,
            policy,
            Some(pacing),
            None,
            Duration::from_secs(600),
            &cancel,
        )
        .await;
        assert!(matches!(wait, TaskWait::Finished { .. }), "{wait:?}");
        assert_eq!(wait.polls(), fake.reads.get());
        (wait.polls(), fake.since.elapsed() - took)
    }

    #[tokio::test(start_paused = true)]
    async fn cold_wait_backs_off_from_the_initial_delay() {
        let d = TaskDurations::new();
        // Polls at 0.25, 0.63, 1.19, 2.03 s, each delay scaled by the task's dither.
        let (polls, delay) = paced(&d, &PollPolicy::default(), ms(2000)).await;
        assert!((4..=5).contains(&polls), "{polls}");
        assert!(delay <= ms(700), "{delay:?}");
        // …and taught the durations a rough upper bound: not before the truth, within the
        // last blind gap of it.
        let w = d.window(Action::Off).unwrap();
        assert!(w.hi >= ms(2000) && w.lo <= ms(3000), "{w:?}");
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
    async fn polls_are_aimed_at_when_the_api_looks_not_when_they_are_sent() {
        let policy = PollPolicy::default();
        let took = |i: u64| ms(1800 + (i * 37) % 400);
        // Mean detection delay of 200 learned waits behind `rtt`.
        let mean_behind = async |rtt: Duration| {
            let d = TaskDurations::new();
            for i in 0..20 {
                paced_behind(&d, &policy, took(i), rtt).await;
            }
            let n = 200u32;
            let mut delay = Duration::ZERO;
            for i in 20..20 + u64::from(n) {
                delay += paced_behind(&d, &policy, took(i), rtt).await.1;
            }
            delay / n
        };
        let near = mean_behind(ms(1)).await;
        // A real API's 80 ms (polls of one task, one at a time, cannot be closer than a
        // round trip: this keeps the window's spacing above it).
        let far = mean_behind(ms(80)).await;
        // The answer's way back (40 ms) cannot be saved; next to nothing else is lost.
        assert!(
            far <= near + ms(40) + ms(20),
            "{far:?} behind 80 ms, {near:?} on loopback"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_round_started_together_sees_its_first_finishes_early() {
        // 200 tasks of 1.8–2.2 s accepted at once, 80 ms round trips, nothing learned: in
        // lockstep their blind looks come at 0.29, 0.79, 1.53 and 2.64 s, every finish is
        // seen at 2.64 s (0.69 s late on average). Spread, some look early; once they see
        // a finish, the others stop backing off blind (without that: 0.40 s late).
        let d = TaskDurations::new();
        let policy = PollPolicy::default();
        let waits = (0..200u64).map(|i| {
            let (d, policy) = (&d, &policy);
            async move {
                let fake = Fake::behind(ms(1800 + (i * 37) % 400), ms(80));
                let pacing = Pacing {
                    durations: d,
                    action: Action::Off,
                    since: fake.since,
                };
                let href = format!("https://api.example/tasks/{i}");
                let cancel = CancellationToken::new();
                let timeout = Duration::from_secs(600);
                wait_with(
                    || fake.read(),
                    &href,
                    policy,
                    Some(pacing),
                    None,
                    timeout,
                    &cancel,
                )
                .await;
                fake.since.elapsed() - fake.after
            }
        });
        let lags = futures::future::join_all(waits).await;
        let mean = lags.iter().sum::<Duration>() / 200;
        assert!(mean <= ms(350), "mean detection delay {mean:?}");
    }

    #[test]
    fn dither_is_fixed_per_task_and_within_bounds() {
        let a = dither_of("https://api.example/tasks/1");
        assert_eq!(a, dither_of("https://api.example/tasks/1"));
        assert_ne!(a, dither_of("https://api.example/tasks/2"));
        for i in 0..1000 {
            let f = dither_of(&format!("https://api.example/tasks/{i}"));
            assert!((0.5..1.0).contains(&f), "{f}");
        }
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
            None,
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
            None,
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
}
