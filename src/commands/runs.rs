//! `powerbook runs` (the journals of a directory) and `powerbook runs show JOURNAL` (one
//! run's results, rebuilt from its journal).

use crate::cli::{OutputFormat, RunsArgs, RunsCommand, ShowArg};
use crate::commands::session::{
    load_reporting, print_stdout, progress_mode, render_options, test_mode,
};
use crate::exec::event::ResultCounts;
use crate::exec::status::FinalStatus;
use crate::exit::Outcome;
use crate::journal::RunView;
use crate::journal::lifecycle::resume_hint;
use crate::journal::runs::{is_held, list_runs, report_of, runs_table};
use crate::journal::{Record, load};
use crate::report::progress::Progress;
use crate::report::style::RenderOptions;
use crate::report::table;
use crate::report::{Reporter, WholePlanFirst};
use std::path::Path;

pub fn runs(args: &RunsArgs) -> Outcome {
    match &args.command {
        Some(RunsCommand::Show {
            journal,
            output,
            show: rows,
        }) => show(journal, *output, render_options(*rows)),
        Some(RunsCommand::Watch {
            journal,
            show: rows,
        }) => watch(journal, *rows),
        None => {
            let (runs, problems) = list_runs(&args.runs_dir);
            for p in &problems {
                eprintln!("warning: {p}");
            }
            let text = match args.output {
                OutputFormat::Json => {
                    let doc = serde_json::json!({
                        "format": 1,
                        "kind": crate::report::kind::RUNS,
                        "runs": runs,
                    });
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
                    )
                }
                OutputFormat::Human if runs.is_empty() => {
                    format!("No runs in {}\n", args.runs_dir.display())
                }
                OutputFormat::Human => runs_table(&runs, render_options(ShowArg::All)),
            };
            print_stdout(&text);
            Outcome::Success
        }
    }
}

/// One run's results table, ending with how to resume it when it stopped early.
fn show(journal: &Path, output: OutputFormat, opts: RenderOptions) -> Outcome {
    let j = match load_reporting(journal) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    let view = RunView::of(&j);
    let report = report_of(&view);
    let mut text = match output {
        OutputFormat::Json => format!("{}\n", report.to_json()),
        OutputFormat::Human => table::render(&report, opts),
    };
    let mut counts = ResultCounts::default();
    for r in &report.results {
        counts.add(&r.outcome);
    }
    let status = FinalStatus::of(view.summary.as_ref(), &counts);
    if status.resume_hint_due() {
        let note = match status {
            FinalStatus::Incomplete if is_held(journal) => format!(
                "The run is still going: follow it with `powerbook runs watch {}`.\n",
                journal.display()
            ),
            FinalStatus::Incomplete => {
                "The run did not finish (no end record, and no powerbook holds its journal: \
                 it crashed).\n"
                    .to_owned()
            }
            _ => String::new(),
        };
        let hint = format!("{note}{}", resume_hint(journal));
        match output {
            OutputFormat::Json => eprint!("{hint}"),
            OutputFormat::Human => text.push_str(&hint),
        }
    }
    print_stdout(&text);
    Outcome::Success
}

/// How often a watched journal is read again.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Follows a run from another terminal: the journal's events drive the same progress a run
/// draws, until the run ends (its end record) or no powerbook holds the journal any more (it
/// died); then the results, as `runs show` prints them. Exits as the run did.
fn watch(journal: &Path, rows: ShowArg) -> Outcome {
    if let Err(outcome) = load_reporting(journal) {
        return outcome;
    }
    let mut progress = Progress::with_mode(progress_mode());
    if test_mode() {
        progress = progress.timeless();
    }
    let mut offset = 0usize;
    let mut ended = false;
    let mut order = WholePlanFirst::default();
    while !ended {
        let bytes = match std::fs::read(journal) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read journal {}: {e}", journal.display());
                return Outcome::Usage;
            }
        };
        // Only whole lines: the last one may be in the middle of being written.
        while let Some(end) = bytes
            .get(offset..)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
        {
            let line = &bytes[offset..offset + end];
            offset += end + 1;
            if let Ok(Record::Event { event, .. }) = serde_json::from_slice::<Record>(line) {
                ended = matches!(event, crate::exec::event::Event::RunFinished { .. });
                order.pass(event, |e| progress.event(e));
            }
        }
        if ended {
            break;
        }
        // Read again before giving up: the run may have ended between the read and the check.
        if !is_held(journal) {
            let whole = std::fs::read(journal).map_or(0, |b| b.len());
            if whole <= offset {
                order.finish(|e| progress.event(e));
                progress.finish();
                eprintln!(
                    "The run is not going on (no powerbook holds {}): it crashed or was killed.",
                    journal.display()
                );
                break;
            }
            continue;
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
    progress.finish();
    let outcome = show(journal, OutputFormat::Human, render_options(rows));
    if outcome != Outcome::Success {
        return outcome;
    }
    match load(journal) {
        Ok(j) => {
            let view = RunView::of(&j);
            let mut counts = ResultCounts::default();
            for r in view.results() {
                counts.add(&r.outcome);
            }
            FinalStatus::of(view.summary.as_ref(), &counts).outcome()
        }
        Err(_) => Outcome::Usage,
    }
}
