//! The page's markup: header, timeline (inline SVG), steps and failed VMs. Every value goes
//! through maud's escaping; only the page's own CSS and script are written unescaped.

use super::layout::{Chart, DENSITY_BINS, Drawn, StepLane, Tone, WaveLane};
use super::{RunSource, duration_text};
use crate::exec::event::{ResultCounts, VmOutcome, VmResult};
use crate::exec::status::FinalStatus;
use maud::{DOCTYPE, Markup, PreEscaped, html};

const CSS: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");
/// Counts failures (and refused loads) before anything else runs, so a test can tell the
/// page loaded without errors.
const ERROR_HOOK: &str = "(function(){var d=document.documentElement;function f(m){\
d.setAttribute('data-errors',String(Number(d.getAttribute('data-errors')||0)+1));\
d.setAttribute('data-last-error',String(m));}\
window.addEventListener('error',function(e){f(e.message||(e.target&&e.target.tagName)||'error');},true);\
document.addEventListener('securitypolicyviolation',function(e){f('blocked '+e.blockedURI);});})();";
/// Nothing but the page itself: no fetch, script, font or image from anywhere.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   img-src data:; base-uri 'none'; form-action 'none'";

/// Rows of the failed VMs table; past this the rest are counted (`runs show` lists them).
pub const MAX_FAILED_ROWS: usize = 2000;

const WIDTH: f64 = 1200.0;
const GUTTER: f64 = 220.0;
const RIGHT: f64 = 16.0;
const AXIS: f64 = 30.0;
const STEP_ROW: f64 = 22.0;
const DENSITY_HEIGHT: f64 = 64.0;
const LANE_GAP: f64 = 6.0;

/// Maps times to x.
struct Scale {
    t0: u64,
    t1: u64,
    span: f64,
}

impl Scale {
    /// x of `t`, held inside the chart.
    fn x(&self, t: u64) -> f64 {
        let t = t.clamp(self.t0, self.t1);
        GUTTER + (t - self.t0) as f64 / self.span * (WIDTH - GUTTER - RIGHT)
    }

    fn w(&self, a: u64, b: u64) -> f64 {
        (self.x(b) - self.x(a)).max(1.5)
    }
}

fn n(v: f64) -> String {
    format!("{v:.1}")
}

pub fn page(src: &RunSource<'_>, chart: &Chart) -> Markup {
    let report = src.report;
    let mut counts = ResultCounts::default();
    for r in &report.results {
        counts.add(&r.outcome);
    }
    let summary = report.summary.as_ref().filter(|_| src.ended);
    let status = FinalStatus::of(summary, &counts);
    let wall = src.last_ms.saturating_sub(src.started_ms);
    let title = format!("{} — {}", report.runbook, status.word());
    html! {
        (DOCTYPE)
        html lang="en" data-errors="0" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CSP);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "powerbook: " (title) }
                script { (PreEscaped(ERROR_HOOK)) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 {
                        span.verdict.(status.word()) data-verdict=(status.word()) { (status.word()) }
                        " " (report.runbook)
                    }
                    dl.facts {
                        dt { "Runbook" } dd { code { (src.runbook_path) } }
                        dt { "Endpoint" } dd { code { (report.endpoint) } }
                        dt { "Started" } dd { (report.started_at) }
                        dt { "Duration" } dd data-fact="duration" { (duration_text(wall)) }
                        dt { "Estimate" } dd data-fact="estimate" {
                            @match src.estimate {
                                Some(e) => { (duration_text(e.total_ms)) " (" (percent(wall, e.total_ms)) " of it taken)" }
                                None => { "not recorded" }
                            }
                        }
                        @if let Some(d) = src.plan.and_then(|p| p.deadline_ms) {
                            dt { "Deadline" } dd { (duration_text(d)) }
                        }
                        dt { "VMs" } dd.counts {
                            span.ok { (counts.ok) " ok" } " · "
                            span.skipped { (counts.skipped) " skipped" } " · "
                            span.failed { (counts.failed) " failed" } " · "
                            span { (counts.not_started) " not started" } " · "
                            span.interrupted { (counts.interrupted) " interrupted" }
                        }
                        @if src.resumes > 0 {
                            dt { "Resumed" } dd { (src.resumes) " time(s)" }
                        }
                        @if let Some(reason) = summary.and_then(|s| s.aborted.as_deref()) {
                            dt { "Aborted" } dd { (reason) }
                        }
                        @if !src.ended {
                            dt { "End" } dd { "the journal has no end record: the run crashed or is still going" }
                        }
                    }
                }
                main {
                    section {
                        h2 { "Timeline" }
                        (legend())
                        (timeline(src, chart))
                    }
                    section {
                        h2 { "Steps: estimate and actual" }
                        (steps_table(src, chart))
                    }
                    section {
                        h2 { "Failed VMs" }
                        (failed_table(&report.results))
                    }
                    @if !report.gates.is_empty() {
                        section {
                            h2 { "Gates" }
                            (gates_table(src))
                        }
                    }
                }
                footer { "powerbook " (report.powerbook) " · runbook sha256 " code { (report.source_hash) } }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{}%", part.saturating_mul(100) / whole)
}

