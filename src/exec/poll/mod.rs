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

mod wait;
pub mod watch;

pub use crate::pacing::{Pacing, PollPolicy, PollSchedule, TaskDurations, Window};
pub use wait::{TaskWait, wait_for_task, wait_for_task_paced};
pub use watch::{TaskWatch, Unlocked, Watched};
