//! Pacing of task waits, shared by the executor (which polls) and the plan estimator (which
//! replays the same pacing to predict a run): the poll schedule, cold backoff or aimed at the
//! learned expected finish, and the task durations learned per action.

mod durations;
mod schedule;

#[cfg(test)]
pub(crate) use durations::RECENT;
pub use durations::{Pacing, TaskDurations, Window};
pub use schedule::{PollPolicy, PollSchedule};

/// `Window` literals for tests, in milliseconds.
#[cfg(test)]
pub(crate) fn window_ms(lo: u64, hi: u64) -> Option<Window> {
    Some(Window {
        lo: std::time::Duration::from_millis(lo),
        hi: std::time::Duration::from_millis(hi),
    })
}
