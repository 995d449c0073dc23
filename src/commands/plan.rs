//! `powerbook plan` (and `run --dry-run`): GET requests only, then the plan as text or JSON,
//! optionally saved.

use crate::cli::{ConnectionArgs, OutputFormat, PlanArgs, RunArgs, RunOutput, ShowArg};
use crate::commands::session::{
    Simulate, Simulator, client_config, connect, render_options, test_mode, with_simulator,
};
use crate::exit::Outcome;
use crate::journal::history::read_durations;
use crate::plan::build;
use crate::plan::document::PlanDocument;
use crate::plan::estimate::{EstimateInputs, estimate};
use crate::plan::locks::explain_locks;
use crate::runbook::model::Runbook;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Request round trip assumed in test mode, so estimates (and snapshots) are stable.
const TEST_MODE_REQUEST: Duration = Duration::from_millis(50);

/// What `plan` (or `run --dry-run`) is asked to do.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub runbook: PathBuf,
    pub connection: ConnectionArgs,
    /// Plan against the built-in simulator instead of a cloud.
    pub simulate: Option<Simulate>,
    /// Warnings make the exit code 1.
    pub strict: bool,
    pub output: OutputFormat,
    pub show: ShowArg,
    /// Also save the plan document here.
    pub save: Option<PathBuf>,
    /// Journals of earlier runs, for the estimate.
    pub runs_dir: PathBuf,
}

impl PlanOptions {
    pub fn from_args(args: PlanArgs) -> Self {
        PlanOptions {
            simulate: args.simulate.then(|| Simulate {
                inventory: args.simulate_inventory,
                ..Simulate::default()
            }),
            runbook: args.runbook,
            connection: args.connection,
            strict: args.strict,
            output: args.output,
            show: args.show,
            save: args.save,
            runs_dir: args.runs_dir,
        }
    }

    /// `run --dry-run` is `plan` with the same connection and output (the simulator's
    /// seed and speed do not change what a plan sees).
    pub fn dry_run(args: &RunArgs, runbook: PathBuf) -> Self {
        PlanOptions {
            runbook,
            connection: args.connection.clone(),
            simulate: args.simulate.then(|| Simulate {
                inventory: args.simulate_inventory.clone(),
                ..Simulate::default()
            }),
            strict: false,
            // A plan has no events: its JSON document stands for both JSON outputs.
            output: match args.output {
                RunOutput::Human => OutputFormat::Human,
                RunOutput::Json | RunOutput::Ndjson => OutputFormat::Json,
            },
            show: args.show,
            save: None,
            runs_dir: args.journal.runs_dir.clone(),
        }
    }
}

pub async fn plan(options: PlanOptions) -> Outcome {
    let Some(runbook) = crate::runbook::load_or_report(&options.runbook, false) else {
        return Outcome::Usage;
    };
    let (opts, runbook) = (&options, &runbook);
    with_simulator(options.simulate.as_ref(), |simulator| async move {
        plan_connected(opts, runbook, simulator.as_ref()).await
    })
    .await
}

async fn plan_connected(
    options: &PlanOptions,
    runbook: &Runbook,
    simulator: Option<&Simulator>,
) -> Outcome {
    let url = simulator.map(Simulator::url);
    let config = match client_config(&options.connection, runbook, url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let page_size = config.page_size;
    let started = Instant::now();
    let client = match connect(config).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let login = started.elapsed();
    let started = Instant::now();
    let vms = match client.list_vms().await {
        Ok(vms) => vms,
        Err(e) => {
            eprintln!("error: cannot list the VMs: {e}");
            return Outcome::Aborted;
        }
    };
    let pages = u32::try_from(vms.len().div_ceil(page_size.max(1)).max(1)).unwrap_or(u32::MAX);
    let per_page = started.elapsed() / pages;
    let mut plan = build(runbook, &vms, client.endpoint());
    explain_locks(&client, &mut plan, &vms).await;
    let request = if test_mode() {
        TEST_MODE_REQUEST
    } else {
        login.min(per_page).max(Duration::from_millis(1))
    };
    // Earlier runs of this runbook against this cloud tell how long its VMs take.
    let history = read_durations(&options.runs_dir, client.endpoint(), &runbook.name);
    // A rehearsal takes the simulator's time, not the one the runbook expects of the cloud.
    let simulated = simulator.map(Simulator::durations);
    let inputs = EstimateInputs {
        request,
        listed_vms: vms.len(),
        page_size,
        history: Some(&history),
        simulated,
        ..EstimateInputs::default()
    };
    let est = estimate(&plan, runbook, &inputs);
    let doc = PlanDocument::new(runbook, absolute(&options.runbook), vms.len(), plan, est);
    show(&doc, options)
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Prints (and saves) the plan; the outcome follows `--strict`.
fn show(doc: &PlanDocument, options: &PlanOptions) -> Outcome {
    if let Some(path) = &options.save {
        if let Err(e) = std::fs::write(path, format!("{}\n", doc.to_json())) {
            eprintln!("error: cannot save the plan to {}: {e}", path.display());
            return Outcome::Usage;
        }
        eprintln!(
            "Plan saved to {0}; run exactly this plan with `powerbook run --plan {0}`",
            path.display()
        );
    }
    let text = match options.output {
        OutputFormat::Json => format!("{}\n", doc.to_json()),
        OutputFormat::Human => crate::report::plan::render(doc, render_options(options.show)),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    for w in &doc.warnings {
        eprintln!("warning: {}", w.message);
    }
    if options.strict && !doc.warnings.is_empty() {
        eprintln!(
            "error: --strict: the plan has {} warning(s)",
            doc.warnings.len()
        );
        return Outcome::SomeFailed;
    }
    Outcome::Success
}
