//! How long a plan will take and how many API requests it will make.
//!
//! Each acting VM costs: a read, the mutation, the task (its expected duration, detected by
//! the first poll after it ended), a confirming read. Expected task durations come from the
//! step's `expected_duration`, else the runbook's `[estimates]`, else the VM times earlier
//! runs recorded ([`TaskDurations`]), else a built-in default (shown as such: it is a guess).
//! [`cost`] prices one VM of a step with the executor's own polling; [`replay`] then replays
//! the run on a virtual clock with the executor's rules: steps start when the steps they
//! come `after` are done, waves run one after the other with their pause, VMs run up to the
//! step's concurrency within the run-wide limit.

mod cost;
mod replay;
#[cfg(test)]
mod tests;

pub use cost::{detection, learned_window};

use crate::pacing::PollPolicy;
use crate::pacing::TaskDurations;
use crate::plan::{Disposition, Plan};
use crate::runbook::model::{Action, Runbook};
use cost::{StepCost, cold_counts, step_cost};
use replay::{StepJob, replay};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a step's expected task duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurationSource {
    /// The step's `expected_duration`.
    Step,
    /// The runbook's `[estimates]` table.
    Runbook,
    /// Durations recorded by earlier runs of the runbook.
    History,
    /// The built-in simulator's own task durations (`plan --simulate`).
    Simulator,
    /// powerbook's built-in guess.
    Default,
}

impl DurationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DurationSource::Step => "step expected_duration",
            DurationSource::Runbook => "[estimates]",
            DurationSource::History => "earlier runs",
            DurationSource::Simulator => "the simulator",
            DurationSource::Default => "default",
        }
    }
}

/// Built-in guess of one task's duration, per action.
pub fn default_task_duration(action: Action) -> Duration {
    Duration::from_secs(match action {
        Action::On | Action::Reset => 60,
        Action::Off | Action::Pause | Action::Resume => 20,
        Action::Shutdown => 90,
        Action::Deallocate => 120,
        // A graceful shutdown, then a power on.
        Action::Restart => 150,
    })
}

/// What the estimate needs besides the plan.
#[derive(Debug, Clone)]
pub struct EstimateInputs<'a> {
    /// The polling `run` will use (its `--poll-*` defaults unless told otherwise).
    pub poll: PollPolicy,
    /// Round trip of one API request (measured by `plan` on its own reads).
    pub request: Duration,
    /// VMs the listing returned and the page size it used (listing requests).
    pub listed_vms: usize,
    pub page_size: usize,
    pub history: Option<&'a TaskDurations>,
    /// Against the built-in simulator: its task durations per action, which the rehearsal
    /// will take whatever the runbook expects of the real cloud.
    pub simulated: Option<&'a BTreeMap<Action, Duration>>,
}

impl Default for EstimateInputs<'_> {
    fn default() -> Self {
        Self {
            poll: PollPolicy::default(),
            request: Duration::from_millis(50),
            listed_vms: 0,
            page_size: 100,
            history: None,
            simulated: None,
        }
    }
}

/// The estimate of a whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Estimate {
    /// Expected wall time of the run, milliseconds.
    pub total_ms: u64,
    /// API requests the run is expected to make (login and listing included).
    pub api_requests: u64,
    /// Round trip of one API request assumed, milliseconds.
    pub request_ms: u64,
    /// The steps whose chain ends last, in order (names).
    pub critical_path: Vec<String>,
    /// When the run-wide request rate limit, not the tasks, sets the pace.
    #[serde(default)]
    pub rate_limited: bool,
    /// In plan order.
    pub steps: Vec<StepEstimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepEstimate {
    /// Index in the runbook's steps.
    pub step: usize,
    pub name: String,
    /// Expected duration of one task of the step's action, milliseconds.
    pub task_ms: u64,
    pub task_source: DurationSource,
    /// Samples behind a `history` duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_samples: Option<u64>,
    /// Expected time one acting VM takes, polling and reads included, milliseconds.
    pub vm_ms: u64,
    /// Offset from the start of the run, milliseconds.
    pub start_ms: u64,
    pub duration_ms: u64,
    pub api_requests: u64,
}

