//! `powerbook resume JOURNAL`: continue an interrupted run from its journal, without sending
//! any action twice.

use crate::cli::{ResumeArgs, RunOutput};
use crate::commands::session::{
    self, Approve, Finish, can_confirm, client_config, confirm, connect, load_reporting,
    print_stdout, render_options, run_options, test_mode,
};
use crate::exec::event::{Event, ResultCounts, utc_now_ms};
use crate::exec::resume::ResumeState;
use crate::exec::status::FinalStatus;
use crate::exit::Outcome;
use crate::journal::Journal;
use crate::journal::lifecycle::{ResumeMarker, reopen_for_resume};
use crate::journal::resume::{ResumeCounts, plan_resume};
use crate::journal::runs::report_of;
use crate::journal::{Header, RunView};
use crate::plan::Plan;
use crate::report::stream::StreamLine;
use crate::report::table;
use crate::runbook::model::Runbook;
use crate::sim::world_path;
use std::path::PathBuf;

pub async fn resume(args: ResumeArgs) -> Outcome {
    if !can_confirm("resume", args.yes) {
        return Outcome::Usage;
    }
    let journal = match load_reporting(&args.journal) {
        Ok(j) => j,
        Err(outcome) => return outcome,
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
    if view.plan_partial {
        let step = plan.steps.first();
        eprintln!(
            "note: the run stopped while its VMs were still being listed; this resume finishes \
             the {} VMs of step '{}' it had started. Run the runbook again for the rest: it \
             skips what is already done.",
            step.map_or(0, |s| s.targets.len()),
            step.map_or("", |s| &*s.name)
        );
    }
    let (state, counts) = plan_resume(&view, args.retry_failed);
    if remaining(&plan, &state) == 0 {
        return nothing_to_resume(&view, header, &args);
    }
    let found = Found {
        journal: &journal,
        plan: &plan,
        runbook: &runbook,
        counts: &counts,
    };
    if args.simulate {
        let (sim, simulator) = match session::restore_simulator(&args.journal).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Usage;
            }
        };
        let outcome = resume_connected(&args, found, state, Some(simulator.url())).await;
        sim.shutdown().await;
        return outcome;
    }
    if world_path(&args.journal).exists() {
        eprintln!(
            "error: {} is a rehearsal's journal (its simulator's world is saved beside it); \
             resume it with --simulate",
            args.journal.display()
        );
        return Outcome::Usage;
    }
    resume_connected(&args, found, state, None).await
}

/// What the journal and the runbook say, once checked.
#[derive(Clone, Copy)]
struct Found<'a> {
    journal: &'a Journal,
    plan: &'a Plan,
    runbook: &'a Runbook,
    counts: &'a ResumeCounts,
}

async fn resume_connected(
    args: &ResumeArgs,
    found: Found<'_>,
    state: ResumeState,
    simulator: Option<&str>,
) -> Outcome {
    let Found {
        journal,
        plan,
        runbook,
        counts,
    } = found;
    let header = &journal.header;
    let mut connection = args.connection.clone();
    if connection.endpoint.is_none() && runbook.api.endpoint.is_none() {
        connection.endpoint = Some(header.endpoint.clone());
    }
    let config = match client_config(&connection, runbook, simulator) {
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
    if !session::can_approve(plan, Approve::of(args.approve_gates)) {
        return Outcome::Usage;
    }
    if !args.yes && !confirm().await {
        eprintln!("Nothing was changed.");
        return Outcome::Declined;
    }
    let marker = ResumeMarker {
        source_hash: runbook.source_hash.clone(),
        retry_failed: args.retry_failed,
        forced: args.force,
    };
    let writer = match reopen_for_resume(&args.journal, journal.valid_len, marker) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}; nothing was changed");
            return Outcome::Usage;
        }
    };
    let options = run_options(&args.tuning);
    let finish = Finish {
        emit_restore: args.emit_restore.as_deref(),
        report_file: args.report.as_deref(),
        html_file: args.html.as_deref(),
        output: args.output,
        show: args.show,
        approve: Approve::of(args.approve_gates),
        test_mode: test_mode(),
    };
    session::execute_journaled(&client, plan, &options, writer, Some(state), finish).await
}

/// Live targets of the plan the resume would still act on.
fn remaining(plan: &Plan, state: &ResumeState) -> usize {
    plan.steps
        .iter()
        .flat_map(|s| {
            s.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.disposition.is_live())
                .map(move |(i, _)| (s.index, i))
        })
        .filter(|&(step, target)| !state.is_done(step, target))
        .count()
}

/// Every VM already has its final result: show them; the verdict is theirs.
fn nothing_to_resume(view: &RunView, header: &Header, args: &ResumeArgs) -> Outcome {
    eprintln!(
        "Nothing to resume: every VM of run '{}' has its final result{}.",
        header.runbook_name,
        if args.retry_failed {
            ""
        } else {
            " (--retry-failed retries the failed ones)"
        }
    );
    let report = report_of(view);
    let mut counts = ResultCounts::default();
    for r in &report.results {
        counts.add(&r.outcome);
    }
    let text = match args.output {
        RunOutput::Json => format!("{}\n", report.to_json()),
        RunOutput::Human => table::render(&report, render_options(args.show)),
        // Nothing happens, so the stream is its last event.
        RunOutput::Ndjson => report.summary.as_ref().map_or_else(String::new, |summary| {
            let event = Event::RunFinished {
                summary: summary.clone(),
            };
            StreamLine::of(&event, utc_now_ms())
                .and_then(|line| serde_json::to_string(&line).ok())
                .map_or_else(String::new, |l| l + "\n")
        }),
    };
    print_stdout(&text);
    FinalStatus::settled(&counts).outcome()
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
