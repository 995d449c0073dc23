//! `--output ndjson`: the run as it happens, one JSON object per line on stdout, for tools
//! that follow a run live (dashboards, chat bots, a timeline). Each line has the envelope of
//! every powerbook document (`format`, `kind: "event"`), the time it was emitted and the
//! event; the shape is committed as `runbooks/events.schema.json`.

use crate::abiquo::model::{TaskState, VmState};
use crate::exec::event::{
    Event, GateResult, PathTaken, ResultCounts, StepInfo, Summary, VmResult, utc_now_ms,
};
use crate::report::{Reporter, kind};
use crate::runbook::model::Action;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Version of the event lines' shape.
pub const STREAM_FORMAT: u32 = 1;

/// One line of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "powerbook run event",
    description = "One line of `powerbook run --output ndjson` (and `resume`): an event of the run as it happened."
)]
pub struct StreamLine {
    /// Version of this line's shape.
    pub format: u32,
    /// `event`.
    pub kind: String,
    /// When powerbook emitted it: RFC 3339, UTC, milliseconds.
    pub at: String,
    #[serde(flatten)]
    pub event: StreamEvent,
}

/// What happened. Steps and targets are numbered as in the plan (from 0). It follows the
/// executor's events, but is its own type: the stream is a published format (the run's
/// start carries the steps, not the whole plan; VMs are named, not referenced) that must not
/// change when the executor's internals do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// First: what the run is about to do.
    RunStarted {
        runbook: String,
        endpoint: String,
        started_at: String,
        steps: Vec<StepInfo>,
        /// Results to come: one per step and VM.
        targets: usize,
    },
    /// A step's dependencies are done and it begins.
    StepStarted {
        step: usize,
        name: String,
        action: Action,
        vms: usize,
        waves: usize,
    },
    /// A gate was checked: before the step (`wave` and `after` absent), before wave `wave`,
    /// or on the `after` edge from step `after` (checked once that step is done, so it may
    /// come before this step's `step_started`).
    GateChecked(GateResult),
    /// The pause before wave `wave` (from 0) of a step begins.
    WavePaused {
        step: usize,
        wave: usize,
        pause_ms: u64,
    },
    /// A wave of a step begins (from 0).
    WaveStarted {
        step: usize,
        wave: usize,
        vms: usize,
    },
    /// Work on a VM begins.
    VmStarted {
        step: usize,
        target: usize,
        vm: String,
    },
    /// A power request is about to be sent.
    VmActing {
        step: usize,
        target: usize,
        vm: String,
        action: Action,
        from: VmState,
        to: VmState,
        path: PathTaken,
    },
    /// The API accepted the request: its task is followed at `task_href`.
    TaskAccepted {
        step: usize,
        target: usize,
        vm: String,
        task_href: String,
        /// Found in the VM's tasks after the answer to the request was lost.
        adopted: bool,
    },
    /// The task reached a terminal state, or following it stopped (state absent).
    TaskFinished {
        step: usize,
        target: usize,
        vm: String,
        task_href: String,
        state: Option<TaskState>,
        polls: u32,
        elapsed_ms: u64,
    },
    /// A VM's result, as the report has it.
    VmFinished { result: Box<VmResult> },
    StepFinished {
        step: usize,
        name: String,
        counts: ResultCounts,
    },
    /// A failure threshold or the deadline stopped the run: nothing new starts.
    RunAborted { reason: String },
    /// Ctrl-C or a termination signal: nothing new starts, tasks in flight are followed for
    /// at most `drain_ms`.
    RunInterrupted { drain_ms: u64 },
    /// Last.
    RunFinished { summary: Summary },
}

