//! The timeline's geometry, apart from its markup: lanes (one per step, one per wave of it),
//! each VM's bar from its request to its terminal state, bars packed into rows, and a lane
//! of more than [`DENSITY_THRESHOLD`] bars aggregated into a density band.

use super::{Marks, RunSource};
use crate::exec::event::{VmOutcome, VmResult};
use std::collections::BTreeMap;
use std::sync::Arc;

/// More bars than this in one lane are drawn as a density band instead.
pub const DENSITY_THRESHOLD: usize = 300;
/// Time bins of a density band.
pub const DENSITY_BINS: usize = 240;

/// How a bar is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    Ok,
    Skipped,
    Failed,
    Interrupted,
    /// Requested, but the journal ends before its result (a crash, or still running).
    Unfinished,
}

impl Tone {
    pub const ALL: [Tone; 5] = [
        Tone::Ok,
        Tone::Skipped,
        Tone::Failed,
        Tone::Interrupted,
        Tone::Unfinished,
    ];

    pub fn of(outcome: &VmOutcome) -> Tone {
        match outcome {
            VmOutcome::Ok => Tone::Ok,
            VmOutcome::Skipped { .. } | VmOutcome::NotStarted { .. } => Tone::Skipped,
            VmOutcome::Failed { .. } => Tone::Failed,
            VmOutcome::Interrupted { .. } => Tone::Interrupted,
        }
    }

    /// The CSS class (and legend word).
    pub fn class(self) -> &'static str {
        match self {
            Tone::Ok => "ok",
            Tone::Skipped => "skipped",
            Tone::Failed => "failed",
            Tone::Interrupted => "interrupted",
            Tone::Unfinished => "unfinished",
        }
    }
}

/// One VM's action in one step, in ms since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub vm: Arc<str>,
    pub start: u64,
    pub end: u64,
    pub tone: Tone,
    /// What the tooltip says after the VM's name.
    pub note: String,
    /// Row in its lane (packed so bars do not overlap).
    pub row: usize,
}

/// A lane's bars, drawn one by one or aggregated.
#[derive(Debug, Clone, PartialEq)]
pub enum Drawn {
    Bars {
        bars: Vec<Bar>,
        rows: usize,
    },
    /// `bins[i][tone]`: VMs of that tone in flight during bin `i` (of equal length over the
    /// chart's span).
    Density {
        count: usize,
        bins: Vec<[u32; 5]>,
        peak: u32,
    },
}

/// One wave of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveLane {
    pub wave: usize,
    /// VMs the plan put in the wave (those with a bar when the journal has no plan).
    pub vms: usize,
    pub drawn: Drawn,
    /// The pause before this wave: (start, length ms).
    pub pause: Option<(u64, u64)>,
}

/// One step: its own row (actual span, estimate, gates) and its waves.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLane {
    pub step: usize,
    pub name: String,
    pub action: String,
    pub span: Option<(u64, u64)>,
    /// The plan's estimate: (start, end), ms since the epoch.
    pub estimate: Option<(u64, u64)>,
    pub waves: Vec<WaveLane>,
}

/// The whole chart: lanes and the time span they are drawn over.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub t0: u64,
    pub t1: u64,
    pub steps: Vec<StepLane>,
}

