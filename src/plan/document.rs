//! The plan as one versioned JSON document: what `plan --output json` prints, what
//! `plan --save FILE` writes and what `run --plan FILE` reads back. Its JSON Schema
//! (draft-07) is committed as `runbooks/plan.schema.json`; a test fails when it is stale.

use crate::abiquo::model::VmState;
use crate::plan::estimate::Estimate;
use crate::plan::{Disposition, FailureLimit, Plan, PlannedStep, StepCounts};
use crate::runbook::model::{OnFailure, Runbook};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::{Deserialize, Serialize};

/// Version of the document's shape (the embedded plan has its own `format`).
pub const DOCUMENT_FORMAT: u32 = 1;

/// The `kind` of a plan document.
pub const KIND: &str = "plan";

fn plan_kind() -> String {
    KIND.to_owned()
}

/// Names a warning lists before counting the rest: a warning is a line, not a listing (the
/// plan's tables list every refused VM).
const NAMES_IN_A_WARNING: usize = 5;

/// `a, b, c, d, e and 45 more`.
fn first_names(names: &[String]) -> String {
    let shown = names.len().min(NAMES_IN_A_WARNING);
    let mut text = names[..shown].join(", ");
    if names.len() > shown {
        text.push_str(&format!(" and {} more", names.len() - shown));
    }
    text
}

/// What `powerbook plan` found and expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "powerbook plan",
    description = "A dry run of a powerbook runbook: resolved VMs, intended transitions, waves, thresholds and estimates (`powerbook plan --output json`, `--save`)."
)]
pub struct PlanDocument {
    /// Version of this document's shape.
    pub format: u32,
    /// `plan`.
    #[serde(default = "plan_kind")]
    pub kind: String,
    /// powerbook version that made it.
    pub powerbook: String,
    /// The runbook file the plan was made from (absolute when known).
    pub runbook_path: String,
    /// VMs the API listed (all of them, not only the targets).
    pub vms_listed: usize,
    /// Dispositions over all steps.
    pub totals: StepCounts,
    /// Run-wide request rate limit (`limits.requests_per_second`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<usize>,
    /// Run deadline (`limits.deadline`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    pub plan: Plan,
    /// Failure thresholds in force: the run-wide one first (if any), then one per step.
    pub thresholds: Vec<Threshold>,
    pub estimate: Estimate,
    /// Problems worth a look before running; `plan --strict` fails when there are any.
    pub warnings: Vec<PlanWarning>,
}

/// A failure threshold resolved against the VMs it counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Threshold {
    /// Step name; absent for the run-wide `limits.max_failures`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `max_failures` as written (`3`, `10%`); absent when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<String>,
    /// Failures tolerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated: Option<usize>,
    /// The failure count that stops the run (`tolerated + 1`), when it does stop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_at: Option<usize>,
    /// VMs counted.
    pub of: usize,
    /// `abort at 3 failures of 25 (max_failures = 10%)`.
    pub text: String,
}

/// Why a warning was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// VMs the API would refuse the action for.
    Refused,
    /// A step whose selectors match no VM, or none it would look at.
    EmptyStep,
    /// The predicted refusals alone exceed a failure threshold: the run would abort.
    ThresholdCrossed,
    /// The estimate is longer than the run's deadline.
    OverDeadline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanWarning {
    pub kind: WarningKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
}

impl PlanDocument {
    /// Assembles the document: thresholds and warnings follow from the plan and estimate.
    pub fn new(
        runbook: &Runbook,
        runbook_path: String,
        vms_listed: usize,
        plan: Plan,
        estimate: Estimate,
    ) -> PlanDocument {
        let mut totals = StepCounts::default();
        for s in &plan.steps {
            let c = s.counts();
            totals.act += c.act;
            totals.skip += c.skip;
            totals.refuse += c.refuse;
            totals.excluded += c.excluded;
            totals.protected += c.protected;
        }
        let thresholds = thresholds(&plan);
        let warnings = warnings(&plan, &thresholds, &estimate);
        PlanDocument {
            format: DOCUMENT_FORMAT,
            kind: plan_kind(),
            powerbook: env!("CARGO_PKG_VERSION").to_owned(),
            runbook_path,
            vms_listed,
            totals,
            requests_per_second: runbook.limits.requests_per_second.map(|n| n.get()),
            deadline_ms: plan.deadline_ms,
            plan,
            thresholds,
            estimate,
            warnings,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Plain data always serialises; keep the output a JSON document anyway.
            format!("{{\"format\":{DOCUMENT_FORMAT},\"error\":\"{e}\"}}")
        })
    }

    /// The run-wide threshold (if any) and then each step's.
    pub fn step_threshold(&self, step: &str) -> Option<&Threshold> {
        self.thresholds
            .iter()
            .find(|t| t.step.as_deref() == Some(step))
    }

    pub fn run_threshold(&self) -> Option<&Threshold> {
        self.thresholds.iter().find(|t| t.step.is_none())
    }

    /// The (document, plan) formats a saved document says it has, read before the rest so
    /// that an older shape is refused for its version rather than for a field it lacks.
    pub fn formats_of(json: &str) -> Result<(u32, u32), serde_json::Error> {
        #[derive(Deserialize)]
        struct Formats {
            format: u32,
            plan: PlanFormat,
        }
        #[derive(Deserialize)]
        struct PlanFormat {
            format: u32,
        }
        let f: Formats = serde_json::from_str(json)?;
        Ok((f.format, f.plan.format))
    }
}