/// The expected task duration of a step and where it came from.
pub fn task_duration(
    runbook: &Runbook,
    step_index: usize,
    action: Action,
    inputs: &EstimateInputs<'_>,
) -> (Duration, DurationSource, Option<u64>) {
    if let Some(d) = inputs.simulated.and_then(|s| s.get(&action)) {
        return (*d, DurationSource::Simulator, None);
    }
    let history = inputs.history;
    if let Some(d) = runbook
        .steps
        .get(step_index)
        .and_then(|s| s.expected_duration)
    {
        return (d, DurationSource::Step, None);
    }
    if let Some(d) = runbook.estimates.get(&action) {
        return (*d, DurationSource::Runbook, None);
    }
    if let Some((d, n)) = history.and_then(|h| h.vm_mean(action)) {
        return (d, DurationSource::History, Some(n));
    }
    (default_task_duration(action), DurationSource::Default, None)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Estimates the run of `plan`.
pub fn estimate(plan: &Plan, runbook: &Runbook, inputs: &EstimateInputs<'_>) -> Estimate {
    let costs: Vec<StepCost> = plan
        .steps
        .iter()
        .map(|s| step_cost(runbook, s, inputs))
        .collect();
    let read = inputs.request;
    let cold = cold_counts(plan, &costs);
    let jobs: Vec<StepJob> = plan
        .steps
        .iter()
        .zip(&costs)
        .zip(&cold)
        .map(|((s, c), &cold)| {
            let mut acting = 0usize;
            StepJob {
                after: s
                    .after
                    .iter()
                    .filter_map(|d| plan.steps.iter().position(|p| p.index == *d))
                    .collect(),
                concurrency: s.concurrency.max(1),
                pause: Duration::from_millis(s.wave_pause_ms),
                waves: s
                    .waves
                    .iter()
                    .map(|w| {
                        w.iter()
                            .map(|&t| match s.targets.get(t).map(|t| &t.disposition) {
                                Some(Disposition::Act { .. }) => {
                                    acting += 1;
                                    if acting <= cold { c.vm_cold } else { c.vm }
                                }
                                _ => read,
                            })
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect();
    let timeline = replay(&jobs, plan.concurrency.max(1));
    let mut steps = Vec::with_capacity(plan.steps.len());
    let mut requests = 1 + u64::try_from(inputs.listed_vms.div_ceil(inputs.page_size.max(1)))
        .unwrap_or(u64::MAX)
        .max(1);
    for (((s, c), (start, end)), &cold) in plan.steps.iter().zip(&costs).zip(&timeline).zip(&cold) {
        let counts = s.counts();
        let live_other = s.live_count().saturating_sub(counts.act);
        let cold = cold.min(counts.act);
        let api = c.act_requests_cold * cold as u64
            + c.act_requests * (counts.act - cold) as u64
            + live_other as u64;
        requests += api;
        steps.push(StepEstimate {
            step: s.index,
            name: s.name.to_string(),
            task_ms: ms(c.task),
            task_source: c.source,
            history_samples: c.samples,
            vm_ms: ms(c.vm),
            start_ms: ms(*start),
            duration_ms: ms(end.saturating_sub(*start)),
            api_requests: api,
        });
    }
    let mut total = timeline.iter().map(|(_, e)| *e).max().unwrap_or_default();
    // The request rate limit is a floor under the whole run.
    let mut rate_limited = false;
    if let Some(rps) = runbook.limits.requests_per_second {
        let floor = Duration::try_from_secs_f64(requests as f64 / rps.get() as f64)
            .unwrap_or(Duration::MAX);
        if floor > total {
            total = floor;
            rate_limited = true;
        }
    }
    Estimate {
        total_ms: ms(total),
        api_requests: requests,
        request_ms: ms(inputs.request),
        critical_path: critical_path(plan, &jobs, &timeline),
        rate_limited,
        steps,
    }
}

/// The chain of steps ending last: from the last step back through the dependency that
/// finished last.
fn critical_path(plan: &Plan, jobs: &[StepJob], timeline: &[(Duration, Duration)]) -> Vec<String> {
    let Some(mut cur) = (0..timeline.len()).max_by_key(|&i| (timeline[i].1, Reverse(i))) else {
        return Vec::new();
    };
    let mut path = vec![cur];
    while let Some(prev) = jobs[cur]
        .after
        .iter()
        .copied()
        .filter(|&d| d < timeline.len() && !path.contains(&d))
        .max_by_key(|&d| timeline[d].1)
    {
        path.push(prev);
        cur = prev;
    }
    path.reverse();
    path.into_iter()
        .filter_map(|i| plan.steps.get(i).map(|s| s.name.to_string()))
        .collect()
}
