//! `powerbook run`: load the runbook, connect, resolve (or check a saved) plan, confirm,
//! execute into a new journal, report.

use crate::abiquo::client::Client;
use crate::abiquo::model::ListedVm;
use crate::abiquo::so_far::ListingSoFar;
use crate::cli::RunArgs;
use crate::cli::ShowArg;
use crate::commands::plan::PlanOptions;
use crate::commands::session::{
    self, Approve, Finish, Simulate, Simulator, can_confirm, client_config, confirm, connect,
    render_options, run_options, test_mode, verbosity, with_simulator,
};
use crate::exec::Start;
use crate::exec::head::{Listing, Streaming};
use crate::exit::Outcome;
use crate::journal::lifecycle::{JournalLocation, create_for_run};
use crate::journal::writer::JournalWriter;
use crate::pacing::TaskDurations;
use crate::plan::document::PlanDocument;
use crate::plan::estimate::{Estimate, EstimateInputs, estimate};
use crate::plan::saved::{load_saved, stale_table, stale_vms};
use crate::plan::{Listed, Plan, of_listing, select};
use crate::report::style::RenderOptions;
use crate::report::style::STABLE_WIDTH;
use crate::runbook::model::{Action, Runbook};
use futures::future::{Either, Ready};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::task::JoinHandle;

pub async fn run(args: RunArgs) -> Outcome {
    let runbook_path = match runbook_path(&args) {
        Ok(path) => path,
        Err(outcome) => return outcome,
    };
    if args.dry_run {
        return crate::commands::plan::plan(PlanOptions::dry_run(&args, runbook_path)).await;
    }
    if !can_confirm("run", args.yes) {
        return Outcome::Usage;
    }
    let Some(runbook) = crate::runbook::load_or_report(&runbook_path, false) else {
        return Outcome::Usage;
    };
    let simulate = args.simulate.then(|| Simulate {
        inventory: args.simulate_inventory.clone(),
        seed: args.simulate_seed,
        speed: args.simulate_speed,
    });
    let (args, runbook, path) = (&args, &runbook, runbook_path.as_path());
    with_simulator(simulate.as_ref(), |simulator| async move {
        run_connected(args, runbook, path, simulator.as_ref()).await
    })
    .await
}

/// The RUNBOOK argument, or with `--plan` and no RUNBOOK the one the plan was made from.
fn runbook_path(args: &RunArgs) -> Result<PathBuf, Outcome> {
    if let Some(path) = &args.runbook {
        return Ok(path.clone());
    }
    let Some(saved) = &args.plan else {
        eprintln!("error: name the RUNBOOK to run (or a saved plan with --plan FILE)");
        return Err(Outcome::Usage);
    };
    match load_saved(saved) {
        Ok(doc) => Ok(PathBuf::from(doc.runbook_path)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(Outcome::Usage)
        }
    }
}

