//! Waiting for a task: poll its link with backoff until it is terminal, bounded by a timeout
//! and cancellable. The schedule sits behind [`PollPolicy`] / [`PollSchedule`] so it can grow
//! smarter (e.g. poll near the expected finish) without touching the executor.

use crate::abiquo::client::Client;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::Task;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Exponential polling: `initial`, then ×`factor` per poll, never more than `max` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            factor: 1.5,
            max: Duration::from_secs(5),
        }
    }
}

impl PollPolicy {
    pub fn schedule(&self) -> PollSchedule {
        PollSchedule {
            policy: *self,
            next: self.initial,
        }
    }
}

/// The delays of one wait, in order.
#[derive(Debug, Clone)]
pub struct PollSchedule {
    policy: PollPolicy,
    next: Duration,
}

impl PollSchedule {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.min(self.policy.max);
        let grown = d.as_secs_f64() * self.policy.factor.max(1.0);
        self.next = Duration::try_from_secs_f64(grown)
            .unwrap_or(self.policy.max)
            .min(self.policy.max);
        d
    }
}

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

/// Polls `href` until the task is terminal, `timeout` elapses or `cancel` fires. Transient
/// read failures (already retried by the client) do not end the wait; a vanished task (404)
/// or a fatal API error does.
pub async fn wait_for_task(
    client: &Client,
    href: &str,
    policy: &PollPolicy,
    timeout: Duration,
    cancel: &CancellationToken,
) -> TaskWait {
    let deadline = Instant::now() + timeout;
    let mut schedule = policy.schedule();
    let mut polls = 0u32;
    let mut last: Option<Task> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return TaskWait::TimedOut { last, polls };
        }
        // Never sleep past the deadline; still poll once right at it.
        let delay = schedule.next_delay().min(deadline - now);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return TaskWait::Interrupted { last, polls },
        }
        polls += 1;
        match client.get_task(href).await {
            Ok(task) if task.state.is_terminal() => return TaskWait::Finished { task, polls },
            Ok(task) => last = Some(task),
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

    #[test]
    fn schedule_grows_by_the_factor_up_to_the_cap() {
        let p = PollPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(500),
        };
        let mut s = p.schedule();
        let got: Vec<u128> = (0..6).map(|_| s.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500, 500]);
    }

    #[test]
    fn a_factor_below_one_does_not_shrink_delays() {
        let p = PollPolicy {
            initial: Duration::from_millis(100),
            factor: 0.5,
            max: Duration::from_secs(1),
        };
        let mut s = p.schedule();
        assert_eq!(s.next_delay(), Duration::from_millis(100));
        assert_eq!(s.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn an_initial_above_the_cap_is_capped() {
        let p = PollPolicy {
            initial: Duration::from_secs(10),
            factor: 1.5,
            max: Duration::from_secs(2),
        };
        assert_eq!(p.schedule().next_delay(), Duration::from_secs(2));
    }
}