fn legend() -> Markup {
    html! {
        ul.legend {
            @for tone in Tone::ALL {
                li { span.swatch.(tone.class()) {} (tone.class()) }
            }
            li { span.swatch.estimate {} "estimate" }
            li { span.swatch.pause {} "pause" }
            li { span.swatch.gate {} "gate" }
            li { span.swatch.deadline {} "deadline" }
        }
    }
}

/// Height of one wave lane, and of its bar rows.
fn wave_height(wave: &WaveLane) -> (f64, f64) {
    match &wave.drawn {
        Drawn::Density { .. } => (DENSITY_HEIGHT, 0.0),
        Drawn::Bars { rows, .. } => {
            let rows = (*rows).max(1) as f64;
            let row = if rows <= 14.0 {
                12.0
            } else {
                (180.0 / rows).max(2.0)
            };
            (rows * row + 4.0, row)
        }
    }
}

fn timeline(src: &RunSource<'_>, chart: &Chart) -> Markup {
    let scale = Scale {
        t0: chart.t0,
        t1: chart.t1,
        span: (chart.t1 - chart.t0).max(1) as f64,
    };
    let mut height = AXIS;
    let mut tops = Vec::with_capacity(chart.steps.len());
    for s in &chart.steps {
        tops.push(height);
        height += STEP_ROW;
        for w in &s.waves {
            height += wave_height(w).0 + LANE_GAP;
        }
        height += LANE_GAP;
    }
    height += 8.0;
    let ticks = ticks(chart.t1 - chart.t0);
    let deadline = src
        .plan
        .and_then(|p| p.deadline_ms)
        .map(|d| chart.t0 + d)
        .filter(|d| *d <= chart.t1);
    let estimate_end = src
        .estimate
        .map(|e| chart.t0 + e.total_ms)
        .filter(|t| *t <= chart.t1);
    html! {
        div.chart {
            svg.timeline viewBox=(format!("0 0 {WIDTH} {}", n(height))) width=(WIDTH) height=(n(height)) role="img" aria-label="Timeline of the run" {
                defs {
                    pattern #hatch patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)" {
                        rect width="3" height="6" fill="#c9b27c" {}
                    }
                }
                g.axis {
                    @for t in &ticks {
                        line x1=(n(scale.x(chart.t0 + t))) x2=(n(scale.x(chart.t0 + t))) y1=(n(AXIS - 6.0)) y2=(n(height)) {}
                        text x=(n(scale.x(chart.t0 + t))) y=(n(AXIS - 10.0)) text-anchor="middle" { "+" (duration_text(*t)) }
                    }
                }
                @for (s, top) in chart.steps.iter().zip(tops) {
                    (step_lane(src, s, &scale, top))
                }
                @if let Some(end) = estimate_end {
                    g.marker.estimate-end {
                        line x1=(n(scale.x(end))) x2=(n(scale.x(end))) y1=(n(AXIS - 4.0)) y2=(n(height)) {}
                        text x=(n(scale.x(end) - 3.0)) y=(n(height - 4.0)) text-anchor="end" { "estimate" }
                        title { "estimated end: +" (duration_text(end - chart.t0)) }
                    }
                }
                @if let Some(d) = deadline {
                    g.marker.deadline data-deadline=(d - chart.t0) {
                        line x1=(n(scale.x(d))) x2=(n(scale.x(d))) y1=(n(AXIS - 4.0)) y2=(n(height)) {}
                        text x=(n(scale.x(d) - 3.0)) y=(n(AXIS + 10.0)) text-anchor="end" { "deadline" }
                        title { "deadline: +" (duration_text(d - chart.t0)) }
                    }
                }
                @for stop in &src.marks.stops {
                    g.marker.stop {
                        line x1=(n(scale.x(stop.at_ms))) x2=(n(scale.x(stop.at_ms))) y1=(n(AXIS - 4.0)) y2=(n(height)) {}
                        text x=(n(scale.x(stop.at_ms) + 3.0)) y=(n(height - 4.0)) { (stop.what) }
                        title { (stop.what) " at +" (duration_text(stop.at_ms.saturating_sub(chart.t0))) }
                    }
                }
            }
        }
    }
}

