//! `powerbook report JOURNAL --html FILE`: one self-contained HTML page of a run, drawn from
//! its journal alone (finished, crashed or resumed alike). `run` and `resume` write the same
//! page with `--html FILE` once the run is over.

use crate::cli::ReportArgs;
use crate::commands::session::load_reporting;
use crate::exit::Outcome;
use crate::journal::runs::report_of;
use crate::journal::{Journal, Record, RunView};
use crate::report::html::{self, Marks, RunSource};
use std::path::Path;

pub fn report(args: &ReportArgs) -> Outcome {
    let journal = match load_reporting(&args.journal) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    if write_html(&journal, &args.html) {
        Outcome::Success
    } else {
        Outcome::SomeFailed
    }
}

/// The page of the run in `journal`.
pub fn html_of(journal: &Journal) -> String {
    let view = RunView::of(journal);
    let report = report_of(&view);
    let mut marks = Marks::default();
    for record in &journal.records {
        match record {
            Record::Event { at_ms, event } => marks.note(*at_ms, event),
            Record::Resumed(r) => marks.resumed(r.at_ms),
            Record::Header(_) => {}
        }
    }
    html::render(&RunSource {
        report: &report,
        plan: view.plan.as_ref(),
        runbook_path: &journal.header.runbook_path,
        started_ms: journal.header.started_ms,
        last_ms: view.last_ms,
        // The view's: a run that started before its plan was whole journals it with the plan.
        estimate: view.header.estimate.as_ref(),
        marks: &marks,
        ended: view.finished(),
        resumes: view.resumes,
    })
}

/// Writes the page of `journal` to `out`, saying where (or why not) on stderr. False when
/// it could not be written.
pub fn write_html(journal: &Journal, out: &Path) -> bool {
    match std::fs::write(out, html_of(journal)) {
        Ok(()) => {
            eprintln!("html report: {}", out.display());
            true
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the HTML report to {}: {e}",
                out.display()
            );
            false
        }
    }
}