impl StreamEvent {
    /// The line an event makes; `None` for the records only a journal keeps (how a plan
    /// that started before its listing ended was filled in: a reader of the stream gets
    /// the whole plan first, see `report::whole_plan_first`).
    pub fn of(event: &Event) -> Option<StreamEvent> {
        Some(match event {
            Event::RunStarted {
                started_at, plan, ..
            } => StreamEvent::RunStarted {
                runbook: plan.runbook_name.clone(),
                endpoint: plan.endpoint.clone(),
                started_at: started_at.clone(),
                steps: StepInfo::of_plan(plan),
                targets: plan.total_targets(),
            },
            Event::StepStarted {
                step,
                name,
                action,
                vms,
                waves,
            } => StreamEvent::StepStarted {
                step: *step,
                name: name.clone(),
                action: *action,
                vms: *vms,
                waves: *waves,
            },
            Event::GateChecked(gate) => StreamEvent::GateChecked(gate.clone()),
            Event::WavePaused {
                step,
                wave,
                pause_ms,
            } => StreamEvent::WavePaused {
                step: *step,
                wave: *wave,
                pause_ms: *pause_ms,
            },
            Event::WaveStarted { step, wave, vms } => StreamEvent::WaveStarted {
                step: *step,
                wave: *wave,
                vms: *vms,
            },
            Event::VmStarted { step, target, vm } => StreamEvent::VmStarted {
                step: *step,
                target: *target,
                vm: vm.name.to_string(),
            },
            Event::VmActing {
                step,
                target,
                vm,
                intent,
            } => StreamEvent::VmActing {
                step: *step,
                target: *target,
                vm: vm.name.to_string(),
                action: intent.action,
                from: intent.from.clone(),
                to: intent.to.clone(),
                path: intent.path,
            },
            Event::TaskAccepted {
                step,
                target,
                vm,
                task_href,
                adopted,
            } => StreamEvent::TaskAccepted {
                step: *step,
                target: *target,
                vm: vm.clone(),
                task_href: task_href.clone(),
                adopted: *adopted,
            },
            Event::TaskFinished {
                step,
                target,
                vm,
                task_href,
                state,
                polls,
                elapsed_ms,
            } => StreamEvent::TaskFinished {
                step: *step,
                target: *target,
                vm: vm.clone(),
                task_href: task_href.clone(),
                state: state.clone(),
                polls: *polls,
                elapsed_ms: *elapsed_ms,
            },
            Event::VmFinished { result } => StreamEvent::VmFinished {
                result: result.clone(),
            },
            Event::StepFinished { step, name, counts } => StreamEvent::StepFinished {
                step: *step,
                name: name.clone(),
                counts: *counts,
            },
            Event::RunAborted { reason } => StreamEvent::RunAborted {
                reason: reason.clone(),
            },
            Event::RunInterrupted { drain_ms } => StreamEvent::RunInterrupted {
                drain_ms: *drain_ms,
            },
            Event::RunFinished { summary } => StreamEvent::RunFinished {
                summary: summary.clone(),
            },
            Event::TargetListed { .. } | Event::Planned { .. } => return None,
        })
    }
}

impl StreamLine {
    pub fn of(event: &Event, at_ms: u64) -> Option<StreamLine> {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
        Some(StreamLine {
            format: STREAM_FORMAT,
            kind: kind::EVENT.to_owned(),
            at: humantime::format_rfc3339_millis(at).to_string(),
            event: StreamEvent::of(event)?,
        })
    }
}

/// Writes each event as a line as soon as it comes, flushed, so a reader sees the run live.
pub struct NdjsonWriter<W: Write + Send> {
    out: W,
    /// The reader went away (`| head`): stop writing, let the run go on.
    closed: bool,
}

impl<W: Write + Send> NdjsonWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, closed: false }
    }
}

impl<W: Write + Send> Reporter for NdjsonWriter<W> {
    fn event(&mut self, event: &Event) {
        if self.closed {
            return;
        }
        let Some(line) = StreamLine::of(event, utc_now_ms()) else {
            return;
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        if self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .is_err()
        {
            self.closed = true;
        }
    }
}

fn schema_of<T: JsonSchema>() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut text =
        serde_json::to_string_pretty(&schema.to_value()).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// JSON Schema (draft-07) of one line of the event stream.
pub fn events_schema_json() -> String {
    schema_of::<StreamLine>()
}

/// JSON Schema (draft-07) of the run report.
pub fn report_schema_json() -> String {
    schema_of::<crate::report::RunReport>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_is_fresh(file: &str, fresh: &str) {
        let path = format!("{}/runbooks/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var("POWERBOOK_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
            std::fs::write(&path, fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "runbooks/{file} is stale: regenerate it with\n  \
             POWERBOOK_UPDATE_SCHEMA=1 cargo test committed_schemas_are_fresh"
        );
    }

    #[test]
    fn committed_schemas_are_fresh() {
        committed_is_fresh("events.schema.json", &events_schema_json());
        committed_is_fresh("report.schema.json", &report_schema_json());
    }

    #[test]
    fn a_line_is_one_json_object_with_the_envelope_and_the_event() {
        let line = StreamLine::of(
            &Event::RunAborted {
                reason: "too many failures".into(),
            },
            1_764_000_000_123,
        )
        .unwrap();
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format"], 1);
        assert_eq!(v["kind"], "event");
        assert_eq!(v["event"], "run_aborted");
        assert_eq!(v["reason"], "too many failures");
        assert_eq!(v["at"], "2025-11-24T16:00:00.123Z");
        let back: StreamLine = serde_json::from_str(&text).unwrap();
        assert_eq!(back, line);
    }

    #[test]
    fn a_reader_that_went_away_stops_the_writing_not_the_run() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = NdjsonWriter::new(Closed);
        w.event(&Event::RunInterrupted { drain_ms: 1 });
        assert!(w.closed);
        w.event(&Event::RunInterrupted { drain_ms: 1 });
    }
}
