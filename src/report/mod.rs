//! Reporters: what people and machines read. [`Collector`] consumes executor events into a
//! [`RunReport`] (rendered as tables by [`table`] or as JSON); [`progress`] draws live bars;
//! [`plan`] renders a plan for people.

pub mod html;
pub mod plan;
pub mod progress;
pub mod stream;
pub mod style;
pub mod table;

use crate::exec::event::{Event, FailedJob, GateResult, StepInfo, Summary, VmResult};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn run_report_kind() -> String {
    kind::RUN_REPORT.to_owned()
}

/// Version of the JSON report's shape.
pub const REPORT_FORMAT: u32 = 1;

/// Every JSON document powerbook writes starts with `format` (the version of its shape) and
/// `kind` (which document it is): these are the kinds.
pub mod kind {
    pub const RUN_REPORT: &str = "run_report";
    pub const PLAN: &str = crate::plan::document::KIND;
    pub const VALIDATION: &str = "validation";
    pub const RUNS: &str = "runs";
    pub const EVENT: &str = "event";
}

/// A consumer of executor events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// The run is over (no more events).
    fn finish(&mut self) {}
}

/// Everything a run did, as `--output json` / `--report FILE` write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "powerbook run report",
    description = "What a powerbook run did, per step and VM (`powerbook run --output json`, `--report FILE`, `runs show --output json`)."
)]
pub struct RunReport {
    /// Version of this document's shape.
    pub format: u32,
    /// `run_report`.
    #[serde(default = "run_report_kind")]
    pub kind: String,
    pub powerbook: String,
    pub runbook: String,
    pub source_hash: String,
    pub endpoint: String,
    pub started_at: String,
    pub steps: Vec<StepInfo>,
    /// In step order, then in each step's target order.
    pub results: Vec<VmResult>,
    /// Every failed or rolled-back job, in the order of `results`.
    pub failed_jobs: Vec<FailedJob>,
    /// Every gate checked, in the order they were.
    #[serde(default)]
    pub gates: Vec<GateResult>,
    pub summary: Option<Summary>,
}

impl RunReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serialising plain data cannot fail; keep a valid document anyway.
            format!("{{\"format\":{REPORT_FORMAT},\"kind\":\"run_report\",\"error\":\"{e}\"}}")
        })
    }
}

/// Builds the [`RunReport`] from events.
#[derive(Debug, Default)]
pub struct Collector {
    report: Option<RunReport>,
    results: Vec<VmResult>,
    gates: Vec<GateResult>,
    summary: Option<Summary>,
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_report(self) -> RunReport {
        let mut report = self.report.unwrap_or_else(|| RunReport {
            format: REPORT_FORMAT,
            kind: run_report_kind(),
            powerbook: env!("CARGO_PKG_VERSION").to_owned(),
            runbook: String::new(),
            source_hash: String::new(),
            endpoint: String::new(),
            started_at: String::new(),
            steps: Vec::new(),
            results: Vec::new(),
            failed_jobs: Vec::new(),
            gates: Vec::new(),
            summary: None,
        });
        let mut results = self.results;
        results.sort_by_key(|r| (r.step, r.target));
        report.failed_jobs = results
            .iter()
            .flat_map(|r| r.failed_jobs.iter().cloned())
            .collect();
        report.results = results;
        report.gates = self.gates;
        report.summary = self.summary;
        report
    }
}

/// Hands reporters a run whose plan was made whole while it ran (it started on the first
/// pages of its listing) as they would see a run planned first: the run starts with the
/// whole plan, and the VMs its first step started meanwhile follow once that step and its
/// first wave have started. What is held meanwhile is bounded by the few VMs started before
/// the plan was whole.
#[derive(Default)]
pub struct WholePlanFirst {
    held: Option<Held>,
}

struct Held {
    started_at: String,
    /// The plan so far: the head step with the VMs handed out (the whole plan once known).
    plan: std::sync::Arc<crate::plan::Plan>,
    /// The plan is whole and the run's start was passed on.
    whole: bool,
    events: Vec<Event>,
}

impl Held {
    fn head(&self) -> Option<usize> {
        self.plan.steps.first().map(|s| s.index)
    }