async fn run_connected(
    args: &RunArgs,
    runbook: &Runbook,
    runbook_path: &Path,
    simulator: Option<&Simulator>,
) -> Outcome {
    // A rehearsal's estimate goes by the simulator's task durations.
    let simulated = simulator.map(Simulator::durations);
    let config = match client_config(&args.connection, runbook, simulator.map(Simulator::url)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    // Earlier runs' journals tell how long tasks take on this cloud: the estimate and the
    // executor's polling start warm. Read while the run logs in and lists.
    let history = crate::journal::history::durations_from_journals(
        &args.journal.runs_dir,
        &config.api_root(),
        &runbook.name,
    );
    let client = match connect(config).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let so_far = ListingSoFar::default();
    let asked = tokio::time::Instant::now();
    let plan = match early_start(args, runbook) {
        Some(index) => first_pages(&client, runbook, index, &so_far, asked).await,
        None => {
            let saved = args.plan.as_deref().map(|file| SavedPlan {
                file,
                replan: args.replan,
            });
            plan_for_run(&client, runbook, runbook_path, saved)
                .await
                .map(Begin::Whole)
        }
    };
    let plan = match plan {
        Ok(Begin::Whole(plan)) => plan,
        Ok(Begin::Early { index, listing }) => {
            let early = Early {
                index,
                so_far: &so_far,
                listed: Listed::growing(asked),
                listing,
            };
            return run_early(
                args,
                runbook_path,
                simulator,
                (&client, runbook),
                history,
                early,
            )
            .await;
        }
        Err(outcome) => return outcome,
    };
    let approve = Approve::of(args.approve_gates);
    if !session::can_approve(&plan, approve) {
        return Outcome::Usage;
    }
    let history = history.await.unwrap_or_default();
    let est = run_estimate(runbook, &plan, &history, simulated);
    let plan = if verbosity().quiet && args.yes {
        plan
    } else {
        let (text, plan) = plan_overview(runbook, runbook_path, plan, est.clone());
        eprint!("{text}");
        plan
    };
    if !args.yes && !confirm().await {
        eprintln!("Nothing was changed.");
        return Outcome::Declined;
    }
    let journal = match new_journal(args, runbook_path, &plan, Some(est), simulator) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    let mut options = run_options(&args.tuning);
    options.durations = history;
    let finish = finish_of(args);
    session::execute_journaled(&client, &plan, &options, journal, None, finish).await
}

/// Waits for `work` while the listing goes on (a page not asked for is time lost); the
/// listing, or what it ended with.
async fn while_listing<L: Listing + Unpin, T>(
    mut listing: L,
    work: impl Future<Output = T>,
) -> (T, Either<L, Ready<L::Output>>) {
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => (done, Either::Left(listing)),
        listed = &mut listing => (work.await, Either::Right(futures::future::ready(listed))),
    }
}

/// The journal of a new run of `plan` (the simulator's world kept beside it).
fn new_journal(
    args: &RunArgs,
    runbook_path: &Path,
    plan: &Plan,
    est: Option<Estimate>,
    simulator: Option<&Simulator>,
) -> Result<JournalWriter, Outcome> {
    let location = match &args.journal.journal {
        Some(file) => JournalLocation::File(file),
        None => JournalLocation::Dir(&args.journal.runs_dir),
    };
    let journal = create_for_run(location, runbook_path, plan, est).map_err(|e| {
        eprintln!("error: {e}; nothing was changed");
        Outcome::Usage
    })?;
    eprintln!("journal: {}", journal.path().display());
    if let Some(simulator) = simulator {
        // Before any request that changes the world: the file then knows every task the
        // journal will.
        if let Err(e) = simulator.keep_world_beside(journal.path()) {
            eprintln!("error: {e}; nothing was changed");
            return Err(Outcome::Usage);
        }
    }
    Ok(journal)
}

fn finish_of(args: &RunArgs) -> Finish<'_> {
    Finish {
        emit_restore: args.journal.emit_restore.as_deref(),
        report_file: args.report.as_deref(),
        html_file: args.html.as_deref(),
        output: args.output,
        show: args.show,
        approve: Approve::of(args.approve_gates),
        test_mode: test_mode(),
    }
}

/// How a run begins: with its whole plan, or on the first pages of its listing.
enum Begin<L> {
    Whole(Plan),
    Early { index: usize, listing: L },
}

/// The step that starts on the first pages of the listing, when this run may: with `--yes`
/// (nobody is shown the plan before it acts), without a saved plan or `--whole-plan-first`,
/// and when the runbook allows it.
fn early_start(args: &RunArgs, runbook: &Runbook) -> Option<usize> {
    if !args.yes || args.plan.is_some() || args.whole_plan_first {
        return None;
    }
    crate::plan::head::head_step(runbook)
        .map_err(|why| tracing::debug!("the run waits for the whole listing: {why}"))
        .ok()
}