/// The executor stops a step (or the run) when failures exceed `max_failures` resolved
/// against its live VMs, and only with `on_failure = "abort"` for steps.
fn thresholds(plan: &Plan) -> Vec<Threshold> {
    let mut out = Vec::new();
    if let Some(limit) = plan.max_failures {
        out.push(threshold(None, Some(limit), true, plan.total_live()));
    }
    for s in &plan.steps {
        out.push(threshold(
            Some(s.name.to_string()),
            s.max_failures,
            s.on_failure == OnFailure::Abort,
            s.live_count(),
        ));
    }
    out
}

fn threshold(
    step: Option<String>,
    limit: Option<FailureLimit>,
    aborts: bool,
    of: usize,
) -> Threshold {
    let key = if step.is_some() {
        "max_failures"
    } else {
        "limits.max_failures"
    };
    let vms = |n: usize| if n == 1 { "VM" } else { "VMs" };
    let failures = |n: usize| if n == 1 { "failure" } else { "failures" };
    let Some(FailureLimit { amount, tolerated }) = limit else {
        return Threshold {
            step,
            max_failures: None,
            tolerated: None,
            abort_at: None,
            of,
            text: format!("no failure limit ({of} {})", vms(of)),
        };
    };
    let abort_at = aborts.then_some(tolerated + 1);
    let text = match abort_at {
        Some(at) if at > of => format!(
            "abort at {at} {}, more than its {of} {} ({key} = {amount})",
            failures(at),
            vms(of)
        ),
        Some(at) => format!("abort at {at} {} of {of} ({key} = {amount})", failures(at)),
        None => format!("continue on failures (on_failure = \"continue\"; {key} = {amount})"),
    };
    Threshold {
        step,
        max_failures: Some(amount.to_string()),
        tolerated: Some(tolerated),
        abort_at,
        of,
        text,
    }
}

fn warnings(plan: &Plan, thresholds: &[Threshold], estimate: &Estimate) -> Vec<PlanWarning> {
    let mut out = Vec::new();
    let mut refused_total = 0;
    for s in &plan.steps {
        let warn = |kind, message| PlanWarning {
            kind,
            step: Some(s.name.to_string()),
            message,
        };
        if s.targets.is_empty() {
            out.push(warn(
                WarningKind::EmptyStep,
                format!("step '{}' matches no VM", s.name),
            ));
        } else if s.live_count() == 0 {
            out.push(warn(
                WarningKind::EmptyStep,
                format!(
                    "step '{}' has no VM to act on: its {} VMs are all excluded or protected",
                    s.name,
                    s.targets.len()
                ),
            ));
        }
        let refused = refused_names(s);
        refused_total += refused.len();
        if !refused.is_empty() {
            out.push(warn(
                WarningKind::Refused,
                format!(
                    "step '{}': {} refused by the API as things stand: {}",
                    s.name,
                    count(refused.len(), "VM would be", "VMs would be"),
                    first_names(&refused)
                ),
            ));
        }
        if let Some(t) = thresholds
            .iter()
            .find(|t| t.step.as_deref() == Some(&*s.name))
            && let Some(at) = t.abort_at
            && refused.len() >= at
        {
            out.push(warn(
                WarningKind::ThresholdCrossed,
                format!(
                    "step '{}': the {} refusals alone reach its threshold ({}): the run would abort",
                    s.name,
                    refused.len(),
                    t.text
                ),
            ));
        }
    }
    if let Some(t) = thresholds.iter().find(|t| t.step.is_none())
        && let Some(at) = t.abort_at
        && refused_total >= at
    {
        out.push(PlanWarning {
            kind: WarningKind::ThresholdCrossed,
            step: None,
            message: format!(
                "the {refused_total} refusals alone reach the run-wide threshold ({}): the run would abort",
                t.text
            ),
        });
    }
    if let Some(deadline) = plan.deadline()
        && u128::from(estimate.total_ms) > deadline.as_millis()
    {
        out.push(PlanWarning {
            kind: WarningKind::OverDeadline,
            step: None,
            message: format!(
                "the run is estimated at {}, longer than its deadline of {}: the last VMs would not be started",
                crate::plan::text::duration(estimate.total_ms),
                humantime::format_duration(deadline)
            ),
        });
    }
    out
}

