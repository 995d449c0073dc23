//! When to poll: the delay before each poll of a task (near its learned expected finish,
//! or with the cold backoff) and the plain backoff of waits with nothing to learn.

use crate::abiquo::backoff::{Backoff, scaled};
use crate::pacing::Window;
use std::time::Duration;

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
        let end = self.window_end(w, ratio);
        if elapsed <= end {
            return clamp(scaled(elapsed, ratio - 1.0));
        }
        // Overdue: the window was wrong for this task. Start from a gap relative to the
        // elapsed time and grow with the time overdue.
        let relative = (ratio - 1.0).max(self.max_relative_gap / 2.0);
        clamp(scaled(elapsed, relative).saturating_add(scaled(elapsed - end, growth)))
    }

    /// Whether a task accepted `elapsed` ago is past the window's last step (polled with
    /// the overdue backoff).
    pub fn overdue(&self, elapsed: Duration, w: Window) -> bool {
        elapsed > self.window_end(w, self.window_ratio(w))
    }

    /// The window's last step: one step past `hi` still belongs to the window.
    fn window_end(&self, w: Window, ratio: f64) -> Duration {
        scaled(w.hi, ratio).saturating_add(self.min_gap)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    use crate::pacing::window_ms as window;

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
}
