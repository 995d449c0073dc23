//! Human results of a run, for 10 VMs as for 10,000: a line per step with its counts, the
//! VMs that need attention (always all of them), the rest listed or counted, the failed
//! jobs with their whole ids, and the summary.

use crate::abiquo::model::{TaskState, VmState};
use crate::exec::event::{
    FailedJob, PathTaken, ResultCounts, StepInfo, Summary, VmOutcome, VmResult,
};
use crate::report::RunReport;
use crate::report::style::{Tone, cell, new_table, paint, plural, wrap};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

pub use crate::report::style::{RenderOptions, Show};

/// Steps, results, failed jobs (if any), then the summary: what `run` prints on stdout.
pub fn render(report: &RunReport, opts: RenderOptions) -> String {
    let mut out = String::new();
    if report.results.is_empty() {
        out.push_str("No VM results.\n");
    } else {
        out.push_str(&steps_table(&report.steps, &report.results, opts));
        out.push('\n');
        if !report.gates.is_empty() {
            out.push_str(&gates_lines(report, opts));
            out.push('\n');
        }
        out.push_str(&results_section(&report.results, opts));
    }
    if !report.failed_jobs.is_empty() {
        out.push('\n');
        out.push_str(&failed_jobs_section(report, opts));
    }
    if let Some(summary) = &report.summary {
        out.push('\n');
        out.push_str(&summary_lines(summary, &report.results, opts));
    }
    out
}

/// What one step did, from its results.
#[derive(Debug, Default)]
struct StepTotals {
    counts: ResultCounts,
    paths: BTreeMap<&'static str, usize>,
    first_start: Option<u64>,
    last_finish: Option<u64>,
}

fn step_totals(results: &[VmResult]) -> BTreeMap<usize, StepTotals> {
    let mut by_step: BTreeMap<usize, StepTotals> = BTreeMap::new();
    for r in results {
        let t = by_step.entry(r.step).or_default();
        t.counts.add(&r.outcome);
        if !matches!(r.path, PathTaken::Skipped | PathTaken::NotStarted) {
            *t.paths.entry(r.path.as_str()).or_default() += 1;
        }
        if let Some(at) = r.started_at {
            t.first_start = Some(t.first_start.map_or(at, |f| f.min(at)));
        }
        if let Some(at) = r.finished_at {
            t.last_finish = Some(t.last_finish.map_or(at, |l| l.max(at)));
        }
    }
    by_step
}

/// One row per step: how many VMs ended how, by which path, in how many waves and how long.
pub fn steps_table(steps: &[StepInfo], results: &[VmResult], opts: RenderOptions) -> String {
    let totals = step_totals(results);
    let mut t = new_table(opts);
    t.set_header(vec![
        "Step", "Action", "VMs", "ok", "skipped", "failed", "not done", "Paths", "Waves", "Time",
    ]);
    let count = |n: usize, tone: Tone| cell(n.to_string(), if n > 0 { tone } else { Tone::Plain });
    // Steps of the plan in order; results of a step the report does not describe still count.
    let mut rows: Vec<(usize, String, String, usize)> = steps
        .iter()
        .map(|s| (s.index, s.name.clone(), s.action.to_string(), s.waves))
        .collect();
    for (&index, _) in totals.iter() {
        if !steps.iter().any(|s| s.index == index)
            && let Some(r) = results.iter().find(|r| r.step == index)
        {
            rows.push((index, r.step_name.to_string(), r.action.to_string(), 0));
        }
    }
    for (index, name, action, waves) in rows {
        let empty = StepTotals::default();
        let s = totals.get(&index).unwrap_or(&empty);
        let c = &s.counts;
        let paths: Vec<String> = s.paths.iter().map(|(p, n)| format!("{n} {p}")).collect();
        let time = match (s.first_start, s.last_finish) {
            (Some(a), Some(b)) => duration_text(b.saturating_sub(a), opts),
            _ => "-".into(),
        };
        t.add_row(vec![
            cell(name, Tone::Plain),
            cell(action, Tone::Plain),
            cell(c.total().to_string(), Tone::Plain),
            count(c.ok, Tone::Good),
            count(c.skipped, Tone::Quiet),
            count(c.failed, Tone::Bad),
            count(c.not_started + c.interrupted, Tone::Warn),
            cell(
                if paths.is_empty() {
                    "-".into()
                } else {
                    paths.join(", ")
                },
                Tone::Plain,
            ),
            cell(
                if waves == 0 {
                    "-".into()
                } else {
                    waves.to_string()
                },
                Tone::Plain,
            ),
            cell(time, Tone::Plain),
        ]);
    }
    format!("{t}\n")
}