/// Lists the VMs until the first page is in: a listing that ends with it (a lab, a small
/// cloud) is planned whole as usual; a longer one goes on while the run starts.
async fn first_pages<'c>(
    client: &'c Client,
    runbook: &Runbook,
    index: usize,
    so_far: &'c ListingSoFar<ListedVm>,
    asked: tokio::time::Instant,
) -> Result<Begin<Pin<Box<impl Listing + 'c>>>, Outcome> {
    let mut listing = Box::pin(client.list_vms_feeding(so_far));
    let first = tokio::select! {
        whole = &mut listing => Some(whole),
        _ = so_far.get(0) => None,
    };
    let whole = match first {
        Some(whole) => whole,
        // The first page is in and more are coming.
        None if !so_far.is_empty() => return Ok(Begin::Early { index, listing }),
        // It ended (empty) as it was looked at.
        None => listing.await,
    };
    let vms = whole.map_err(|e| {
        eprintln!("error: cannot list the VMs: {e}");
        Outcome::Aborted
    })?;
    let plan = of_listing(runbook, vms, client.endpoint(), asked);
    Ok(Begin::Whole(plan))
}

/// A run starting on the first pages of its listing.
struct Early<'a, L> {
    index: usize,
    so_far: &'a ListingSoFar<ListedVm>,
    listed: Listed,
    listing: L,
}

/// Runs the head step on the first pages while the listing goes on; once it is in, the
/// whole plan is shown (as a run with `--yes` shows it) and runs on.
async fn run_early<L>(
    args: &RunArgs,
    runbook_path: &Path,
    simulator: Option<&Simulator>,
    (client, runbook): (&Client, &Runbook),
    history: JoinHandle<TaskDurations>,
    early: Early<'_, L>,
) -> Outcome
where
    L: Listing + Unpin,
{
    let simulated = simulator.map(Simulator::durations);
    let Early {
        index,
        so_far,
        listed,
        listing,
    } = early;
    let (history, listing) = while_listing(listing, history).await;
    let history = history.unwrap_or_default();
    let skeleton = crate::plan::head::skeleton(runbook, index, client.endpoint());
    let journal = match new_journal(args, runbook_path, &skeleton, None, simulator) {
        Ok(j) => j,
        Err(outcome) => return outcome,
    };
    let quiet = verbosity().quiet;
    if !quiet {
        let step = skeleton.steps.first().map_or("", |s| &*s.name);
        eprintln!(
            "Step '{step}' starts on the first VMs listed; the plan follows once every VM is."
        );
    }
    let estimates = history.clone();
    // The whole plan is shown as a run with --yes shows it, once it is whole.
    let then = Box::new(move |plan: Plan| {
        let est = run_estimate(runbook, &plan, &estimates, simulated);
        if quiet {
            return (plan, Some(est));
        }
        let (text, plan) = plan_overview(runbook, runbook_path, plan, est.clone());
        eprint!("{text}");
        (plan, Some(est))
    });
    let listed_so_far = (so_far, &listed);
    let Some(streaming) = Streaming::new(
        runbook,
        index,
        client.endpoint(),
        listed_so_far,
        listing,
        then,
    ) else {
        return Outcome::Usage;
    };
    let start = Start::Streaming(Box::new(streaming));
    let mut options = run_options(&args.tuning);
    options.durations = history;
    session::execute_start_journaled(client, start, &options, journal, None, finish_of(args)).await
}

/// `--plan FILE` (and `--replan`).
struct SavedPlan<'a> {
    file: &'a Path,
    replan: bool,
}

