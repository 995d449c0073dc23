//! Events: the only channel from the executor to its consumers (reporters, journal). Every
//! event is serde so a JSON-lines journal can write them as they come.

use crate::abiquo::client::ClientStats;
use crate::abiquo::model::{JobState, PowerRequest, Task, TaskState, VmState};
use crate::plan::estimate::Estimate;
use crate::plan::{Plan, PlannedVm, StepCounts, VmRef};
use crate::runbook::model::Action;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Before anything else; carries the whole plan, or with `partial` the step that starts
    /// while the VMs are still listed, without its VMs: `TargetListed` adds them as they
    /// are handed out, and `Planned` brings the whole plan once the listing is in.
    RunStarted {
        started_at: String,
        plan: std::sync::Arc<Plan>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    /// A target of the step that started before the listing ended, before anything is
    /// done with it: its number, and its place in the step's first wave when it is in it.
    TargetListed {
        step: usize,
        target: usize,
        planned: Box<PlannedVm>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos: Option<usize>,
    },
    /// The whole plan, once the listing of a run that started early is in; the targets
    /// listed before keep their numbers. With what the plan expects of the run.
    Planned {
        plan: std::sync::Arc<Plan>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimate: Option<Box<Estimate>>,
    },
    /// A step's dependencies are done and it begins.
    StepStarted {
        step: usize,
        name: String,
        action: Action,
        /// VMs the step looks at (excluded and protected ones are not counted).
        vms: usize,
        waves: usize,
    },
    /// A gate was checked: before the step (`wave` absent), before wave `wave`, or on the
    /// edge from step `after` (checked once that step is done, so it may come before the
    /// step's `StepStarted`).
    GateChecked(GateResult),
    /// The pause before wave `wave` (from 0) begins.
    WavePaused {
        step: usize,
        wave: usize,
        pause_ms: u64,
    },
    WaveStarted {
        step: usize,
        wave: usize,
        vms: usize,
    },
    /// A VM got its concurrency slot; its state is read next.
    VmStarted {
        step: usize,
        target: usize,
        vm: VmRef,
    },
    /// Sent right BEFORE a mutation, so a journal knows what may be in flight.
    VmActing {
        step: usize,
        target: usize,
        vm: VmRef,
        intent: Intent,
    },
    /// As soon as the API accepted the mutation (or reconciliation found its task).
    TaskAccepted {
        step: usize,
        target: usize,
        vm: String,
        task_href: String,
        /// Found through the VM's tasks list after a lost answer.
        adopted: bool,
    },
    /// A task reached a terminal state (or polling stopped).
    TaskFinished {
        step: usize,
        target: usize,
        vm: String,
        task_href: String,
        state: Option<TaskState>,
        polls: u32,
        elapsed_ms: u64,
    },
    VmFinished {
        result: Box<VmResult>,
    },
    StepFinished {
        step: usize,
        name: String,
        counts: ResultCounts,
    },
    /// A failure threshold or the deadline stopped the run: nothing new starts.
    RunAborted {
        reason: String,
    },
    /// Ctrl-C: nothing new starts, in-flight tasks are drained for at most `drain_ms`.
    RunInterrupted {
        drain_ms: u64,
    },
    RunFinished {
        summary: Summary,
    },
}

/// What is about to be sent for a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub action: Action,
    /// The request about to be sent.
    pub request: PowerRequest,
    pub from: VmState,
    pub to: VmState,
    pub path: PathTaken,
}

/// How the VM got (or did not get) to its target state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathTaken {
    /// The action itself (on, off, pause, resume, reset, deallocate).
    Direct,
    /// Graceful shutdown through the guest tools.
    Graceful,
    /// Graceful shutdown failed or was too slow: hard off (fallback).
    Forced,
    /// `restart`: graceful shutdown, then power on.
    #[serde(rename = "graceful+on")]
    GracefulOn,
    /// `restart`: the graceful shutdown fell back to a hard off, then power on.
    #[serde(rename = "forced+on")]
    ForcedOn,
    /// Nothing was sent.
    Skipped,
    NotStarted,
}

impl PathTaken {
    /// The action of the task a VM on this path is waiting for, in a step of `action`:
    /// what its polls are paced by and what its state is checked against.
    pub fn task_action(self, action: Action) -> Action {
        match (action, self) {
            (_, PathTaken::Forced) => Action::Off,
            (Action::Restart, PathTaken::Graceful) => Action::Shutdown,
            (Action::Restart, _) => Action::On,
            (a, _) => a,
        }
    }

    /// A restart's power on, after its shutdown.
    pub fn then_on(self) -> PathTaken {
        match self {
            PathTaken::Forced => PathTaken::ForcedOn,
            _ => PathTaken::GracefulOn,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PathTaken::Direct => "direct",
            PathTaken::Graceful => "graceful",
            PathTaken::Forced => "forced",
            PathTaken::GracefulOn => "graceful+on",
            PathTaken::ForcedOn => "forced+on",
            PathTaken::Skipped => "skipped",
            PathTaken::NotStarted => "not started",
        }
    }
}