fn step_lane(src: &RunSource<'_>, s: &StepLane, scale: &Scale, top: f64) -> Markup {
    let mut y = top + STEP_ROW;
    let mut waves = Vec::with_capacity(s.waves.len());
    for w in &s.waves {
        let (h, row) = wave_height(w);
        waves.push((w, y, h, row));
        y += h + LANE_GAP;
    }
    let gates: Vec<_> = src
        .marks
        .gates
        .iter()
        .filter(|(_, g)| g.step == s.step && g.wave.is_none())
        .collect();
    html! {
        g.lane.step data-step=(s.step) {
            text.label x="6" y=(n(top + 15.0)) { (s.name) " · " (s.action) }
            @if let Some((a, b)) = s.estimate {
                rect.estimate x=(n(scale.x(a))) y=(n(top + 3.0)) width=(n(scale.w(a, b))) height=(n(STEP_ROW - 6.0)) {
                    title { (s.name) ": estimated +" (duration_text(a - scale.t0)) " for " (duration_text(b - a)) }
                }
            }
            @if let Some((a, b)) = s.span {
                rect.span x=(n(scale.x(a))) y=(n(top + 8.0)) width=(n(scale.w(a, b))) height="6" {
                    title { (s.name) ": +" (duration_text(a - scale.t0)) " for " (duration_text(b - a)) }
                }
            }
            @for (at, g) in &gates {
                (gate_mark(g, *at, scale, top + STEP_ROW / 2.0))
            }
            @for (w, wave_top, h, row) in waves {
                (wave_lane(src, s, w, scale, wave_top, h, row))
            }
        }
    }
}

fn gate_mark(g: &crate::exec::event::GateResult, at: u64, scale: &Scale, cy: f64) -> Markup {
    let x = scale.x(at);
    let points = format!(
        "{},{} {},{} {},{} {},{}",
        n(x),
        n(cy - 6.0),
        n(x + 6.0),
        n(cy),
        n(x),
        n(cy + 6.0),
        n(x - 6.0),
        n(cy)
    );
    let edge = g.after.map(|a| format!(" (on the edge from step {a})"));
    html! {
        polygon.gate.(if g.passed { "passed" } else { "refused" }) points=(points) data-gate=(g.check) {
            title {
                "gate " (g.check) (edge.unwrap_or_default()) ": "
                (if g.passed { "passed" } else { "refused" })
                " after " (g.attempts) " attempt(s), " (duration_text(g.elapsed_ms))
                @if !g.detail.is_empty() { " — " (g.detail) }
            }
        }
    }
}