    fn start(&self) -> Event {
        Event::RunStarted {
            started_at: self.started_at.clone(),
            plan: std::sync::Arc::clone(&self.plan),
            partial: false,
        }
    }
}

impl WholePlanFirst {
    /// Passes `event` on to `deliver`, or holds it until it can go in order.
    pub fn pass(&mut self, event: Event, mut deliver: impl FnMut(&Event)) {
        let Some(held) = &mut self.held else {
            match event {
                Event::RunStarted {
                    started_at,
                    plan,
                    partial: true,
                } => {
                    self.held = Some(Held {
                        started_at,
                        plan,
                        whole: false,
                        events: Vec::new(),
                    });
                }
                Event::TargetListed { .. } | Event::Planned { .. } => {}
                event => deliver(&event),
            }
            return;
        };
        let head = held.head();
        let of_head = |step: usize| Some(step) == head;
        match event {
            // Grows the plan as the journal does, for a run that never gets a whole one.
            Event::TargetListed {
                step,
                target,
                planned,
                pos,
            } if !held.whole => {
                let plan = std::sync::Arc::make_mut(&mut held.plan);
                crate::plan::head::add_handed(plan, step, target, &planned, pos.is_some());
            }
            Event::TargetListed { .. } => {}
            Event::Planned { plan, .. } if !held.whole => {
                held.plan = plan;
                held.whole = true;
                deliver(&held.start());
            }
            Event::Planned { .. } => {}
            Event::WaveStarted { step, .. } if held.whole && of_head(step) => {
                deliver(&event);
                self.flush(deliver);
            }
            Event::VmFinished { ref result } if held.whole && of_head(result.step) => {
                self.flush(&mut deliver);
                deliver(&event);
            }
            Event::StepFinished { step, .. } if held.whole && of_head(step) => {
                self.flush(&mut deliver);
                deliver(&event);
            }
            Event::RunFinished { .. } => {
                if !held.whole {
                    deliver(&held.start());
                }
                self.flush(&mut deliver);
                deliver(&event);
            }
            Event::VmStarted { .. }
            | Event::VmActing { .. }
            | Event::TaskAccepted { .. }
            | Event::TaskFinished { .. } => held.events.push(event),
            event if held.whole => deliver(&event),
            event => held.events.push(event),
        }
    }

    /// The run's journal ends here (it crashed, or is still being written): passes on what
    /// was held, the run's start first if it was not.
    pub fn finish(mut self, mut deliver: impl FnMut(&Event)) {
        if let Some(held) = &self.held
            && !held.whole
        {
            deliver(&held.start());
        }
        self.flush(deliver);
    }

    /// Passes on what was held, and holds nothing more.
    fn flush(&mut self, mut deliver: impl FnMut(&Event)) {
        if let Some(held) = self.held.take() {
            held.events.iter().for_each(&mut deliver);
        }
    }
}

