//! Unit tests of the executor against the scripted fake cloud, under paused time. Every test
//! builds its inputs through [`harness`] and runs through [`Harness::run`]: when the plan,
//! the hooks or the intent change shape, this file is the one to adapt.

mod early;
mod fallback;
mod gates;
mod interrupt;
mod listing;
mod locks;
mod lost;
mod outcomes;
mod resume;
mod scheduler;
mod watch;

use crate::abiquo::model::{ListedVm, PowerRequest, PowerState, TaskState, VmState};
use crate::exec::event::{Event, Intent, PathTaken, Summary, VmOutcome, VmResult};
use crate::exec::fake::FakeCloud;
use crate::exec::resume::{ResumeState, ResumeVm};
use crate::exec::{Hooks, RunControl, RunOptions, execute_with};
use crate::plan::Plan;
use crate::runbook::model::Action;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// What one test runs: the fake, the plan made from a runbook over it, and the run's knobs.
pub(super) struct Harness {
    pub fake: FakeCloud,
    pub plan: Plan,
    pub options: RunOptions,
    pub control: RunControl,
    pub resume: Option<ResumeState>,
    /// Who answers `approve` gates (none: they fail).
    pub approval: Option<crate::exec::gate::Approval>,
}

/// Parses `toml` (a runbook), plans it over the fake's VMs as they are now, with short
/// lock-wait and drain bounds so that waits are cheap to step through.
pub(super) fn harness(fake: FakeCloud, toml: &str) -> Harness {
    let runbook = match crate::runbook::parse("test.toml", toml) {
        Ok(loaded) => loaded.runbook,
        Err(failure) => panic!("test runbook is invalid: {failure:?}"),
    };
    let listed: Vec<_> = fake.listing().iter().map(ListedVm::from).collect();
    let plan = crate::plan::build(
        &runbook,
        &listed,
        crate::abiquo::api::CloudApi::endpoint(&fake),
    );
    Harness {
        fake,
        plan,
        options: RunOptions {
            lock_wait: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            ..RunOptions::default()
        },
        control: RunControl::new(),
        resume: None,
        approval: None,
    }
}

/// A one-step runbook: `action` on the VMs matching `vm`, plus extra step keys.
pub(super) fn one_step(action: &str, vm: &str, extra: &str) -> String {
    format!(
        "name = \"t\"\n[[step]]\nname = \"s\"\naction = \"{action}\"\n\
         targets = [{{ vm = \"{vm}\" }}]\n{extra}\n"
    )
}

/// The events and summary of a run.
pub(super) struct Run {
    pub events: Vec<Event>,
    pub summary: Summary,
}

impl Run {
    pub fn results(&self) -> Vec<&VmResult> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::VmFinished { result } => Some(&**result),
                _ => None,
            })
            .collect()
    }

    /// The result of `vm` (its only one in the run).
    pub fn result(&self, vm: &str) -> &VmResult {
        let mut found = self.results().into_iter().filter(|r| *r.vm.name == *vm);
        match (found.next(), found.next()) {
            (Some(r), None) => r,
            _ => panic!("expected exactly one result for {vm}: {:?}", self.results()),
        }
    }

    pub fn outcome(&self, vm: &str) -> &VmOutcome {
        &self.result(vm).outcome
    }

    /// The `Failed` reason of `vm`.
    pub fn failure(&self, vm: &str) -> &str {
        match self.outcome(vm) {
            VmOutcome::Failed { reason } => reason,
            other => panic!("{vm} did not fail: {other:?}"),
        }
    }

    /// Events of one kind, by a predicate on them.
    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }

    /// `TaskAccepted` events of `vm` as `(task_href, adopted)`.
    pub fn accepted(&self, vm: &str) -> Vec<(String, bool)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TaskAccepted {
                    vm: v,
                    task_href,
                    adopted,
                    ..
                } if v == vm => Some((task_href.clone(), *adopted)),
                _ => None,
            })
            .collect()
    }
}

impl Harness {
    /// The plan keeps the fake's listing as of now, as `plan::resolve` does.
    pub fn with_listing(mut self) -> Self {
        let vms = self.fake.listing().iter().map(ListedVm::from).collect();
        self.plan.keep_listing(vms, tokio::time::Instant::now());
        self
    }

    /// Runs the plan through the executor's public entry point.
    pub async fn run(&self) -> Run {
        let (tx, mut rx) = mpsc::channel(100_000);
        let hooks = Hooks {
            resume: self.resume.clone(),
            approval: self.approval.clone(),
        };
        let summary = execute_with(
            &self.fake,
            &self.plan,
            &self.options,
            &[&tx],
            &self.control,
            &hooks,
        )
        .await;
        drop(tx);
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        Run { events, summary }
    }

    /// (step index, target index) of `vm` in the plan's first step.
    fn target_of(&self, vm: &str) -> (usize, usize) {
        let step = &self.plan.steps[0];
        let target = step
            .targets
            .iter()
            .position(|t| *t.vm.name == *vm)
            .unwrap_or_else(|| panic!("{vm} is not a target"));
        (step.index, target)
    }

    fn resume_with(&mut self, vm: &str, state: ResumeVm) {
        let key = self.target_of(vm);
        self.resume_at(key, state);
    }

    /// An earlier run finished `vm` in the step named `step` with `result`.
    pub fn resume_done_in(&mut self, step: &str, vm: &str, result: VmResult) {
        let step = self
            .plan
            .steps
            .iter()
            .find(|s| *s.name == *step)
            .unwrap_or_else(|| panic!("no step {step}"));
        let target = step
            .targets
            .iter()
            .position(|t| *t.vm.name == *vm)
            .unwrap_or_else(|| panic!("{vm} is not a target of {}", step.name));
        self.resume_at((step.index, target), ResumeVm::Done(Box::new(result)));
    }

    fn resume_at(&mut self, key: (usize, usize), state: ResumeVm) {
        self.resume
            .get_or_insert_with(ResumeState::default)
            .vms
            .insert(key, state);
    }

    /// An earlier run got the task `href` accepted for `vm`.
    pub fn resume_reattach(&mut self, vm: &str, href: &str, intent: Intent) {
        let state = ResumeVm::Reattach {
            href: href.into(),
            intent,
        };
        self.resume_with(vm, state);
    }

    /// An earlier run recorded the intent for `vm` (now) but no answer.
    pub fn resume_inspect(&mut self, vm: &str, intent: Intent, known_tasks: Vec<String>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let state = ResumeVm::Inspect {
            intent,
            at_ms,
            known_tasks,
        };
        self.resume_with(vm, state);
    }

    /// An earlier run finished `vm` with `result`.
    pub fn resume_done(&mut self, vm: &str, result: VmResult) {
        self.resume_with(vm, ResumeVm::Done(Box::new(result)));
    }
}

/// The intent recorded before sending `request` to a VM that was `from`.
pub(super) fn intent(
    action: Action,
    request: PowerRequest,
    from: VmState,
    path: PathTaken,
) -> Intent {
    Intent {
        action,
        request,
        from,
        to: request.target_state(),
        path,
    }
}

pub(super) fn state(target: PowerState, graceful: bool) -> PowerRequest {
    PowerRequest::State { target, graceful }
}

pub(super) const SHUTDOWN: PowerRequest = PowerRequest::State {
    target: PowerState::Off,
    graceful: true,
};
pub(super) const HARD_OFF: PowerRequest = PowerRequest::HARD_OFF;

pub(super) fn ok_task() -> Option<TaskState> {
    Some(TaskState::FinishedSuccessfully)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
