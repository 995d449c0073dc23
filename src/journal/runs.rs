//! Run history: the journals in a directory as a table, and one run's report rebuilt from
//! its journal (the same results table `run` printed).

use crate::exec::event::{ResultCounts, StepInfo, Summary};
use crate::exec::status::FinalStatus;
use crate::journal::{RunView, load};
use crate::report::style::{RenderOptions, new_table};
use crate::report::{REPORT_FORMAT, RunReport};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One line of `powerbook runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    pub journal: String,
    pub runbook: String,
    pub started_at: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub counts: ResultCounts,
    /// VMs of the plan without a final result (not started, interrupted, or never reached
    /// before a crash): what a resume would still do.
    pub not_done: usize,
    /// `succeeded`, `failed`, `aborted`, `interrupted`, `running` (no end record yet, and a
    /// live powerbook holds the journal) or `crashed` (no end record, and none does).
    pub status: String,
    pub resumes: usize,
}

/// The status of a run, telling a run in progress from one that died: a writing powerbook
/// holds an exclusive lock on its journal until it exits (the system drops it even on
/// SIGKILL).
fn status_word(status: FinalStatus, journal: &Path) -> &'static str {
    if status != FinalStatus::Incomplete {
        return status.word();
    }
    if is_held(journal) {
        "running"
    } else {
        "crashed"
    }
}

/// Whether another process holds the journal's lock. Probed with a shared lock, dropped at
/// once.
pub fn is_held(journal: &Path) -> bool {
    let Ok(file) = std::fs::File::open(journal) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}

/// Every `*.jsonl` journal in `dir`, oldest first, and what could not be read.
pub fn list_runs(dir: &Path) -> (Vec<RunEntry>, Vec<String>) {
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (runs, problems),
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", dir.display()));
            return (runs, problems);
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        match load(&path) {
            Ok(journal) => {
                let view = RunView::of(&journal);
                let mut counts = ResultCounts::default();
                for r in view.results() {
                    counts.add(&r.outcome);
                }
                let total = view
                    .plan
                    .as_ref()
                    .map_or(0, crate::plan::Plan::total_targets);
                let not_done = total.saturating_sub(counts.ok + counts.skipped + counts.failed);
                runs.push(RunEntry {
                    journal: path.display().to_string(),
                    runbook: view.header.runbook_name.clone(),
                    started_at: view.header.started_at.clone(),
                    started_ms: view.header.started_ms,
                    duration_ms: view.last_ms.saturating_sub(view.header.started_ms),
                    status: status_word(FinalStatus::of(view.summary.as_ref(), &counts), &path)
                        .to_owned(),
                    counts,
                    not_done,
                    resumes: view.resumes,
                });
            }
            Err(e) => problems.push(e),
        }
    }
    runs.sort_by(|a, b| (a.started_ms, &a.journal).cmp(&(b.started_ms, &b.journal)));
    (runs, problems)
}

pub fn runs_table(runs: &[RunEntry], opts: RenderOptions) -> String {
    let mut t = new_table(opts);
    t.set_header(vec![
        "Runbook", "Started", "Duration", "OK", "Failed", "Skipped", "Not done", "Status",
        "Journal",
    ]);
    for r in runs {
        let status = match r.resumes {
            0 => r.status.clone(),
            n => format!("{} (resumed {n}×)", r.status),
        };
        t.add_row(vec![
            r.runbook.clone(),
            if opts.test_mode {
                "~".into()
            } else {
                r.started_at.clone()
            },
            if opts.test_mode {
                "~".into()
            } else {
                humantime::format_duration(std::time::Duration::from_secs(r.duration_ms / 1000))
                    .to_string()
            },
            r.counts.ok.to_string(),
            r.counts.failed.to_string(),
            r.counts.skipped.to_string(),
            r.not_done.to_string(),
            status,
            r.journal.clone(),
        ]);
    }
    format!("{t}\n")
}

/// The run's report as `run` built it: the latest result of every VM, and the summary of
/// the last segment (or one made from the results when the run did not get to its end).
pub fn report_of(view: &RunView) -> RunReport {
    let results = view.results();
    let summary = view.summary.clone().unwrap_or_else(|| {
        let mut counts = ResultCounts::default();
        for r in &results {
            counts.add(&r.outcome);
        }
        Summary {
            counts,
            wall_ms: view.last_ms.saturating_sub(view.header.started_ms),
            aborted: view.aborted.clone(),
            interrupted: view.interrupted,
            api: crate::abiquo::client::ClientStats::default(),
        }
    });
    RunReport {
        format: REPORT_FORMAT,
        kind: crate::report::kind::RUN_REPORT.to_owned(),
        powerbook: view.header.powerbook.clone(),
        runbook: view.header.runbook_name.clone(),
        source_hash: view.header.source_hash.clone(),
        endpoint: view.header.endpoint.clone(),
        started_at: view.header.started_at.clone(),
        steps: view
            .plan
            .as_ref()
            .map(StepInfo::of_plan)
            .unwrap_or_default(),
        failed_jobs: results
            .iter()
            .flat_map(|r| r.failed_jobs.iter().cloned())
            .collect(),
        results,
        gates: view.gates.clone(),
        summary: Some(summary),
    }
}