/// The plan `run` executes: resolved now, or the saved one after checking that neither the
/// runbook nor any of its VMs changed since it was made.
async fn plan_for_run(
    client: &Client,
    runbook: &Runbook,
    runbook_path: &Path,
    saved: Option<SavedPlan<'_>>,
) -> Result<Plan, Outcome> {
    let Some(SavedPlan { file: path, replan }) = saved else {
        return crate::plan::resolve(client, runbook).await.map_err(|e| {
            eprintln!("error: cannot list the VMs: {e}");
            Outcome::Aborted
        });
    };
    let doc = load_saved(path).map_err(|e| {
        eprintln!("error: {e}");
        Outcome::Usage
    })?;
    let saved = doc.plan;
    if saved.source_hash != runbook.source_hash {
        eprintln!(
            "error: {} changed since the plan in {} was made (runbook sha256 {} then, {} now); \
             make a new plan with `powerbook plan {} --save {}`",
            runbook_path.display(),
            path.display(),
            short_hash(&saved.source_hash),
            short_hash(&runbook.source_hash),
            runbook_path.display(),
            path.display()
        );
        return Err(Outcome::Usage);
    }
    if select::normalize_href(&saved.endpoint) != select::normalize_href(client.endpoint()) {
        eprintln!(
            "error: the plan in {} was made against {}, but this run would go to {}",
            path.display(),
            saved.endpoint,
            client.endpoint()
        );
        return Err(Outcome::Usage);
    }
    let asked = tokio::time::Instant::now();
    let vms = client.list_vms().await.map_err(|e| {
        eprintln!("error: cannot list the VMs: {e}");
        Outcome::Aborted
    })?;
    let mut saved = saved;
    let stale = stale_vms(&saved, &vms);
    if stale.is_empty() {
        eprintln!(
            "Saved plan {} (made {}): every planned VM is as the plan saw it",
            path.display(),
            saved.created_at
        );
        saved.keep_listing(vms, asked);
        return Ok(saved);
    }
    let table = stale_table(&stale, test_mode().then_some(STABLE_WIDTH));
    if replan {
        eprintln!(
            "note: {} changed since the plan in {} was made; --replan: planning again from \
             the current states\n{table}",
            count_vms(stale.len()),
            path.display()
        );
        return Ok(of_listing(runbook, vms, client.endpoint(), asked));
    }
    eprintln!(
        "error: {} changed since the plan in {} was made; nothing was changed. Make a new plan, \
         or pass --replan to plan again from the current states:\n{table}",
        count_vms(stale.len()),
        path.display()
    );
    Err(Outcome::Aborted)
}

fn count_vms(n: usize) -> String {
    if n == 1 {
        "1 VM".into()
    } else {
        format!("{n} VMs")
    }
}

fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// What the plan expects of the run: shown before the question, and kept in the journal's
/// header so that a report drawn later sets the actual beside it.
fn run_estimate(
    runbook: &Runbook,
    plan: &Plan,
    history: &TaskDurations,
    simulated: Option<&BTreeMap<Action, Duration>>,
) -> Estimate {
    let inputs = EstimateInputs {
        listed_vms: plan.total_targets(),
        history: Some(history),
        simulated,
        ..EstimateInputs::default()
    };
    estimate(plan, runbook, &inputs)
}

/// What will happen, per step, before anything is changed.
/// The plan as `plan` would show it, less the VMs that are simply acted on or skipped:
/// steps, waves, concurrency, thresholds, refusals and the estimate, before the question.
fn plan_overview(
    runbook: &Runbook,
    runbook_path: &Path,
    plan: Plan,
    est: Estimate,
) -> (String, Plan) {
    // VMs the steps select, each counted once (a VM in two steps is one VM).
    let targets = plan
        .steps
        .iter()
        .flat_map(|s| s.targets.iter().map(|t| &*t.vm.href))
        .collect::<std::collections::HashSet<_>>()
        .len();
    // The document holds the plan only while it is drawn (a region's plan is large).
    let doc = PlanDocument::new(
        runbook,
        runbook_path.display().to_string(),
        targets,
        plan,
        est,
    );
    // Drawn for stderr: the terminal's width when it is one, no colour.
    let opts = RenderOptions {
        color: false,
        ..render_options(ShowArg::Problems)
    };
    (crate::report::plan::confirmation(&doc, opts), doc.plan)
}
