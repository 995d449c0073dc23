//! `powerbook plan` (and `run --dry-run`): GET requests only, then the plan as text or JSON,
//! optionally saved. Also the checks `run --plan FILE` makes before executing a saved plan.

use crate::abiquo::client::Client;
use crate::abiquo::model::{VirtualMachine, VmState};
use crate::cli::{OutputFormat, PlanArgs, RunArgs};
use crate::exec::cmd::{client_config, connect, start_simulator, test_mode};
use crate::exit::Outcome;
use crate::journal::history::TaskDurations;
use crate::plan::document::{DOCUMENT_FORMAT, PlanDocument};
use crate::plan::estimate::{EstimateInputs, estimate};
use crate::plan::{Disposition, PLAN_FORMAT, Plan, build, rules, select};
use crate::report::table::{RenderOptions, TEST_WIDTH};
use crate::runbook::model::Runbook;
use crate::sim::SimHandle;
use comfy_table::{ContentArrangement, Table, presets};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Request round trip assumed in test mode, so estimates (and snapshots) are stable.
const TEST_MODE_REQUEST: Duration = Duration::from_millis(50);

pub async fn plan(args: PlanArgs) -> Outcome {
    let Some(runbook) = crate::runbook::load_or_report(&args.runbook, false) else {
        return Outcome::Usage;
    };
    let sim = if args.simulate {
        match start_simulator(args.simulate_inventory.as_deref(), None, None).await {
            Ok(sim) => Some(sim),
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::Usage;
            }
        }
    } else {
        None
    };
    let outcome = plan_connected(&args, &runbook, sim.as_ref().map(SimHandle::base_url)).await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    outcome
}

/// `run --dry-run` is `plan` with the same connection and output.
pub fn dry_run_args(args: &RunArgs) -> PlanArgs {
    PlanArgs {
        runbook: args.runbook.clone(),
        connection: args.connection.clone(),
        simulate: args.simulate,
        simulate_inventory: args.simulate_inventory.clone(),
        strict: false,
        output: args.output,
        save: None,
        runs_dir: args.journal.runs_dir.clone(),
    }
}

