//! The cost of one acting VM of a step: its time and requests, replaying the executor's
//! adaptive polling (cold until the run has seen a task of the action finish, near the
//! expected finish after).

use super::{DurationSource, EstimateInputs, ms, task_duration};
use crate::pacing::PollPolicy;
use crate::pacing::Window;
use crate::plan::{Plan, PlannedStep};
use crate::runbook::model::{Action, Runbook};
use std::time::Duration;

/// When the first poll sees a task of `task` duration finished, counted from the 202, and
/// how many polls that takes, with the executor's own pacing: cold (`window` = `None`, backing
/// off from `initial`) or near the expected finish once durations are known. Each poll's own
/// round trip delays the next one.
pub fn detection(
    task: Duration,
    poll: &PollPolicy,
    request: Duration,
    window: Option<Window>,
) -> (Duration, u64) {
    let mut at = Duration::ZERO;
    let mut polls = 0u64;
    // Bounded: delays are at least `min_gap` (> 0) or the loop gives up.
    while polls < 100_000 {
        let delay = poll.next_delay(at, window);
        at += delay;
        polls += 1;
        if at >= task || delay.is_zero() {
            return (at + request, polls);
        }
        at += request;
    }
    (at, polls)
}

/// The window the executor learns for tasks of about `task`: their spread is unknown ahead,
/// so assume ±10%.
pub fn learned_window(task: Duration) -> Window {
    Window {
        lo: task.mul_f64(0.9),
        hi: task.mul_f64(1.1),
    }
}

/// Per-VM cost of one step: time and requests of an acting VM, before the run has seen a
/// task of the action finish (cold) and after (warm, polling near the expected finish).
pub(super) struct StepCost {
    pub task: Duration,
    pub source: DurationSource,
    pub samples: Option<u64>,
    pub vm: Duration,
    pub act_requests: u64,
    pub vm_cold: Duration,
    pub act_requests_cold: u64,
}

pub(super) fn step_cost(
    runbook: &Runbook,
    step: &PlannedStep,
    inputs: &EstimateInputs<'_>,
) -> StepCost {
    let req = inputs.request;
    let (task, source, samples) = task_duration(runbook, step.index, step.action, inputs);
    if source == DurationSource::History {
        // Recorded durations already hold the reads and the polling, and seed the pacing.
        let polled = task.saturating_sub(req * 3);
        let (_, polls) = detection(polled, &inputs.poll, req, Some(learned_window(polled)));
        return StepCost {
            task,
            source,
            samples,
            vm: task,
            act_requests: 3 + polls,
            vm_cold: task,
            act_requests_cold: 3 + polls,
        };
    }
    // A graceful shutdown slower than its fallback ends with a hard off.
    let (task_time, extra_requests) = match (step.action, step.fallback.map(|f| f.after_ms)) {
        (Action::Shutdown, Some(after)) if ms(task) > after => {
            let (off, _, _) = task_duration(runbook, usize::MAX, Action::Off, inputs);
            (Duration::from_millis(after) + off, 2)
        }
        // The power on after the shutdown: its request and the read before it.
        (Action::Restart, _) => (task, 2),
        _ => (task, 0),
    };
    let cost = |window| {
        let (detected, polls) = detection(task_time, &inputs.poll, req, window);
        // read, mutation, task until seen finished, confirming read
        (req * 2 + detected + req, 3 + polls + extra_requests)
    };
    let (vm, act_requests) = cost(Some(learned_window(task_time)));
    let (vm_cold, act_requests_cold) = cost(None);
    StepCost {
        task,
        source,
        samples,
        vm,
        act_requests,
        vm_cold,
        act_requests_cold,
    }
}

/// How many acting VMs of each step poll cold: the first round of a step whose action no
/// earlier step (nor history) taught the run yet. The executor learns durations run-wide.
pub(super) fn cold_counts(plan: &Plan, costs: &[StepCost]) -> Vec<usize> {
    let mut taught = std::collections::BTreeSet::new();
    plan.steps
        .iter()
        .zip(costs)
        .map(|(s, c)| {
            let warm = c.source == DurationSource::History || taught.contains(&s.action);
            taught.insert(s.action);
            if warm {
                0
            } else {
                s.concurrency.max(1).min(plan.concurrency.max(1))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_the_first_poll_after_the_task_ended() {
        let poll = PollPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(400),
            ..PollPolicy::default()
        };
        // Polls at 100, 300, 700, 1100: a 650ms task is seen at 700.
        let (at, polls) = detection(Duration::from_millis(650), &poll, Duration::ZERO, None);
        assert_eq!((ms(at), polls), (700, 3));
        // Each poll's round trip pushes the next one, and the backoff counts from the 202.
        let (at, _) = detection(
            Duration::from_millis(650),
            &poll,
            Duration::from_millis(10),
            None,
        );
        assert_eq!(ms(at), 100 + 10 + 210 + 10 + 400 + 10);
    }
}