/// The result of one VM in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VmOutcome {
    Ok,
    Skipped {
        reason: String,
    },
    Failed {
        reason: String,
    },
    NotStarted {
        reason: String,
    },
    /// Ctrl-C while its task was running; the task may still finish in the cloud.
    Interrupted {
        reason: String,
    },
}

impl VmOutcome {
    /// Table text: `ok`, `skipped: already OFF`, `failed: VM-4: …`, `not started`.
    pub fn text(&self) -> String {
        match self {
            VmOutcome::Ok => "ok".into(),
            VmOutcome::Skipped { reason } => format!("skipped: {reason}"),
            VmOutcome::Failed { reason } => format!("failed: {reason}"),
            VmOutcome::NotStarted { reason } if reason.is_empty() => "not started".into(),
            VmOutcome::NotStarted { reason } => format!("not started: {reason}"),
            VmOutcome::Interrupted { reason } => format!("interrupted: {reason}"),
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, VmOutcome::Failed { .. })
    }
}

/// A job that failed or was rolled back, with its rollback state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedJob {
    pub vm: String,
    pub task_id: String,
    pub task_type: String,
    pub job_id: String,
    pub job_type: String,
    pub description: String,
    pub state: JobState,
    pub rollback_state: JobState,
}

impl FailedJob {
    pub fn from_task(vm: &str, task: &Task) -> Vec<FailedJob> {
        task.failed_jobs()
            .map(|j| FailedJob {
                vm: vm.to_owned(),
                task_id: task.task_id.clone(),
                task_type: task.task_type.to_string(),
                job_id: j.id.clone(),
                job_type: j.job_type.clone(),
                description: j.description.clone(),
                state: j.state.clone(),
                rollback_state: j.rollback_state.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmResult {
    pub step: usize,
    #[schemars(with = "String")]
    pub step_name: std::sync::Arc<str>,
    /// Index in the step's targets.
    pub target: usize,
    pub vm: VmRef,
    pub action: Action,
    pub state_before: Option<VmState>,
    pub state_after: Option<VmState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocated_after: Option<bool>,
    pub path: PathTaken,
    /// State of the last task followed.
    pub task_state: Option<TaskState>,
    pub task_href: Option<String>,
    pub duration_ms: u64,
    /// When the VM was started and finished (UTC, milliseconds); absent when it was not
    /// started, and in journals of earlier versions.
    #[serde(default, with = "utc_ms", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<u64>,
    #[serde(default, with = "utc_ms", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<u64>,
    #[serde(flatten)]
    pub outcome: VmOutcome,
    pub failed_jobs: Vec<FailedJob>,
}

/// Milliseconds since the Unix epoch, now.
pub fn utc_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds (`2026-12-02T14:00:00.123Z`): held
/// as a number (a region is 100,000 results), read and written as people and tools expect.
mod utc_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.collect_str(&humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(*ms),
            )),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let at = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Some(u64::try_from(ms).map_err(serde::de::Error::custom)?))
    }
}

/// Results by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultCounts {
    pub ok: usize,
    pub skipped: usize,
    pub failed: usize,
    pub not_started: usize,
    pub interrupted: usize,
}

impl ResultCounts {
    pub fn add(&mut self, outcome: &VmOutcome) {
        match outcome {
            VmOutcome::Ok => self.ok += 1,
            VmOutcome::Skipped { .. } => self.skipped += 1,
            VmOutcome::Failed { .. } => self.failed += 1,
            VmOutcome::NotStarted { .. } => self.not_started += 1,
            VmOutcome::Interrupted { .. } => self.interrupted += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.ok + self.skipped + self.failed + self.not_started + self.interrupted
    }
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub counts: ResultCounts,
    pub wall_ms: u64,
    /// Why the run stopped launching (threshold, deadline, fatal API error).
    pub aborted: Option<String>,
    /// Ctrl-C.
    pub interrupted: bool,
    pub api: ClientStats,
}

/// How a gate went, as the report keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateResult {
    pub step: usize,
    /// Before wave `wave` (from 0); absent: before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// On the `after` edge from this step (its number): checked once that step was done,
    /// before `step` started. Absent: the step's own gate, or a wave's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<usize>,
    /// What it checked, e.g. `tcp db-1:5432`.
    pub check: String,
    pub passed: bool,
    pub attempts: u32,
    pub elapsed_ms: u64,
    /// Why it failed, or what it saw.
    pub detail: String,
}

/// Per-step overview, e.g. for the confirmation prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepInfo {
    pub index: usize,
    pub name: String,
    pub action: Action,
    pub counts: StepCounts,
    /// Waves the step's VMs go in (0 in journals of earlier versions).
    #[serde(default)]
    pub waves: usize,
}

impl StepInfo {
    pub fn of_plan(plan: &Plan) -> Vec<StepInfo> {
        plan.steps
            .iter()
            .map(|s| StepInfo {
                index: s.index,
                name: s.name.to_string(),
                action: s.action,
                counts: s.counts(),
                waves: s.waves.len(),
            })
            .collect()
    }
}