impl Chart {
    pub fn of(src: &RunSource<'_>) -> Chart {
        let t0 = src.started_ms;
        let mut bars_by_lane: BTreeMap<(usize, usize), Vec<Bar>> = BTreeMap::new();
        let wave_of = |step: usize, target: usize| -> usize {
            src.plan
                .and_then(|p| p.steps.iter().find(|s| s.index == step))
                .and_then(|s| s.waves.iter().position(|w| w.contains(&target)))
                .unwrap_or(0)
        };
        let mut done = std::collections::HashSet::new();
        for r in &src.report.results {
            done.insert((r.step, r.target));
            if let Some(bar) = bar_of(r, src.marks) {
                bars_by_lane
                    .entry((r.step, wave_of(r.step, r.target)))
                    .or_default()
                    .push(bar);
            }
        }
        for (&(step, target), (at, vm)) in &src.marks.acting {
            if done.contains(&(step, target)) {
                continue;
            }
            bars_by_lane
                .entry((step, wave_of(step, target)))
                .or_default()
                .push(Bar {
                    vm: vm.clone(),
                    start: *at,
                    end: src.last_ms.max(*at),
                    tone: Tone::Unfinished,
                    note: "requested; the journal has no result".into(),
                    row: 0,
                });
        }
        let mut t1 = src.last_ms.max(t0 + 1000);
        for bars in bars_by_lane.values() {
            for b in bars {
                t1 = t1.max(b.end);
            }
        }
        // The estimate and the deadline widen the chart only when they are near: a day-long
        // deadline (or a far-off estimate) on a minute's run would squash every bar. Past the
        // chart they are still in the header and the steps table.
        let actual = t1 - t0;
        let near = |ms: u64| ms <= actual * 2;
        if let Some(total) = src.estimate.map(|e| e.total_ms).filter(|ms| near(*ms)) {
            t1 = t1.max(t0 + total);
        }
        if let Some(deadline) = src.plan.and_then(|p| p.deadline_ms).filter(|ms| near(*ms)) {
            t1 = t1.max(t0 + deadline);
        }
        // Per step: index, name, action and the size of each wave (None: unknown).
        let step_list: Vec<(usize, String, String, Vec<Option<usize>>)> = match src.plan {
            Some(plan) => plan
                .steps
                .iter()
                .map(|s| {
                    let mut waves: Vec<_> = s.waves.iter().map(|w| Some(w.len())).collect();
                    if waves.is_empty() {
                        waves.push(Some(0));
                    }
                    (s.index, s.name.to_string(), s.action.to_string(), waves)
                })
                .collect(),
            None => src
                .report
                .steps
                .iter()
                .map(|s| (s.index, s.name.clone(), s.action.to_string(), vec![None]))
                .collect(),
        };
        let steps = step_list
            .into_iter()
            .map(|(step, name, action, waves)| {
                let estimate = src
                    .estimate
                    .and_then(|e| e.steps.iter().find(|s| s.step == step))
                    .map(|s| (t0 + s.start_ms, t0 + s.start_ms + s.duration_ms));
                let span = src
                    .marks
                    .step_spans
                    .get(&step)
                    .and_then(|(a, b)| a.map(|a| (a, b.unwrap_or(src.last_ms).max(a))));
                let waves = waves
                    .into_iter()
                    .enumerate()
                    .map(|(wave, size)| {
                        let bars = bars_by_lane.remove(&(step, wave)).unwrap_or_default();
                        let pause = src
                            .marks
                            .pauses
                            .iter()
                            .find(|p| p.step == step && p.wave == wave)
                            .map(|p| (p.at_ms, p.pause_ms));
                        WaveLane {
                            wave,
                            vms: size.unwrap_or(bars.len()),
                            drawn: draw(bars, t0, t1),
                            pause,
                        }
                    })
                    .collect();
                StepLane {
                    step,
                    name,
                    action,
                    span,
                    estimate,
                    waves,
                }
            })
            .collect();
        Chart { t0, t1, steps }
    }
}

/// The bar of a VM that has a result: from its request (else from when it was started) to
/// its result. None when it never started.
fn bar_of(r: &VmResult, marks: &Marks) -> Option<Bar> {
    let requested = marks.acting.get(&(r.step, r.target)).map(|(at, _)| *at);
    let start = requested.or(r.started_at)?;
    let end = r.finished_at.unwrap_or(start + r.duration_ms).max(start);
    let tone = Tone::of(&r.outcome);
    let states = match (&r.state_before, &r.state_after) {
        (Some(a), Some(b)) => format!(", {a} → {b}"),
        _ => String::new(),
    };
    Some(Bar {
        vm: r.vm.name.clone(),
        start,
        end,
        tone,
        note: format!(
            "{} ({}){states}, {}: {}",
            r.action,
            r.path.as_str(),
            super::duration_text(end - start),
            r.outcome.text()
        ),
        row: 0,
    })
}

/// Packs bars into rows (first fit by start), or bins them into a density band.
fn draw(mut bars: Vec<Bar>, t0: u64, t1: u64) -> Drawn {
    if bars.len() > DENSITY_THRESHOLD {
        let span = (t1 - t0).max(1) as f64;
        let mut bins = vec![[0u32; 5]; DENSITY_BINS];
        for b in &bars {
            let bin = |t: u64| {
                let x = (t.saturating_sub(t0)) as f64 / span * DENSITY_BINS as f64;
                (x as usize).min(DENSITY_BINS - 1)
            };
            let tone = Tone::ALL.iter().position(|t| *t == b.tone).unwrap_or(0);
            for slot in &mut bins[bin(b.start)..=bin(b.end)] {
                slot[tone] += 1;
            }
        }
        let peak = bins
            .iter()
            .map(|b| b.iter().sum::<u32>())
            .max()
            .unwrap_or(0);
        return Drawn::Density {
            count: bars.len(),
            bins,
            peak,
        };
    }
    bars.sort_by(|a, b| (a.start, a.end, &a.vm).cmp(&(b.start, b.end, &b.vm)));
    let mut row_ends: Vec<u64> = Vec::new();
    for b in &mut bars {
        match row_ends.iter().position(|end| *end <= b.start) {
            Some(row) => {
                row_ends[row] = b.end;
                b.row = row;
            }
            None => {
                b.row = row_ends.len();
                row_ends.push(b.end);
            }
        }
    }
    Drawn::Bars {
        rows: row_ends.len(),
        bars,
    }
}
