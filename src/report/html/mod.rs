//! The run as one self-contained HTML page (`powerbook report JOURNAL --html FILE`, `run
//! --html FILE`): a header with the verdict, a timeline (one lane per step and per wave,
//! each VM's action a bar coloured by outcome, pauses, gates, the deadline and the plan's
//! estimate drawn), the estimate beside the actual per step, and a sortable table of the
//! failed VMs. Drawn from what a journal holds, so crashed and resumed runs have one too.
//!
//! Markup goes through `maud`, which escapes every value: a VM named `<script>` is text.
//! The page fetches nothing (its CSS and script are inline, and its content security
//! policy forbids anything else).

mod layout;
mod page;

pub use layout::{DENSITY_THRESHOLD, Tone};

use crate::exec::event::{Event, GateResult};
use crate::plan::Plan;
use crate::plan::estimate::Estimate;
use crate::report::RunReport;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Everything the page is drawn from.
#[derive(Debug, Clone, Copy)]
pub struct RunSource<'a> {
    pub report: &'a RunReport,
    pub plan: Option<&'a Plan>,
    /// The runbook file the run was made from.
    pub runbook_path: &'a str,
    /// When the run started and its last record, ms since the epoch.
    pub started_ms: u64,
    pub last_ms: u64,
    /// The plan's estimate, when the run recorded one.
    pub estimate: Option<&'a Estimate>,
    pub marks: &'a Marks,
    /// Whether the run (or its last resume) recorded its end.
    pub ended: bool,
    pub resumes: usize,
}

/// The timed events a timeline needs, gathered from a journal's records.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Per step: when it started and finished.
    pub step_spans: BTreeMap<usize, (Option<u64>, Option<u64>)>,
    pub pauses: Vec<Pause>,
    /// Each gate with the time its check ended.
    pub gates: Vec<(u64, GateResult)>,
    /// Per (step, target): the first request sent for the VM, and its name.
    pub acting: HashMap<(usize, usize), (u64, Arc<str>)>,
    /// Aborts, interruptions and resumes.
    pub stops: Vec<Stop>,
}

/// The pause before a wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub step: usize,
    pub wave: usize,
    pub at_ms: u64,
    pub pause_ms: u64,
}

/// A moment the whole run was affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub at_ms: u64,
    pub what: String,
}

impl Marks {
    /// Notes one event recorded at `at_ms`.
    pub fn note(&mut self, at_ms: u64, event: &Event) {
        match event {
            Event::StepStarted { step, .. } => {
                let span = self.step_spans.entry(*step).or_default();
                span.0.get_or_insert(at_ms);
            }
            Event::StepFinished { step, .. } => {
                self.step_spans.entry(*step).or_default().1 = Some(at_ms);
            }
            Event::WavePaused {
                step,
                wave,
                pause_ms,
            } => self.pauses.push(Pause {
                step: *step,
                wave: *wave,
                at_ms,
                pause_ms: *pause_ms,
            }),
            Event::GateChecked(gate) => self.gates.push((at_ms, gate.clone())),
            Event::VmActing {
                step, target, vm, ..
            } => {
                self.acting
                    .entry((*step, *target))
                    .or_insert_with(|| (at_ms, vm.name.clone()));
            }
            Event::RunAborted { reason } => self.stops.push(Stop {
                at_ms,
                what: format!("aborted: {reason}"),
            }),
            Event::RunInterrupted { .. } => self.stops.push(Stop {
                at_ms,
                what: "interrupted".into(),
            }),
            _ => {}
        }
    }

    /// A `resume` continued the run at `at_ms`.
    pub fn resumed(&mut self, at_ms: u64) {
        self.stops.push(Stop {
            at_ms,
            what: "resumed".into(),
        });
    }
}

/// The page.
pub fn render(src: &RunSource<'_>) -> String {
    page::page(src, &layout::Chart::of(src)).into_string()
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = ms / 60_000;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

#[cfg(test)]
mod tests;