/// One line per gate checked: where, what, how it went.
fn gates_lines(report: &RunReport, opts: RenderOptions) -> String {
    let mut out = String::from("Gates:\n");
    for g in &report.gates {
        let name = |index: usize| {
            report
                .steps
                .iter()
                .find(|s| s.index == index)
                .map_or_else(|| format!("#{index}"), |s| format!("'{}'", s.name))
        };
        let step = name(g.step);
        let place = match (g.wave, g.after) {
            (Some(w), _) => format!("before wave {} of {step}", w + 1),
            (None, Some(dep)) => format!("after {}, before {step}", name(dep)),
            (None, None) => format!("before {step}"),
        };
        let verdict = if g.passed {
            paint("passed", Tone::Good, opts)
        } else {
            paint("FAILED", Tone::Bad, opts)
        };
        let line = format!(
            "{place}: {} {verdict} after {} attempt{} in {}: {}",
            g.check,
            g.attempts,
            if g.attempts == 1 { "" } else { "s" },
            duration_text(g.elapsed_ms, opts),
            g.detail
        );
        let _ = writeln!(out, "  {}", wrap(&line, usize::from(opts.width) - 2, 4));
    }
    out
}

/// Whether a result needs the operator's attention: it is always listed.
fn needs_attention(r: &VmResult) -> bool {
    !matches!(r.outcome, VmOutcome::Ok | VmOutcome::Skipped { .. })
}

/// The VM rows: every one of a small run (or with `--show all`); otherwise those that need
/// attention, then a line counting the rest.
pub fn results_section(results: &[VmResult], opts: RenderOptions) -> String {
    let all = opts.show.lists_all(results.len());
    let listed: Vec<&VmResult> = results
        .iter()
        .filter(|r| all || needs_attention(r))
        .collect();
    let mut out = String::new();
    if !listed.is_empty() {
        if !all {
            let _ = writeln!(out, "Needing attention ({}):", listed.len());
        }
        out.push_str(&results_table(&listed, opts));
        out.push('\n');
    }
    let rest = results.len() - listed.len();
    if rest > 0 {
        let mut c = ResultCounts::default();
        for r in results.iter().filter(|r| !needs_attention(r)) {
            c.add(&r.outcome);
        }
        let mut parts = Vec::new();
        if c.ok > 0 {
            parts.push(format!("{} ok", c.ok));
        }
        if c.skipped > 0 {
            parts.push(format!("{} skipped", c.skipped));
        }
        let more = if listed.is_empty() { "" } else { " more" };
        let line = format!(
            "… {rest}{more} VM results not listed: {}. `--show all` lists every one; \
             `--report FILE` writes them all as JSON.",
            parts.join(", ")
        );
        let _ = writeln!(out, "{}", wrap(&line, usize::from(opts.width), 2));
    }
    out
}

pub fn results_table(results: &[&VmResult], opts: RenderOptions) -> String {
    let mut t = new_table(opts);
    t.set_header(vec![
        "Step",
        "VM",
        "Before → After",
        "Path",
        "Task",
        "Time",
        "Result",
    ]);
    for r in results {
        let tone = match r.outcome {
            VmOutcome::Ok => Tone::Good,
            VmOutcome::Skipped { .. } => Tone::Quiet,
            VmOutcome::Failed { .. } => Tone::Bad,
            VmOutcome::NotStarted { .. } | VmOutcome::Interrupted { .. } => Tone::Warn,
        };
        let states = match (&r.state_before, &r.state_after) {
            (None, None) => "-".to_owned(),
            (before, after) => format!(
                "{} → {}",
                state_text(before.as_ref(), None),
                state_text(after.as_ref(), r.deallocated_after)
            ),
        };
        t.add_row(vec![
            cell(r.step_name.to_string(), Tone::Plain),
            cell(r.vm.name.to_string(), Tone::Plain),
            cell(states, Tone::Plain),
            cell(
                match r.path {
                    PathTaken::NotStarted => "-",
                    p => p.as_str(),
                },
                Tone::Plain,
            ),
            cell(task_text(r.task_state.as_ref()), Tone::Plain),
            cell(
                if r.state_before.is_none() && r.duration_ms == 0 {
                    "-".to_owned()
                } else {
                    duration_text(r.duration_ms, opts)
                },
                Tone::Plain,
            ),
            cell(r.outcome.text(), tone),
        ]);
    }
    t.to_string()
}

/// A task state in a word: the JSON report keeps the API's own spelling.
fn task_text(state: Option<&TaskState>) -> String {
    match state {
        None => "-".into(),
        Some(TaskState::FinishedSuccessfully) => "done".into(),
        Some(TaskState::FinishedUnsuccessfully) => "failed".into(),
        Some(TaskState::AckError) => "ack error".into(),
        Some(other) => other.as_str().to_lowercase(),
    }
}

