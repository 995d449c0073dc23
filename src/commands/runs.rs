//! `powerbook runs` (the journals of a directory) and `powerbook runs show JOURNAL` (one
//! run's results, rebuilt from its journal).

use crate::cli::{OutputFormat, RunsArgs, RunsCommand, ShowArg};
use crate::commands::session::{load_reporting, print_stdout, render_options};
use crate::exec::event::ResultCounts;
use crate::exec::status::FinalStatus;
use crate::exit::Outcome;
use crate::journal::RunView;
use crate::journal::lifecycle::resume_hint;
use crate::journal::runs::{list_runs, report_of, runs_table};
use crate::report::style::RenderOptions;
use crate::report::table;
use std::path::Path;

pub fn runs(args: &RunsArgs) -> Outcome {
    match &args.command {
        Some(RunsCommand::Show {
            journal,
            output,
            show: rows,
        }) => show(journal, *output, render_options(*rows)),
        None => {
            let (runs, problems) = list_runs(&args.runs_dir);
            for p in &problems {
                eprintln!("warning: {p}");
            }
            let text = match args.output {
                OutputFormat::Json => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&runs).unwrap_or_else(|_| "[]".into())
                ),
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
        let note = if status == FinalStatus::Incomplete {
            "The run did not finish (no end record: it crashed or is still running).\n"
        } else {
            ""
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