/// `web-01 (VM-26)`, `build-runner (LOCKED)`...
fn refused_names(s: &PlannedStep) -> Vec<String> {
    s.targets
        .iter()
        .filter_map(|t| match &t.disposition {
            Disposition::Refuse { code: Some(c), .. } => Some(format!("{} ({c})", t.vm.name)),
            Disposition::Refuse { code: None, .. } if t.state_expected == VmState::Locked => {
                Some(format!("{} (LOCKED)", t.vm.name))
            }
            Disposition::Refuse { code: None, reason } => Some(format!("{} ({reason})", t.vm.name)),
            _ => None,
        })
        .collect()
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The document's JSON Schema (draft-07), pretty-printed with a trailing newline.
pub fn schema_json() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PlanDocument>();
    let mut text =
        serde_json::to_string_pretty(&schema.to_value()).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::estimate::{EstimateInputs, estimate};
    use crate::plan::tests::{build, runbook, sel_vm, step, vm};
    use crate::runbook::model::{Action, Amount};

    fn doc(rb: &Runbook, vms: &[crate::abiquo::model::VirtualMachine]) -> PlanDocument {
        let plan = build(rb, vms, "http://x/api");
        let est = estimate(&plan, rb, &EstimateInputs::default());
        PlanDocument::new(rb, "rb.toml".into(), vms.len(), plan, est)
    }

    #[test]
    fn committed_schema_is_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks/plan.schema.json");
        let fresh = schema_json();
        if std::env::var("POWERBOOK_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
            std::fs::write(path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == fresh,
            "runbooks/plan.schema.json is stale: regenerate it with\n  \
             POWERBOOK_UPDATE_SCHEMA=1 cargo test committed_schema_is_fresh"
        );
    }

    #[test]
    fn thresholds_say_at_which_failure_the_run_stops() {
        let vms: Vec<_> = (1..=25)
            .map(|i| vm(i, &format!("web-{i:02}"), "web", VmState::On, "KVM"))
            .collect();
        let mut s = step("down", Action::Off, vec![sel_vm("web-*")]);
        s.max_failures = Some(Amount::Percent(10));
        let mut rb = runbook(vec![s]);
        rb.limits.max_failures = Some(Amount::Count(0));
        let d = doc(&rb, &vms);
        let t = d.step_threshold("down").unwrap();
        assert_eq!((t.tolerated, t.abort_at, t.of), (Some(3), Some(4), 25));
        assert_eq!(t.text, "abort at 4 failures of 25 (max_failures = 10%)");
        assert_eq!(
            d.run_threshold().unwrap().text,
            "abort at 1 failure of 25 (limits.max_failures = 0)"
        );
        rb.steps[0].on_failure = OnFailure::Continue;
        let d = doc(&rb, &vms);
        assert_eq!(d.step_threshold("down").unwrap().abort_at, None);
    }

    #[test]
    fn refusals_and_empty_steps_are_warnings() {
        let vms = vec![
            vm(1, "web-01", "web", VmState::Off, "KVM"),
            vm(2, "web-02", "web", VmState::On, "KVM"),
        ];
        let mut reset = step("reset", Action::Reset, vec![sel_vm("web-*")]);
        reset.max_failures = Some(Amount::Count(0));
        let mut all_excluded = step("none", Action::Off, vec![sel_vm("web-02")]);
        all_excluded.exclude = vec![sel_vm("web-*")];
        let rb = runbook(vec![
            reset,
            step("nothing", Action::On, vec![sel_vm("db-*")]),
            all_excluded,
        ]);
        let d = doc(&rb, &vms);
        let kinds: Vec<(WarningKind, Option<&str>)> = d
            .warnings
            .iter()
            .map(|w| (w.kind, w.step.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                (WarningKind::Refused, Some("reset")),
                (WarningKind::ThresholdCrossed, Some("reset")),
                (WarningKind::EmptyStep, Some("nothing")),
                (WarningKind::EmptyStep, Some("none")),
            ]
        );
        assert!(d.warnings[0].message.contains("web-01 (VM-26)"));
        assert_eq!(d.totals.refuse, 1);
        assert_eq!(d.totals.act, 1);
        assert_eq!(d.totals.excluded, 1);
    }

    #[test]
    fn an_estimate_over_the_deadline_is_a_warning() {
        let vms = vec![vm(1, "web-01", "web", VmState::On, "KVM")];
        let mut rb = runbook(vec![step("down", Action::Shutdown, vec![sel_vm("web-*")])]);
        rb.limits.deadline = Some(std::time::Duration::from_secs(10));
        let d = doc(&rb, &vms);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.kind == WarningKind::OverDeadline),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn the_document_round_trips_through_json() {
        let vms = vec![vm(1, "web-01", "web", VmState::On, "KVM")];
        let rb = runbook(vec![step("down", Action::Off, vec![sel_vm("web-*")])]);
        let d = doc(&rb, &vms);
        let back: PlanDocument = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(back, d);
    }
}
