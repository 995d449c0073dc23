//! Human output: results table, failed-jobs table, summary line.

use crate::abiquo::model::VmState;
use crate::exec::event::{FailedJob, PathTaken, Summary, VmResult};
use crate::report::RunReport;
use comfy_table::{ContentArrangement, Table, presets};

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Deterministic output (POWERBOOK_TEST_MODE=1): fixed width, durations redacted.
    pub test_mode: bool,
}

/// Table width in test mode.
pub const TEST_WIDTH: u16 = 160;

fn new_table(opts: RenderOptions) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if opts.test_mode {
        t.force_no_tty().set_width(TEST_WIDTH);
    }
    t
}

/// Results, failed jobs (if any), then the summary — what `run` prints on stdout.
pub fn render(report: &RunReport, opts: RenderOptions) -> String {
    let mut out = results_table(&report.results, opts);
    out.push('\n');
    if !report.failed_jobs.is_empty() {
        out.push_str("\nFailed jobs:\n");
        out.push_str(&failed_jobs_table(&report.failed_jobs, opts));
        out.push('\n');
    }
    if let Some(summary) = &report.summary {
        out.push('\n');
        out.push_str(&summary_lines(summary, opts));
    }
    out
}

pub fn results_table(results: &[VmResult], opts: RenderOptions) -> String {
    let mut t = new_table(opts);
    t.set_header(vec![
        "Step", "VM", "Action", "Before", "Path", "After", "Task", "Duration", "Result",
    ]);
    for r in results {
        t.add_row(vec![
            r.step_name.to_string(),
            r.vm.name.to_string(),
            r.action.to_string(),
            state_text(r.state_before.as_ref(), None),
            match r.path {
                PathTaken::NotStarted => "-".to_owned(),
                p => p.as_str().to_owned(),
            },
            state_text(r.state_after.as_ref(), r.deallocated_after),
            r.task_state
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            if r.state_before.is_none() && r.duration_ms == 0 {
                "-".to_owned()
            } else {
                duration_text(r.duration_ms, opts)
            },
            r.outcome.text(),
        ]);
    }
    t.to_string()
}

pub fn failed_jobs_table(jobs: &[FailedJob], opts: RenderOptions) -> String {
    let mut t = new_table(opts);
    t.set_header(vec![
        "VM",
        "Task",
        "Job",
        "Type",
        "Description",
        "State",
        "Rollback",
    ]);
    for j in jobs {
        let job = short_job_id(&j.job_id, &j.task_id);
        t.add_row(vec![
            j.vm.clone(),
            j.task_id.clone(),
            job,
            j.job_type.clone(),
            j.description.clone(),
            j.state.to_string(),
            j.rollback_state.to_string(),
        ]);
    }
    t.to_string()
}

/// "Run aborted: …" (if so) and the counts with the wall time.
pub fn summary_lines(s: &Summary, opts: RenderOptions) -> String {
    let c = &s.counts;
    let mut parts = vec![format!("{} ok", c.ok), format!("{} skipped", c.skipped)];
    parts.push(format!("{} failed", c.failed));
    if c.not_started > 0 {
        parts.push(format!("{} not started", c.not_started));
    }
    if c.interrupted > 0 {
        parts.push(format!("{} interrupted", c.interrupted));
    }
    let mut out = String::new();
    if let Some(reason) = &s.aborted {
        out.push_str(&format!("Run aborted: {reason}\n"));
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
    out.push_str(&format!(
        "Summary: {} VMs: {} in {wall}{requests}\n",
        c.total(),
        parts.join(", ")
    ));
    out
}

/// Job ids are `<task id>.<uuid>`: the task id has its own column, so the table shows the
/// start of the job's own part (the JSON report has both whole).
fn short_job_id(job_id: &str, task_id: &str) -> String {
    let own = job_id
        .strip_prefix(task_id)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(job_id);
    if own.chars().count() > 12 {
        let head: String = own.chars().take(8).collect();
        format!("{head}…")
    } else {
        own.to_owned()
    }
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
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let o = RenderOptions::default();
        assert_eq!(duration_text(1234, o), "1.2s");
        assert_eq!(duration_text(61_000, o), "1m01s");
        assert_eq!(
            duration_text(61_000, RenderOptions { test_mode: true }),
            "~"
        );
    }

    #[test]
    fn job_ids_lose_their_task_prefix_and_are_shortened() {
        let task = "e15b0aec-0a9c-4e37-bc68-10da7e5ec742";
        assert_eq!(
            short_job_id(
                &format!("{task}.1fae8217-e3d0-4ed8-bed1-f34c80c0aaee"),
                task
            ),
            "1fae8217…"
        );
        assert_eq!(short_job_id("job-7", task), "job-7");
    }

    #[test]
    fn deallocation_is_shown_with_the_state() {
        assert_eq!(
            state_text(Some(&VmState::Off), Some(true)),
            "OFF (deallocated)"
        );
        assert_eq!(state_text(Some(&VmState::Off), Some(false)), "OFF");
        assert_eq!(state_text(None, None), "-");
    }
}
