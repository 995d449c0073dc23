//! `powerbook restore JOURNAL`: the runbook that returns every VM a run touched to its
//! power state before it.

use crate::cli::RestoreArgs;
use crate::commands::session::{load_reporting, print_stdout};
use crate::exit::Outcome;
use crate::journal::RunView;
use crate::journal::restore::{NOTHING_TOUCHED, restore_runbook};

pub fn restore(args: &RestoreArgs) -> Outcome {
    let journal = match load_reporting(&args.journal) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    let view = RunView::of(&journal);
    let text = match restore_runbook(&view, &args.journal.display().to_string()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("error: {NOTHING_TOUCHED}");
            return Outcome::SomeFailed;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::SomeFailed;
        }
    };
    match &args.out {
        Some(path) => match std::fs::write(path, &text) {
            Ok(()) => {
                eprintln!("restore runbook: {}", path.display());
                Outcome::Success
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                Outcome::SomeFailed
            }
        },
        None => {
            print_stdout(&text);
            Outcome::Success
        }
    }
}