/// The failed jobs of a small run (or with `--show all`); of a larger one those of the VMs
/// that need attention, the jobs of VMs that ended well anyway (a graceful shutdown that
/// fell back to a hard off) counted.
fn failed_jobs_section(report: &RunReport, opts: RenderOptions) -> String {
    if opts.show.lists_all(report.results.len()) {
        return failed_jobs_list(&report.failed_jobs, opts);
    }
    let attention: HashSet<&str> = report
        .results
        .iter()
        .filter(|r| needs_attention(r))
        .map(|r| &*r.vm.name)
        .collect();
    let (listed, recovered): (Vec<&FailedJob>, Vec<&FailedJob>) = report
        .failed_jobs
        .iter()
        .partition(|j| attention.contains(j.vm.as_str()));
    let listed: Vec<FailedJob> = listed.into_iter().cloned().collect();
    let mut out = if listed.is_empty() {
        String::new()
    } else {
        failed_jobs_list(&listed, opts)
    };
    if !recovered.is_empty() {
        let (lead, n) = (
            if listed.is_empty() {
                "Failed jobs:"
            } else {
                "…"
            },
            recovered.len(),
        );
        let more = if listed.is_empty() { "" } else { " more" };
        let line = format!(
            "{lead} {n}{more} of VMs that ended ok (e.g. a graceful shutdown that fell back \
             to a hard off). `--show all` lists them; the JSON report has them all."
        );
        let _ = writeln!(out, "{}", wrap(&line, usize::from(opts.width), 2));
    }
    out
}

/// Each failed job as a headline and its whole task and job ids, one per line, so they can
/// be copied into a ticket or an API call.
pub fn failed_jobs_list(jobs: &[FailedJob], opts: RenderOptions) -> String {
    let width = usize::from(opts.width);
    let mut out = format!("Failed jobs ({}):\n", jobs.len());
    for j in jobs {
        let headline = format!(
            "{}: {} job {}, rollback {}: {}",
            j.vm, j.job_type, j.state, j.rollback_state, j.description
        );
        let headline = wrap(&headline, width.saturating_sub(2), 4);
        let _ = writeln!(out, "  {}", paint(&headline, Tone::Bad, opts));
        let _ = writeln!(out, "    task {} ({})", j.task_id, j.task_type);
        let _ = writeln!(out, "    job  {}", j.job_id);
    }
    out
}

/// "Run aborted: …" (if so) and the counts with the wall time. Results are per step and VM;
/// the VMs are counted once however many steps they were in.
pub fn summary_lines(s: &Summary, results: &[VmResult], opts: RenderOptions) -> String {
    let c = &s.counts;
    let mut parts = vec![
        paint(&format!("{} ok", c.ok), Tone::Good, opts),
        format!("{} skipped", c.skipped),
    ];
    parts.push(if c.failed > 0 {
        paint(&format!("{} failed", c.failed), Tone::Bad, opts)
    } else {
        "0 failed".to_owned()
    });
    if c.not_started > 0 {
        parts.push(paint(
            &format!("{} not started", c.not_started),
            Tone::Warn,
            opts,
        ));
    }
    if c.interrupted > 0 {
        parts.push(paint(
            &format!("{} interrupted", c.interrupted),
            Tone::Warn,
            opts,
        ));
    }
    let mut out = String::new();
    if let Some(reason) = &s.aborted {
        let _ = writeln!(
            out,
            "{}",
            paint(&format!("Run aborted: {reason}"), Tone::Bad, opts)
        );
    }
    if s.interrupted {
        out.push_str("Run interrupted (Ctrl-C): in-flight tasks were drained\n");
    }
    let wall = duration_text(s.wall_ms, opts);
    let requests = if opts.test_mode {
        String::new()
    } else {
        format!(", {} API requests", s.api.requests)
    };
    let vms = results
        .iter()
        .map(|r| &*r.vm.href)
        .collect::<HashSet<_>>()
        .len();
    let steps = results.iter().map(|r| r.step).collect::<HashSet<_>>().len();
    let subject = match (steps > 1, vms == c.total()) {
        (false, _) => plural(c.total(), "VM", "VMs"),
        (true, true) => format!("{} in {steps} steps", plural(vms, "VM", "VMs")),
        (true, false) => format!(
            "{} in {steps} steps ({} results)",
            plural(vms, "VM", "VMs"),
            c.total()
        ),
    };
    let _ = writeln!(
        out,
        "Summary: {subject}: {} in {wall}{requests}",
        parts.join(", ")
    );
    out
}

fn state_text(state: Option<&VmState>, deallocated: Option<bool>) -> String {
    match (state, deallocated) {
        (None, _) => "-".into(),
        (Some(s), Some(true)) => format!("{s} (deallocated)"),
        (Some(s), _) => s.to_string(),
    }
}

fn duration_text(ms: u64, opts: RenderOptions) -> String {
    if opts.test_mode {
        return "~".into();
    }
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests;