impl Reporter for Collector {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                started_at, plan, ..
            } => {
                self.report = Some(RunReport {
                    format: REPORT_FORMAT,
                    kind: run_report_kind(),
                    powerbook: env!("CARGO_PKG_VERSION").to_owned(),
                    runbook: plan.runbook_name.clone(),
                    source_hash: plan.source_hash.clone(),
                    endpoint: plan.endpoint.clone(),
                    started_at: started_at.clone(),
                    steps: StepInfo::of_plan(plan),
                    results: Vec::new(),
                    failed_jobs: Vec::new(),
                    gates: Vec::new(),
                    summary: None,
                });
                // One result per target: no slack from growing (a region is 100,000).
                self.results.reserve_exact(plan.total_targets());
            }
            Event::VmFinished { result } => self.results.push((**result).clone()),
            Event::RunFinished { summary } => self.summary = Some(summary.clone()),
            Event::GateChecked(gate) => self.gates.push(gate.clone()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::event::VmOutcome;
    use crate::plan::Plan;
    use std::sync::Arc;

    fn plan() -> Plan {
        let rb = crate::plan::tests::runbook(vec![crate::plan::tests::step(
            "off",
            crate::runbook::model::Action::Off,
            vec![crate::plan::tests::sel_vm("*")],
        )]);
        crate::plan::tests::build(
            &rb,
            &[
                crate::plan::tests::vm(1, "a", "app", crate::abiquo::model::VmState::On, "KVM"),
                crate::plan::tests::vm(2, "b", "app", crate::abiquo::model::VmState::On, "KVM"),
            ],
            "http://127.0.0.1:9/api",
        )
    }

    fn kind(e: &Event) -> String {
        let v = serde_json::to_value(e).unwrap();
        v["event"].as_str().unwrap().to_owned()
    }

    fn vm_started(plan: &Plan, target: usize) -> Event {
        Event::VmStarted {
            step: 0,
            target,
            vm: plan.steps[0].targets[target].vm.clone(),
        }
    }

    /// The start of a run on the first pages: the step without VMs, its first VM handed
    /// out, and started.
    fn started_early(plan: &Plan) -> Vec<Event> {
        let mut skeleton = plan.clone();
        skeleton.steps[0].targets.clear();
        skeleton.steps[0].waves.clear();
        vec![
            Event::RunStarted {
                started_at: "t".into(),
                plan: Arc::new(skeleton),
                partial: true,
            },
            Event::TargetListed {
                step: 0,
                target: 0,
                planned: Box::new(plan.steps[0].targets[0].clone()),
                pos: Some(0),
            },
            vm_started(plan, 0),
        ]
    }

    #[test]
    fn reporters_see_the_whole_plan_first_and_early_vms_after_their_wave_starts() {
        let plan = plan();
        let mut events = started_early(&plan);
        events.extend([
            Event::Planned {
                plan: Arc::new(plan.clone()),
                estimate: None,
            },
            Event::StepStarted {
                step: 0,
                name: "off".into(),
                action: crate::runbook::model::Action::Off,
                vms: 2,
                waves: 1,
            },
            Event::WaveStarted {
                step: 0,
                wave: 0,
                vms: 2,
            },
            vm_started(&plan, 1),
        ]);
        let mut order = WholePlanFirst::default();
        let mut seen = Vec::new();
        for e in events {
            order.pass(e, |e| seen.push(e.clone()));
        }
        let kinds: Vec<String> = seen.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "run_started",
                "step_started",
                "wave_started",
                "vm_started",
                "vm_started"
            ]
        );
        match &seen[0] {
            Event::RunStarted {
                plan: p, partial, ..
            } => {
                assert!(!partial);
                assert_eq!(**p, plan);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_that_never_got_its_whole_plan_is_reported_with_the_vms_handed_out() {
        let plan = plan();
        let mut order = WholePlanFirst::default();
        let mut seen = Vec::new();
        let t = &plan.steps[0].targets[0];
        let result = crate::exec::event::VmResult {
            step: 0,
            step_name: "off".into(),
            target: 0,
            vm: t.vm.clone(),
            action: crate::runbook::model::Action::Off,
            state_before: None,
            state_after: None,
            deallocated_after: None,
            path: crate::exec::event::PathTaken::Direct,
            task_state: None,
            task_href: None,
            duration_ms: 0,
            started_at: None,
            finished_at: None,
            outcome: VmOutcome::Ok,
            failed_jobs: Vec::new(),
        };
        let mut events = started_early(&plan);
        events.extend([
            Event::VmFinished {
                result: Box::new(result),
            },
            Event::RunFinished {
                summary: crate::exec::event::Summary {
                    counts: crate::exec::event::ResultCounts::default(),
                    wall_ms: 0,
                    aborted: None,
                    interrupted: false,
                    api: crate::abiquo::ClientStats::default(),
                },
            },
        ]);
        for e in events {
            order.pass(e, |e| seen.push(e.clone()));
        }
        let kinds: Vec<String> = seen.iter().map(kind).collect();
        assert_eq!(
            kinds,
            ["run_started", "vm_started", "vm_finished", "run_finished"]
        );
        match &seen[0] {
            Event::RunStarted { plan: p, .. } => {
                assert_eq!(p.steps[0].targets, plan.steps[0].targets[..1]);
            }
            other => panic!("{other:?}"),
        }
    }
}
