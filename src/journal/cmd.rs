//! The journal's commands (`resume`, `restore`, `runs`) and the journal side of `run`.

use crate::cli::{JournalArgs, OutputFormat, RestoreArgs, ResumeArgs, RunsArgs, RunsCommand};
use crate::exec::cmd::{
    client_config, confirm, connect, execute_with_hooks, exit_outcome, handle_ctrl_c, print_stdout,
    run_options, test_mode, write_report,
};
use crate::exec::event::Summary;
use crate::exec::{Hooks, RunControl};
use crate::exit::Outcome;
use crate::journal::resume::plan_resume;
use crate::journal::runs::{list_runs, report_of, runs_table};
use crate::journal::writer::JournalWriter;
use crate::journal::{
    Header, JOURNAL_FORMAT, Record, Resumed, RunView, TORN_NOTE, default_path, load, now_ms,
    now_rfc3339,
};
use crate::plan::Plan;
use crate::report::RunReport;
use crate::report::table::{self, RenderOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Creates the journal of a new run and writes its header. Says where it is on stderr.
pub fn open_for_run(
    args: &JournalArgs,
    runbook_path: &Path,
    plan: &Plan,
) -> Result<JournalWriter, String> {
    let absolute = std::path::absolute(runbook_path).unwrap_or_else(|_| runbook_path.to_owned());
    let header = Header {
        format: JOURNAL_FORMAT,
        powerbook: env!("CARGO_PKG_VERSION").to_owned(),
        runbook_path: absolute.display().to_string(),
        runbook_name: plan.runbook_name.clone(),
        source_hash: plan.source_hash.clone(),
        endpoint: plan.endpoint.clone(),
        started_at: now_rfc3339(),
        started_ms: now_ms(),
    };
    let record = Record::Header(header);
    let writer = match &args.journal {
        Some(path) => JournalWriter::create(path, &record)?,
        None => {
            // Two runs of one runbook in the same second: the loser takes the next name.
            let mut attempt = 0;
            loop {
                let path = default_path(&args.runs_dir, &plan.runbook_name);
                match JournalWriter::create(&path, &record) {
                    Ok(w) => break w,
                    Err(_) if attempt < 20 && path.exists() => attempt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
    };
    eprintln!("journal: {}", writer.path().display());
    Ok(writer)
}

/// What happened after the executor finished.
#[derive(Debug, Default)]
pub struct AfterRun {
    /// "Resume with: powerbook resume …" for stopped runs (to end the summary with).
    pub hint: Option<String>,
    /// The journal or the restore runbook could not be written (already reported).
    pub failed: bool,
}

/// Where a run's results go once the executor is done (`run` and `resume` alike).
pub struct Finish<'a> {
    pub emit_restore: Option<&'a Path>,
    pub report_file: Option<&'a Path>,
    pub output: OutputFormat,
    pub test_mode: bool,
}

/// Closes the journal, writes the restore runbook and the report file if asked, prints the
/// results (ending with how to resume a run that stopped early) and returns the exit outcome.
/// Failing to write any of those files turns a success into "some failed".
pub async fn finish_run(
    writer: JournalWriter,
    report: &RunReport,
    summary: &Summary,
    finish: Finish<'_>,
) -> Outcome {
    let mut outcome = exit_outcome(summary);
    let after = after_run(writer, summary, finish.emit_restore).await;
    if after.failed && outcome == Outcome::Success {
        outcome = Outcome::SomeFailed;
    }
    if let Some(path) = finish.report_file
        && let Err(e) = write_report(path, report)
    {
        eprintln!("error: cannot write the report to {}: {e}", path.display());
        if outcome == Outcome::Success {
            outcome = Outcome::SomeFailed;
        }
    }
    let text = match finish.output {
        OutputFormat::Json => {
            if let Some(hint) = &after.hint {
                eprint!("{hint}");
            }
            format!("{}\n", report.to_json())
        }
        OutputFormat::Human => {
            table::render(
                report,
                RenderOptions {
                    test_mode: finish.test_mode,
                },
            ) + after.hint.as_deref().unwrap_or("")
        }
    };
    print_stdout(&text);
    outcome
}

/// Closes the journal, writes the restore runbook if asked, and says how to resume a run
/// that stopped early.
async fn after_run(
    writer: JournalWriter,
    summary: &Summary,
    emit_restore: Option<&Path>,
) -> AfterRun {
    let path = writer.path().to_owned();
    let mut after = AfterRun::default();
    if let Err(e) = writer.close().await {
        eprintln!("error: {e}");
        after.failed = true;
    }
    if let Some(out) = emit_restore {
        match load(&path).and_then(|j| {
            super::restore::restore_runbook(&RunView::of(&j), &path.display().to_string())
        }) {
            Ok(Some(text)) => match std::fs::write(out, text) {
                Ok(()) => eprintln!("restore runbook: {}", out.display()),
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", out.display());
                    after.failed = true;
                }
            },
            Ok(None) => eprintln!(
                "note: no restore runbook written to {}: {}",
                out.display(),
                super::restore::NOTHING_TOUCHED
            ),
            Err(e) => {
                eprintln!("error: no restore runbook: {e}");
                after.failed = true;
            }
        }
    }
    if summary.interrupted || summary.aborted.is_some() {
        after.hint = Some(format!("Resume with: {}\n", resume_command(&path)));
    }
    after
}

/// `powerbook resume PATH`, quoted for a POSIX shell where needed.
pub fn resume_command(journal: &Path) -> String {
    format!(
        "powerbook resume {}",
        shell_quote(&journal.display().to_string())
    )
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Loads a journal, saying on stderr when its last line was torn.
fn load_reporting(path: &Path) -> Result<crate::journal::Journal, String> {
    let journal = load(path)?;
    if journal.torn {
        eprintln!("note: {}: {TORN_NOTE}", path.display());
    }
    Ok(journal)
}

/// `powerbook resume JOURNAL`.
pub async fn resume(args: ResumeArgs) -> Outcome {
    if !args.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: `resume` changes VM power states and asks for confirmation first, but \
             stdin is not a terminal; pass --yes to resume without asking"
        );
        return Outcome::Usage;
    }
    let journal = match load_reporting(&args.journal) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let view = RunView::of(&journal);
    let header = &journal.header;
    let Some(plan) = view.plan.clone() else {
        eprintln!(
            "error: {} holds no plan: the run stopped before it started, so nothing was \
             changed; run the runbook again instead",
            args.journal.display()
        );
        return Outcome::Usage;
    };
    let runbook_path = PathBuf::from(&header.runbook_path);
    let Some(runbook) = crate::runbook::load_or_report(&runbook_path, false) else {
        eprintln!(
            "error: the run's runbook {} cannot be used (see above)",
            runbook_path.display()
        );
        return Outcome::Usage;
    };
    if runbook.source_hash != header.source_hash {
        if !args.force {
            eprintln!(
                "error: the runbook {} changed since the journal was written (sha256 {} then, \
                 {} now); check what changed, then pass --force to resume the recorded plan \
                 with the new file",
                runbook_path.display(),
                short(&header.source_hash),
                short(&runbook.source_hash)
            );
            return Outcome::Usage;
        }
        eprintln!(
            "warning: the runbook changed since the journal was written; resuming anyway \
             (--force)"
        );
    }
    let (state, counts) = plan_resume(&view, args.retry_failed);
    let left = plan
        .steps
        .iter()
        .flat_map(|s| {
            s.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.disposition.is_live())
                .map(move |(i, _)| (s.index, i))
        })
        .filter(|&(step, target)| !state.is_done(step, target))
        .count();
    if left == 0 {
        eprintln!(
            "Nothing to resume: every VM of run '{}' has its final result{}.",
            header.runbook_name,
            if args.retry_failed {
                ""
            } else {
                " (--retry-failed retries the failed ones)"
            }
        );
        let report = report_of(&view);
        let failed = report.results.iter().any(|r| r.outcome.is_failure());
        let outcome = if failed {
            Outcome::SomeFailed
        } else {
            Outcome::Success
        };
        let text = match args.output {
            OutputFormat::Json => format!("{}\n", report.to_json()),
            OutputFormat::Human => table::render(
                &report,
                RenderOptions {
                    test_mode: test_mode(),
                },
            ),
        };
        print_stdout(&text);
        return outcome;
    }
    let mut connection = args.connection.clone();
    if connection.endpoint.is_none() && runbook.api.endpoint.is_none() {
        connection.endpoint = Some(header.endpoint.clone());
    }
    let mut config = match client_config(&connection, &runbook, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if !same(&config.endpoint, &header.endpoint) && !args.force {
        eprintln!(
            "error: the journal's run was against {}, not {}; pass --endpoint {} (or --force)",
            header.endpoint, config.endpoint, header.endpoint
        );
        return Outcome::Usage;
    }
    config.request_timeout = args.tuning.request_timeout;
    let client = match connect(config).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    eprintln!(
        "Resuming run '{}' of {} from {}: {} VMs done (not touched), {} tasks in flight to \
         follow, {} to check before acting, {} failed to retry; the rest as planned",
        header.runbook_name,
        header.started_at,
        args.journal.display(),
        counts.done,
        counts.reattach,
        counts.inspect,
        counts.retried
    );
    if !args.yes && !confirm().await {
        eprintln!("Nothing was changed.");
        return Outcome::Usage;
    }
    let marker = Record::Resumed(Resumed {
        powerbook: env!("CARGO_PKG_VERSION").to_owned(),
        at: now_rfc3339(),
        at_ms: now_ms(),
        source_hash: runbook.source_hash.clone(),
        retry_failed: args.retry_failed,
        forced: args.force,
    });
    let writer = match JournalWriter::append(&args.journal, journal.valid_len, &marker) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}; nothing was changed");
            return Outcome::Usage;
        }
    };
    let options = run_options(&args.tuning);
    let control = RunControl::new();
    let signals = tokio::spawn(handle_ctrl_c(control.clone()));
    let test_mode = test_mode();
    let show_progress = !test_mode && std::io::stderr().is_terminal();
    let hooks = Hooks {
        resume: Some(state),
    };
    let (report, summary) = execute_with_hooks(
        &client,
        &plan,
        &runbook,
        &options,
        &control,
        show_progress,
        Some(writer.sink()),
        hooks,
    )
    .await;
    signals.abort();
    let finish = Finish {
        emit_restore: args.emit_restore.as_deref(),
        report_file: args.report.as_deref(),
        output: args.output,
        test_mode,
    };
    finish_run(writer, &report, &summary, finish).await
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `powerbook restore JOURNAL`.
pub fn restore(args: &RestoreArgs) -> Outcome {
    let journal = match load_reporting(&args.journal) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let view = RunView::of(&journal);
    let text = match super::restore::restore_runbook(&view, &args.journal.display().to_string()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("error: {}", super::restore::NOTHING_TOUCHED);
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

/// `powerbook runs` and `powerbook runs show JOURNAL`.
pub fn runs(args: &RunsArgs) -> Outcome {
    let opts = RenderOptions {
        test_mode: test_mode(),
    };
    match &args.command {
        Some(RunsCommand::Show { journal, output }) => {
            let j = match load_reporting(journal) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Outcome::Usage;
                }
            };
            let view = RunView::of(&j);
            let report = report_of(&view);
            let mut text = match output {
                OutputFormat::Json => format!("{}\n", report.to_json()),
                OutputFormat::Human => table::render(&report, opts),
            };
            let stopped = view
                .summary
                .as_ref()
                .is_none_or(|s| s.interrupted || s.aborted.is_some());
            if stopped {
                let note = if view.finished() {
                    String::new()
                } else {
                    "The run did not finish (no end record: it crashed or is still running).\n"
                        .to_owned()
                };
                let hint = format!("{note}Resume with: {}\n", resume_command(journal));
                match output {
                    OutputFormat::Json => eprint!("{hint}"),
                    OutputFormat::Human => text.push_str(&hint),
                }
            }
            print_stdout(&text);
            Outcome::Success
        }
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
                OutputFormat::Human => runs_table(&runs, opts),
            };
            print_stdout(&text);
            Outcome::Success
        }
    }
}