async fn plan_connected(args: &PlanArgs, runbook: &Runbook, simulator: Option<&str>) -> Outcome {
    let config = match client_config(&args.connection, runbook, simulator) {
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
    let history = history_for(&args.runs_dir, client.endpoint(), runbook);
    let inputs = EstimateInputs {
        request,
        listed_vms: vms.len(),
        page_size,
        history: history.as_ref(),
        ..EstimateInputs::default()
    };
    let est = estimate(&plan, runbook, &inputs);
    let doc = PlanDocument::new(runbook, absolute(&args.runbook), vms.len(), plan, est);
    show(&doc, args)
}

/// Durations recorded by earlier runs of this runbook against this cloud (their journals).
fn history_for(runs_dir: &Path, endpoint: &str, runbook: &Runbook) -> Option<TaskDurations> {
    Some(TaskDurations::read(runs_dir, endpoint, &runbook.name))
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Prints (and saves) the plan; the outcome follows `--strict`.
fn show(doc: &PlanDocument, args: &PlanArgs) -> Outcome {
    if let Some(path) = &args.save {
        if let Err(e) = std::fs::write(path, format!("{}\n", doc.to_json())) {
            eprintln!("error: cannot save the plan to {}: {e}", path.display());
            return Outcome::Usage;
        }
        eprintln!(
            "Plan saved to {0}; run exactly this plan with `powerbook run --plan {0}`",
            path.display()
        );
    }
    let text = match args.output {
        OutputFormat::Json => format!("{}\n", doc.to_json()),
        OutputFormat::Human => crate::plan::render::render(
            doc,
            RenderOptions {
                test_mode: test_mode(),
            },
        ),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    for w in &doc.warnings {
        eprintln!("warning: {}", w.message);
    }
    if args.strict && !doc.warnings.is_empty() {
        eprintln!(
            "error: --strict: the plan has {} warning(s)",
            doc.warnings.len()
        );
        return Outcome::SomeFailed;
    }
    Outcome::Success
}

/// A LOCKED VM is refused for now; say which task holds it (GET on its tasks).
async fn explain_locks(client: &Client, plan: &mut Plan, vms: &[VirtualMachine]) {
    let by_id: HashMap<u64, &VirtualMachine> = vms.iter().map(|v| (v.id, v)).collect();
    let mut holders: HashMap<u64, Option<String>> = HashMap::new();
    for step in &mut plan.steps {
        for t in &mut step.targets {
            let Disposition::Refuse { reason, .. } = &mut t.disposition else {
                continue;
            };
            if t.state_seen != VmState::Locked {
                continue;
            }
            let holder = match holders.get(&t.vm.id) {
                Some(h) => h.clone(),
                None => {
                    let h = match by_id.get(&t.vm.id) {
                        Some(vm) => running_task(client, vm).await,
                        None => None,
                    };
                    holders.insert(t.vm.id, h.clone());
                    h
                }
            };
            if let Some(h) = holder {
                *reason = reason.replacen(rules::LOCKED_REASON, &h, 1);
            }
        }
    }
}

/// `LOCKED by a running SHUTDOWN task (STARTED)`, from the VM's tasks list.
async fn running_task(client: &Client, vm: &VirtualMachine) -> Option<String> {
    let tasks = client.vm_tasks(vm).await.ok()?;
    let task = tasks.iter().find(|t| !t.state.is_terminal())?;
    Some(format!(
        "LOCKED by a running {} task ({})",
        task.task_type, task.state
    ))
}

// ------------------------------------------------------------------------------------------
// run --plan FILE
// ------------------------------------------------------------------------------------------

/// Reads a saved plan document.
pub fn load_saved(path: &Path) -> Result<PlanDocument, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the saved plan {}: {e}", path.display()))?;
    let not_a_plan = |e: serde_json::Error| {
        format!(
            "{} is not a plan saved by `powerbook plan --save`: {e}",
            path.display()
        )
    };
    let (format, plan_format) = PlanDocument::formats_of(&text).map_err(not_a_plan)?;
    if format != DOCUMENT_FORMAT || plan_format != PLAN_FORMAT {
        return Err(format!(
            "{} has plan format {format}/{plan_format}, this powerbook reads \
             {DOCUMENT_FORMAT}/{PLAN_FORMAT}: make the plan again",
            path.display(),
        ));
    }
    serde_json::from_str(&text).map_err(not_a_plan)
}

/// With `--plan` and no RUNBOOK, the runbook is the one the plan was made from.
pub fn fill_runbook_path(args: &mut RunArgs) -> Result<(), Outcome> {
    if !args.runbook.as_os_str().is_empty() {
        return Ok(());
    }
    let Some(path) = &args.plan else {
        eprintln!("error: name the RUNBOOK to run (or a saved plan with --plan FILE)");
        return Err(Outcome::Usage);
    };
    match load_saved(path) {
        Ok(doc) => {
            args.runbook = PathBuf::from(doc.runbook_path);
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(Outcome::Usage)
        }
    }
}

/// The plan `run` executes: resolved now, or the saved one after checking that neither the
/// runbook nor any of its VMs changed since it was made.
pub async fn plan_for_run(
    client: &Client,
    runbook: &Runbook,
    args: &RunArgs,
) -> Result<Plan, Outcome> {
    let Some(path) = &args.plan else {
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
            args.runbook.display(),
            path.display(),
            short_hash(&saved.source_hash),
            short_hash(&runbook.source_hash),
            args.runbook.display(),
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
    let vms = client.list_vms().await.map_err(|e| {
        eprintln!("error: cannot list the VMs: {e}");
        Outcome::Aborted
    })?;
    let stale = stale_vms(&saved, &vms);
    if stale.is_empty() {
        eprintln!(
            "Saved plan {} (made {}): every planned VM is as the plan saw it",
            path.display(),
            saved.created_at
        );
        return Ok(saved);
    }
    let table = stale_table(&stale);
    if args.replan {
        eprintln!(
            "note: {} changed since the plan in {} was made; --replan: planning again from \
             the current states\n{table}",
            count_vms(stale.len()),
            path.display()
        );
        return Ok(build(runbook, &vms, client.endpoint()));
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

/// A planned VM that is no longer as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleVm {
    pub name: String,
    /// Steps that planned it, in plan order.
    pub steps: Vec<String>,
    pub planned: String,
    /// `None`: the API no longer lists it.
    pub now: Option<String>,
}

fn state_text(state: &VmState, deallocated: Option<bool>) -> String {
    if deallocated == Some(true) {
        format!("{state} (deallocated)")
    } else {
        state.to_string()
    }
}

/// Every planned VM whose state (or deallocation) differs from what the plan saw, or that
/// is gone.
pub fn stale_vms(plan: &Plan, vms: &[VirtualMachine]) -> Vec<StaleVm> {
    let now: HashMap<u64, &VirtualMachine> = vms.iter().map(|v| (v.id, v)).collect();
    let mut out: BTreeMap<u64, StaleVm> = BTreeMap::new();
    let mut order = Vec::new();
    for step in &plan.steps {
        for t in &step.targets {
            let current = now.get(&t.vm.id);
            let changed = match current {
                None => true,
                Some(vm) => {
                    vm.state != t.state_seen
                        || (vm.deallocated == Some(true)) != (t.deallocated == Some(true))
                }
            };
            if !changed {
                continue;
            }
            let entry = out.entry(t.vm.id).or_insert_with(|| {
                order.push(t.vm.id);
                StaleVm {
                    name: t.vm.name.clone(),
                    steps: Vec::new(),
                    planned: state_text(&t.state_seen, t.deallocated),
                    now: current.map(|vm| state_text(&vm.state, vm.deallocated)),
                }
            });
            if !entry.steps.contains(&step.name) {
                entry.steps.push(step.name.clone());
            }
        }
    }
    order.into_iter().filter_map(|id| out.remove(&id)).collect()
}

fn stale_table(stale: &[StaleVm]) -> String {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if test_mode() {
        t.force_no_tty().set_width(TEST_WIDTH);
    }
    t.set_header(vec!["VM", "Step", "Plan saw", "Now"]);
    for s in stale {
        t.add_row(vec![
            s.name.clone(),
            s.steps.join(", "),
            s.planned.clone(),
            s.now.clone().unwrap_or_else(|| "gone (not listed)".into()),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{runbook, sel_vm, step, vm};
    use crate::runbook::model::Action;

    #[test]
    fn stale_vms_lists_changed_and_vanished_vms_once_with_their_steps() {
        let vms = vec![
            vm(1, "web-01", "web", VmState::On, "KVM"),
            vm(2, "web-02", "web", VmState::On, "KVM"),
            vm(3, "web-03", "web", VmState::Off, "KVM"),
        ];
        let rb = runbook(vec![
            step("down", Action::Off, vec![sel_vm("web-*")]),
            step("up", Action::On, vec![sel_vm("web-*")]),
        ]);
        let plan = build(&rb, &vms, "http://x/api");
        assert!(stale_vms(&plan, &vms).is_empty());
        let mut now = vms.clone();
        now[0].state = VmState::Off;
        now.remove(2);
        let stale = stale_vms(&plan, &now);
        assert_eq!(
            stale,
            [
                StaleVm {
                    name: "web-01".into(),
                    steps: vec!["down".into(), "up".into()],
                    planned: "ON".into(),
                    now: Some("OFF".into()),
                },
                StaleVm {
                    name: "web-03".into(),
                    steps: vec!["down".into(), "up".into()],
                    planned: "OFF".into(),
                    now: None,
                },
            ]
        );
    }

    #[test]
    fn deallocation_counts_as_a_change() {
        let vms = vec![vm(1, "az-01", "az", VmState::Off, "AZURE")];
        let rb = runbook(vec![step("up", Action::On, vec![sel_vm("az-*")])]);
        let plan = build(&rb, &vms, "http://x/api");
        let mut now = vms.clone();
        now[0].deallocated = Some(true);
        let stale = stale_vms(&plan, &now);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].now.as_deref(), Some("OFF (deallocated)"));
    }
}
