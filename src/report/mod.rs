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

impl Reporter for Collector {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted { started_at, plan } => {
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