fn wave_lane(
    src: &RunSource<'_>,
    s: &StepLane,
    w: &WaveLane,
    scale: &Scale,
    top: f64,
    height: f64,
    row: f64,
) -> Markup {
    let gates: Vec<_> = src
        .marks
        .gates
        .iter()
        .filter(|(_, g)| g.step == s.step && g.wave == Some(w.wave))
        .collect();
    let count = match &w.drawn {
        Drawn::Bars { bars, .. } => bars.len(),
        Drawn::Density { count, .. } => *count,
    };
    html! {
        g.lane.wave data-step=(s.step) data-wave=(w.wave) data-bars=(count) {
            rect.lane-bg x=(n(GUTTER)) y=(n(top)) width=(n(WIDTH - GUTTER - RIGHT)) height=(n(height)) {}
            text.label.sub x="18" y=(n(top + height.min(16.0) - 3.0)) {
                "wave " (w.wave + 1) " · " (w.vms) " VM" (if w.vms == 1 { "" } else { "s" })
            }
            @if let Some((at, ms)) = w.pause {
                rect.pause x=(n(scale.x(at))) y=(n(top)) width=(n(scale.w(at, at + ms))) height=(n(height)) fill="url(#hatch)" {
                    title { "pause of " (duration_text(ms)) " before wave " (w.wave + 1) }
                }
            }
            @match &w.drawn {
                Drawn::Bars { bars, .. } => {
                    @for b in bars {
                        rect.bar.(b.tone.class()) x=(n(scale.x(b.start))) y=(n(top + 2.0 + b.row as f64 * row)) width=(n(scale.w(b.start, b.end))) height=(n((row - 1.0).max(1.0))) data-vm=(&*b.vm) {
                            title { (&*b.vm) ": " (b.note) }
                        }
                    }
                }
                Drawn::Density { count, bins, peak } => {
                    @let bin_w = (WIDTH - GUTTER - RIGHT) / DENSITY_BINS as f64;
                    g.density data-bars=(count) data-peak=(peak) {
                        title { (count) " VMs, drawn as how many were in flight (peak " (peak) ")" }
                        @for (i, y, h, tone) in bands(bins, *peak, top, height) {
                            rect.band.(tone.class()) x=(n(GUTTER + i as f64 * bin_w)) y=(n(y)) width=(n(bin_w + 0.2)) height=(n(h)) {}
                        }
                    }
                }
            }
            @for (at, g) in &gates {
                (gate_mark(g, *at, scale, top + height / 2.0))
            }
        }
    }
}

/// The stacked rectangles of a density band: (bin, y, height, tone), each bin's tones
/// stacked from the lane's bottom, the peak filling the lane.
fn bands(bins: &[[u32; 5]], peak: u32, top: f64, height: f64) -> Vec<(usize, f64, f64, Tone)> {
    let mut out = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let mut base = top + height - 1.0;
        for (count, tone) in bin.iter().zip(Tone::ALL) {
            if *count > 0 {
                let h = f64::from(*count) / f64::from(peak.max(1)) * (height - 4.0);
                base -= h;
                out.push((i, base, h, tone));
            }
        }
    }
    out
}

/// Tick offsets (ms) at a round step, about eight over the span.
fn ticks(span: u64) -> Vec<u64> {
    const STEPS: [u64; 16] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000,
    ];
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8)
        .unwrap_or_else(|| (span / 8).max(1));
    (0..=span / step).map(|i| i * step).collect()
}

