//! How long a plan will take and how many API requests it will make.
//!
//! Each acting VM costs: a read, the mutation, the task (its expected duration, detected by
//! the first poll after it ended), a confirming read. Expected task durations come from the
//! step's `expected_duration`, else the runbook's `[estimates]`, else the durations earlier
//! runs recorded ([`History`]), else a built-in default (shown as such: it is a guess). The
//! run is then replayed on a virtual clock with the executor's rules: steps start when the
//! steps they come `after` are done, waves run one after the other with their pause, VMs run
//! up to the step's concurrency within the run-wide limit.

use crate::exec::event::{PathTaken, VmOutcome, VmResult};
use crate::exec::poll::{PollPolicy, Window};
use crate::plan::{Disposition, Plan, PlannedStep};
use crate::runbook::model::{Action, Runbook};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
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
    /// powerbook's built-in guess.
    Default,
}

impl DurationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DurationSource::Step => "step expected_duration",
            DurationSource::Runbook => "[estimates]",
            DurationSource::History => "earlier runs",
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
    })
}

/// Durations earlier runs observed, per action: the whole time a VM took (read, act, task,
/// confirm), so they are used as they are.
///
/// This is the seam for the run journal: whoever reads the journals of earlier runs of the
/// same runbook feeds their results in with [`History::from_results`] (or
/// [`History::record`]) and passes the history to [`estimate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// action → (sum of milliseconds, samples)
    by_action: BTreeMap<Action, (u128, u64)>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// One VM that reached its target through the action itself.
    pub fn record(&mut self, action: Action, took: Duration) {
        let e = self.by_action.entry(action).or_insert((0, 0));
        e.0 = e.0.saturating_add(took.as_millis());
        e.1 = e.1.saturating_add(1);
    }

    /// The successful, acted-on VMs of earlier runs (skips, failures and fallbacks say
    /// nothing about the action's usual duration).
    pub fn from_results<'a>(results: impl IntoIterator<Item = &'a VmResult>) -> Self {
        let mut h = History::new();
        for r in results {
            if r.outcome == VmOutcome::Ok
                && matches!(r.path, PathTaken::Direct | PathTaken::Graceful)
            {
                h.record(r.action, Duration::from_millis(r.duration_ms));
            }
        }
        h
    }

    /// Mean duration and sample count for an action.
    pub fn mean(&self, action: Action) -> Option<(Duration, u64)> {
        let &(sum, n) = self.by_action.get(&action)?;
        let n128 = u128::from(n);
        let mean = sum.checked_div(n128)?;
        Some((
            Duration::from_millis(u64::try_from(mean).unwrap_or(u64::MAX)),
            n,
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.by_action.is_empty()
    }
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
    pub history: Option<&'a History>,
}

impl Default for EstimateInputs<'_> {
    fn default() -> Self {
        Self {
            poll: PollPolicy::default(),
            request: Duration::from_millis(50),
            listed_vms: 0,
            page_size: 100,
            history: None,
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
    history: Option<&History>,
) -> (Duration, DurationSource, Option<u64>) {
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
    if let Some((d, n)) = history.and_then(|h| h.mean(action)) {
        return (d, DurationSource::History, Some(n));
    }
    (default_task_duration(action), DurationSource::Default, None)
}

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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-VM cost of one step: time and requests of an acting VM, before the run has seen a
/// task of the action finish (cold) and after (warm, polling near the expected finish).
struct StepCost {
    task: Duration,
    source: DurationSource,
    samples: Option<u64>,
    vm: Duration,
    act_requests: u64,
    vm_cold: Duration,
    act_requests_cold: u64,
}

fn step_cost(runbook: &Runbook, step: &PlannedStep, inputs: &EstimateInputs<'_>) -> StepCost {
    let req = inputs.request;
    let (task, source, samples) = task_duration(runbook, step.index, step.action, inputs.history);
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
    let (task_time, extra_requests) = match (step.action, step.fallback_after_ms) {
        (Action::Shutdown, Some(after)) if ms(task) > after => {
            let (off, _, _) = task_duration(runbook, usize::MAX, Action::Off, inputs.history);
            (Duration::from_millis(after) + off, 2)
        }
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
fn cold_counts(plan: &Plan, costs: &[StepCost]) -> Vec<usize> {
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
            name: s.name.clone(),
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
        .filter_map(|i| plan.steps.get(i).map(|s| s.name.clone()))
        .collect()
}

/// One step as the replay sees it.
struct StepJob {
    /// Positions (in plan order) of the steps it waits for.
    after: Vec<usize>,
    concurrency: usize,
    pause: Duration,
    /// Per wave, the time each VM takes.
    waves: Vec<Vec<Duration>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Waiting,
    /// In wave `wave`, next VM `next`.
    Running {
        wave: usize,
        next: usize,
    },
    Pausing {
        until: Duration,
        wave: usize,
    },
    Done,
}

/// Replays the executor's scheduling on a virtual clock; returns (start, end) per step.
fn replay(jobs: &[StepJob], run_limit: usize) -> Vec<(Duration, Duration)> {
    let n = jobs.len();
    let mut phase = vec![Phase::Waiting; n];
    let mut times = vec![(Duration::ZERO, Duration::ZERO); n];
    let mut in_flight = vec![0usize; n];
    let mut free = run_limit;
    // (end time, step) of each VM in flight; pauses end through `Phase::Pausing`.
    let mut events: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut now = Duration::ZERO;
    loop {
        // Settle everything that can happen at `now`.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                match phase[i] {
                    Phase::Waiting if jobs[i].after.iter().all(|&d| phase[d] == Phase::Done) => {
                        times[i].0 = now;
                        phase[i] = Phase::Running { wave: 0, next: 0 };
                        changed = true;
                    }
                    Phase::Pausing { until, wave } if until <= now => {
                        phase[i] = Phase::Running { wave, next: 0 };
                        changed = true;
                    }
                    Phase::Running { wave, mut next } => {
                        let Some(vms) = jobs[i].waves.get(wave) else {
                            phase[i] = Phase::Done;
                            times[i].1 = now;
                            changed = true;
                            continue;
                        };
                        while next < vms.len() && in_flight[i] < jobs[i].concurrency && free > 0 {
                            free -= 1;
                            in_flight[i] += 1;
                            events.push(Reverse((now + vms[next], i)));
                            next += 1;
                            changed = true;
                        }
                        phase[i] = Phase::Running { wave, next };
                        if next >= vms.len() && in_flight[i] == 0 {
                            let following = wave + 1;
                            phase[i] = if following >= jobs[i].waves.len() {
                                times[i].1 = now;
                                Phase::Done
                            } else if jobs[i].pause.is_zero() {
                                Phase::Running {
                                    wave: following,
                                    next: 0,
                                }
                            } else {
                                Phase::Pausing {
                                    until: now + jobs[i].pause,
                                    wave: following,
                                }
                            };
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        // Next moment something happens: a VM ends or a pause does.
        let next_vm = events.peek().map(|Reverse((t, _))| *t);
        let next_pause = phase
            .iter()
            .filter_map(|p| match p {
                Phase::Pausing { until, .. } => Some(*until),
                _ => None,
            })
            .min();
        let Some(next) = [next_vm, next_pause].into_iter().flatten().min() else {
            break;
        };
        now = next.max(now);
        while let Some(Reverse((t, i))) = events.peek().copied() {
            if t > now {
                break;
            }
            events.pop();
            in_flight[i] = in_flight[i].saturating_sub(1);
            free += 1;
        }
    }
    // Steps never started (a dependency that cannot finish) end where they are.
    for i in 0..n {
        if phase[i] != Phase::Done {
            times[i] = (now, now);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(after: &[usize], concurrency: usize, waves: &[&[u64]], pause: u64) -> StepJob {
        StepJob {
            after: after.to_vec(),
            concurrency,
            pause: Duration::from_millis(pause),
            waves: waves
                .iter()
                .map(|w| w.iter().map(|&m| Duration::from_millis(m)).collect())
                .collect(),
        }
    }

    fn secs(times: &[(Duration, Duration)]) -> Vec<(u64, u64)> {
        times
            .iter()
            .map(|(s, e)| (ms(*s) / 1000, ms(*e) / 1000))
            .collect()
    }

    #[test]
    fn a_wave_takes_as_many_rounds_as_its_concurrency_needs() {
        // 5 VMs of 10s, 2 at a time: 3 rounds.
        let t = replay(&[job(&[], 2, &[&[10_000; 5]], 0)], 50);
        assert_eq!(secs(&t), [(0, 30)]);
    }

    #[test]
    fn waves_follow_each_other_with_their_pause() {
        let t = replay(&[job(&[], 10, &[&[10_000; 2], &[10_000; 2]], 5_000)], 50);
        assert_eq!(secs(&t), [(0, 25)]);
    }

    #[test]
    fn dependent_steps_wait_and_independent_ones_overlap() {
        let t = replay(
            &[
                job(&[], 10, &[&[10_000]], 0),
                job(&[0], 10, &[&[20_000]], 0),
                job(&[], 10, &[&[5_000]], 0),
            ],
            50,
        );
        assert_eq!(secs(&t), [(0, 10), (10, 30), (0, 5)]);
    }

    #[test]
    fn the_run_wide_limit_is_shared_by_parallel_steps() {
        // Two steps of 4 VMs each, 4 slots in the run: 8 VMs of 10s need 2 rounds.
        let t = replay(
            &[
                job(&[], 4, &[&[10_000; 4]], 0),
                job(&[], 4, &[&[10_000; 4]], 0),
            ],
            4,
        );
        let end = t.iter().map(|(_, e)| ms(*e)).max().unwrap();
        assert_eq!(end, 20_000);
    }

    #[test]
    fn steps_without_waves_end_at_once() {
        let t = replay(&[job(&[], 1, &[], 0), job(&[0], 1, &[&[1_000]], 0)], 5);
        assert_eq!(secs(&t), [(0, 0), (0, 1)]);
    }

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

    use crate::abiquo::model::VmState;
    use crate::plan::build;
    use crate::plan::tests::{runbook, sel_vm, step, vm};
    use crate::runbook::model::Fallback;
    use std::num::NonZeroUsize;

    fn four_on() -> Vec<crate::abiquo::model::VirtualMachine> {
        (1..=4)
            .map(|i| vm(i, &format!("web-{i}"), "web", VmState::On, "KVM"))
            .collect()
    }

    #[test]
    fn a_plan_takes_rounds_of_per_vm_time_and_counts_its_requests() {
        let mut s = step("down", Action::Off, vec![sel_vm("web-*")]);
        s.concurrency = NonZeroUsize::new(2);
        let mut rb = runbook(vec![s]);
        rb.estimates.insert(Action::Off, Duration::from_secs(10));
        let plan = build(&rb, &four_on(), "http://x/api");
        let inputs = EstimateInputs {
            listed_vms: 250,
            ..EstimateInputs::default()
        };
        let e = estimate(&plan, &rb, &inputs);
        let step = &e.steps[0];
        assert_eq!(step.task_source, DurationSource::Runbook);
        assert!(step.vm_ms >= 10_000 + 3 * 50, "{step:?}");
        let task = Duration::from_secs(10);
        let (cold_at, cold_polls) = detection(task, &inputs.poll, inputs.request, None);
        let warm = Some(learned_window(task));
        let (_, warm_polls) = detection(task, &inputs.poll, inputs.request, warm);
        // The first round polls cold; once a task finished, the rest poll near the finish.
        assert!(warm_polls < cold_polls, "{warm_polls} vs {cold_polls}");
        let cold_vm = ms(cold_at + inputs.request * 3);
        assert!(cold_vm >= step.vm_ms, "{cold_vm} vs {step:?}");
        // (each figure is rounded down to the millisecond on its own)
        assert!(e.total_ms.abs_diff(cold_vm + step.vm_ms) <= 1, "{e:?}");
        // login + 3 listing pages + per VM: read, mutation, polls, confirming read
        assert_eq!(
            e.api_requests,
            1 + 3 + 2 * (3 + cold_polls) + 2 * (3 + warm_polls)
        );
        assert!(!e.rate_limited);
    }

    #[test]
    fn the_request_rate_limit_is_a_floor_under_the_run() {
        let mut rb = runbook(vec![step("down", Action::Off, vec![sel_vm("web-*")])]);
        rb.estimates.insert(Action::Off, Duration::from_secs(1));
        rb.limits.requests_per_second = NonZeroUsize::new(1);
        let plan = build(&rb, &four_on(), "http://x/api");
        let e = estimate(&plan, &rb, &EstimateInputs::default());
        assert!(e.rate_limited);
        assert_eq!(e.total_ms, e.api_requests * 1000);
    }

    #[test]
    fn a_graceful_shutdown_slower_than_its_fallback_ends_with_the_hard_off() {
        let mut s = step("down", Action::Shutdown, vec![sel_vm("web-1")]);
        s.fallback = Some(Fallback {
            action: Action::Off,
            after: Duration::from_secs(60),
        });
        let mut rb = runbook(vec![s]);
        rb.estimates
            .insert(Action::Shutdown, Duration::from_secs(600));
        rb.estimates.insert(Action::Off, Duration::from_secs(10));
        let plan = build(&rb, &four_on(), "http://x/api");
        let e = estimate(&plan, &rb, &EstimateInputs::default());
        let vm = e.steps[0].vm_ms;
        assert!((70_000..80_000).contains(&vm), "{vm}");
    }

    #[test]
    fn history_is_used_when_the_runbook_says_nothing_and_defaults_otherwise() {
        let rb = runbook(vec![
            step("down", Action::Off, vec![sel_vm("web-*")]),
            step("up", Action::On, vec![sel_vm("web-*")]),
        ]);
        let mut h = History::new();
        h.record(Action::Off, Duration::from_secs(7));
        let plan = build(&rb, &four_on(), "http://x/api");
        let inputs = EstimateInputs {
            history: Some(&h),
            ..EstimateInputs::default()
        };
        let e = estimate(&plan, &rb, &inputs);
        assert_eq!(e.steps[0].task_source, DurationSource::History);
        assert_eq!(e.steps[0].history_samples, Some(1));
        assert_eq!(e.steps[0].vm_ms, 7_000);
        assert_eq!(e.steps[1].task_source, DurationSource::Default);
    }

    proptest::proptest! {
        // No regression files: the top level of the repository is fixed.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Dependents start after what they wait for; a step lasts at least its slowest VM
        /// per wave plus the pauses, and the run never takes longer than doing it all in
        /// series.
        #[test]
        fn replay_respects_order_and_bounds(
            specs in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::collection::vec(1u64..5_000, 0..6), 0..4),
                    1usize..5,
                    0u64..2_000,
                    proptest::option::of(0usize..8),
                ),
                1..6,
            ),
            run_limit in 1usize..8,
        ) {
            let jobs: Vec<StepJob> = specs
                .iter()
                .enumerate()
                .map(|(i, (waves, c, pause, dep))| StepJob {
                    after: dep.filter(|&d| d < i).into_iter().collect(),
                    concurrency: *c,
                    pause: Duration::from_millis(*pause),
                    waves: waves
                        .iter()
                        .map(|w| w.iter().map(|&m| Duration::from_millis(m)).collect())
                        .collect(),
                })
                .collect();
            let t = replay(&jobs, run_limit);
            let mut serial = Duration::ZERO;
            for (i, job) in jobs.iter().enumerate() {
                let (start, end) = t[i];
                for &d in &job.after {
                    proptest::prop_assert!(start >= t[d].1);
                }
                let mut least = Duration::ZERO;
                for (w, wave) in job.waves.iter().enumerate() {
                    least += wave.iter().copied().max().unwrap_or_default();
                    serial += wave.iter().copied().sum::<Duration>();
                    if w > 0 {
                        least += job.pause;
                        serial += job.pause;
                    }
                }
                proptest::prop_assert!(end >= start + least, "step {i}: {t:?}");
            }
            let total = t.iter().map(|(_, e)| *e).max().unwrap_or_default();
            proptest::prop_assert!(total <= serial, "{total:?} > {serial:?}");
        }
    }

    #[test]
    fn history_means_per_action_from_successful_direct_results() {
        let mut h = History::new();
        h.record(Action::Off, Duration::from_secs(10));
        h.record(Action::Off, Duration::from_secs(20));
        assert_eq!(h.mean(Action::Off), Some((Duration::from_secs(15), 2)));
        assert_eq!(h.mean(Action::On), None);
    }
}