fn steps_table(src: &RunSource<'_>, chart: &Chart) -> Markup {
    let t0 = chart.t0;
    html! {
        table.sortable.steps {
            thead { tr {
                th { "Step" } th { "Action" } th { "VMs" } th { "Waves" }
                th { "Estimated start" } th { "Estimated duration" }
                th { "Actual start" } th { "Actual duration" } th { "Failed" }
            } }
            tbody {
                @for s in &chart.steps {
                    @let vms = src.report.results.iter().filter(|r| r.step == s.step).count();
                    @let failed = src.report.results.iter().filter(|r| r.step == s.step && r.outcome.is_failure()).count();
                    tr data-step=(s.step) {
                        td { (s.name) }
                        td { (s.action) }
                        td data-sort=(vms) { (vms) }
                        td data-sort=(s.waves.len()) { (s.waves.len()) }
                        @match s.estimate {
                            Some((a, b)) => {
                                td data-sort=(a - t0) { "+" (duration_text(a - t0)) }
                                td data-sort=(b - a) { (duration_text(b - a)) }
                            }
                            None => { td data-sort="0" { "-" } td data-sort="0" { "-" } }
                        }
                        @match s.span {
                            Some((a, b)) => {
                                td data-sort=(a - t0) { "+" (duration_text(a.saturating_sub(t0))) }
                                td data-sort=(b - a) { (duration_text(b - a)) }
                            }
                            None => { td data-sort="0" { "not started" } td data-sort="0" { "-" } }
                        }
                        td.failed[failed > 0] data-sort=(failed) { (failed) }
                    }
                }
            }
        }
    }
}

fn failed_table(results: &[VmResult]) -> Markup {
    let failed: Vec<&VmResult> = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                VmOutcome::Failed { .. } | VmOutcome::Interrupted { .. }
            )
        })
        .collect();
    if failed.is_empty() {
        return html! { p.none { "No VM failed." } };
    }
    let shown = failed.len().min(MAX_FAILED_ROWS);
    html! {
        p.hint { "Click a column to sort." }
        table.sortable.failed-vms {
            thead { tr {
                th { "VM" } th { "Step" } th { "Action" } th { "Outcome" }
                th { "State before" } th { "State after" } th { "Task" } th { "Duration" }
                th { "Jobs" } th { "Rollback" }
            } }
            tbody {
                @for r in &failed[..shown] {
                    tr.failed-vm data-vm=(&*r.vm.name) {
                        td.vm { (&*r.vm.name) }
                        td data-sort=(r.step) { (&*r.step_name) }
                        td { (r.action) " (" (r.path.as_str()) ")" }
                        td { (r.outcome.text()) }
                        td { (r.state_before.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())) }
                        td { (r.state_after.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())) }
                        td { (r.task_state.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())) }
                        td data-sort=(r.duration_ms) { (duration_text(r.duration_ms)) }
                        td.jobs {
                            @if r.failed_jobs.is_empty() { "-" }
                            @for j in &r.failed_jobs {
                                div { (j.job_type) " " (j.state) ": " (j.description) }
                            }
                        }
                        td {
                            @if r.failed_jobs.is_empty() { "-" }
                            @for j in &r.failed_jobs {
                                div { (j.rollback_state) }
                            }
                        }
                    }
                }
            }
        }
        @if failed.len() > shown {
            p.hint { "… and " (failed.len() - shown) " more: `powerbook runs show JOURNAL --show problems` lists them all." }
        }
    }
}

fn gates_table(src: &RunSource<'_>) -> Markup {
    html! {
        table.sortable.gates {
            thead { tr {
                th { "Step" } th { "Where" } th { "Check" } th { "Result" } th { "Attempts" } th { "Took" } th { "Detail" }
            } }
            tbody {
                @for g in &src.report.gates {
                    tr {
                        td data-sort=(g.step) { (g.step) }
                        td {
                            @match (g.wave, g.after) {
                                (Some(w), _) => { "before wave " (w + 1) }
                                (None, Some(a)) => { "after step " (a) }
                                (None, None) => { "before the step" }
                            }
                        }
                        td { code { (g.check) } }
                        td.(if g.passed { "ok" } else { "failed" }) { (if g.passed { "passed" } else { "refused" }) }
                        td data-sort=(g.attempts) { (g.attempts) }
                        td data-sort=(g.elapsed_ms) { (duration_text(g.elapsed_ms)) }
                        td { (g.detail) }
                    }
                }
            }
        }
    }
}
