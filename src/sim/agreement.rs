//! The planner and the simulator agree on what a power action does to a VM: the planner's
//! `evaluate` (act / skip / refuse with a code) against the simulator's `decide` on the
//! request the executor sends for the action. The space is finite, so every cell is checked;
//! the deliberate differences are named and checked too, so a change on either side fails.
//!
//! Protection is outside the space: the planner decides it before `evaluate`, the
//! simulator answers VM-120 first whatever the state.

use super::config::{LockedCode, SimAction, SimConfig};
use super::error::ApiError;
use super::transitions::{Transition, VmFacts, decide};
use crate::abiquo::codes::Code;
use crate::abiquo::model::{PowerRequest, VmState};
use crate::plan::rules::{evaluate, reached};
use crate::plan::{Disposition, PlannedFallback};
use crate::runbook::model::Action;
use std::collections::BTreeSet;

/// Hypervisors and the `deallocated` values their VMs can carry.
const HYPERVISORS: [(&str, Option<bool>); 6] = [
    ("KVM", None),
    ("VMX_04", None),
    ("XEN_3", None),
    ("AZURE", None),
    ("AZURE", Some(false)),
    ("AZURE", Some(true)),
];

#[derive(Debug, Clone)]
struct Cell {
    action: Action,
    state: VmState,
    hypervisor: &'static str,
    deallocated: Option<bool>,
    fallback: bool,
}

impl Cell {
    fn azure(&self) -> bool {
        self.hypervisor == "AZURE"
    }

    fn deployed(&self) -> bool {
        !matches!(self.state, VmState::NotAllocated | VmState::Allocated)
    }

    fn planned(&self) -> Disposition {
        let fallback = PlannedFallback {
            action: Action::Off,
            after_ms: 300_000,
        };
        evaluate(
            self.action,
            &self.state,
            self.deallocated,
            Some(self.hypervisor),
            self.fallback.then_some(&fallback),
        )
    }

    fn answered(&self, cfg: &SimConfig) -> Result<Transition, ApiError> {
        let facts = VmFacts {
            state: &self.state,
            hypervisor: self.hypervisor,
            protected: false,
            deallocated: self.deallocated,
        };
        decide(&facts, self.request(), cfg)
    }

    /// The request the planner sends (a restart of an OFF VM sends its power on), or the
    /// action's own when it sends none.
    fn request(&self) -> PowerRequest {
        match self.planned() {
            Disposition::Act { request, .. } => request,
            _ => self.action.request(),
        }
    }
}

/// Every VM state (an unknown one too) × action × hypervisor × shutdown fallback or not.
fn cells() -> Vec<Cell> {
    let mut states = VmState::KNOWN.to_vec();
    states.push(VmState::Other("MIGRATING".into()));
    let mut out = Vec::new();
    for action in Action::ALL {
        for state in &states {
            for (hypervisor, deallocated) in HYPERVISORS {
                for fallback in [false, true] {
                    out.push(Cell {
                        action,
                        state: state.clone(),
                        hypervisor,
                        deallocated,
                        fallback,
                    });
                }
            }
        }
    }
    out
}

/// Where the planner deliberately says something else than the API would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// LOCKED: the planner refuses without a code because `run` waits for the lock and
    /// decides then; the API answers the configured locked code.
    LockedWaits,
    /// `on` on a PAUSED VM: the planner refuses and points at `resume`; the API would
    /// accept the PUT ON as a resume.
    PausedNeedsResume,
    /// `resume` on an OFF or CONFIGURED VM: the planner refuses and points at `on`; the API
    /// would power the VM on.
    ResumeNeedsPaused,
    /// `deallocate` on a VM that is not Azure: the planner refuses without a code; the API
    /// would take the PUT OFF as a plain hard off.
    DeallocateNeedsAzure,
    /// `off`/`shutdown` on a CONFIGURED VM: never powered on, so the planner skips it as
    /// already off; the API refuses VM-4.
    ConfiguredCountsAsOff,
}

/// Checks one cell against the rules of agreement (default configuration). `Ok(None)`:
/// the two sides agree; `Ok(Some(d))`: a listed difference, whose API answer is checked too.
fn judge(cell: &Cell, cfg: &SimConfig) -> Result<Option<Difference>, String> {
    let planned = cell.planned();
    let answered = cell.answered(cfg);
    let refused_with = |code: Code| match &answered {
        Err(e) if e.code == code.code() => Ok(()),
        other => Err(format!("expected the API to refuse {code}, got {other:?}")),
    };
    let request = cell.request();
    match &planned {
        Disposition::Act { .. } => {
            let t = answered.map_err(|e| format!("planner acts, API refuses {e:?}"))?;
            // A restart's first request leads down; its power on follows.
            if t.target != request.target_state() {
                return Err(format!(
                    "API leads to {}, the request to {}",
                    t.target,
                    request.target_state()
                ));
            }
            if !request.task_types(&cell.state).contains(&t.task_type) {
                return Err(format!(
                    "task type {} is not one {request} may record",
                    t.task_type
                ));
            }
            if cell.action == Action::Deallocate && t.target_deallocated != Some(true) {
                return Err(format!(
                    "deallocate leaves deallocated = {:?}",
                    t.target_deallocated
                ));
            }
            Ok(None)
        }
        Disposition::Refuse {
            code: Some(code), ..
        } => match &answered {
            Err(e) if e.code == *code => Ok(None),
            other => Err(format!("planner refuses {code}, API answers {other:?}")),
        },
        Disposition::Refuse { code: None, .. } => {
            if cell.state == VmState::Locked {
                refused_with(cfg.locked_code.code())?;
                return Ok(Some(Difference::LockedWaits));
            }
            if cell.action == Action::Deallocate && !cell.azure() {
                let hard_off = Cell {
                    action: Action::Off,
                    ..cell.clone()
                };
                if answered != hard_off.answered(cfg) {
                    return Err("the API does not treat it as a hard off".into());
                }
                return Ok(Some(Difference::DeallocateNeedsAzure));
            }
            let accepted_as = |action: SimAction| match &answered {
                Ok(t) if t.action == action && t.target == VmState::On => Ok(()),
                other => Err(format!(
                    "expected the API to accept it as {action:?}, got {other:?}"
                )),
            };
            match (cell.action, &cell.state) {
                (Action::On, VmState::Paused) => {
                    accepted_as(SimAction::Resume)?;
                    Ok(Some(Difference::PausedNeedsResume))
                }
                (Action::Resume, VmState::Off | VmState::Configured) => {
                    accepted_as(SimAction::On)?;
                    Ok(Some(Difference::ResumeNeedsPaused))
                }
                _ => Err("planner refuses without a code and no difference explains it".into()),
            }
        }
        Disposition::Skip { .. } => {
            let off_like = matches!(cell.action, Action::Off | Action::Shutdown);
            if !cell.deployed() {
                // Nothing runs on a VM that is not deployed: every "off" goal holds already.
                if !(off_like || cell.action == Action::Deallocate) {
                    return Err(
                        "skips a VM that is not deployed for a goal it does not meet".into(),
                    );
                }
                refused_with(Code::Vm11)?;
                return Ok(None);
            }
            if cell.state == VmState::Configured && off_like {
                refused_with(Code::Vm4)?;
                return Ok(Some(Difference::ConfiguredCountsAsOff));
            }
            if !reached(cell.action, &cell.state, cell.deallocated) {
                return Err("skips a VM that is not where the action leads".into());
            }
            // The API refuses a request for the state the VM already is in (a XEN pause
            // earlier, by the hypervisor check that comes before the state).
            let xen_pause = cell.action == Action::Pause && cell.hypervisor == "XEN_3";
            refused_with(if xen_pause { Code::Vm6 } else { Code::Vm4 })?;
            Ok(None)
        }
        Disposition::Excluded | Disposition::Protected { .. } => {
            Err("evaluate never decides exclusion or protection".into())
        }
    }
}

#[test]
fn planner_and_simulator_agree_on_every_state_action_and_hypervisor() {
    let cfg = SimConfig::empty("agreement");
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for cell in cells() {
        // A reached goal is skipped, except reset and restart: they are not idempotent, so
        // they always act.
        if reached(cell.action, &cell.state, cell.deallocated)
            && !matches!(cell.action, Action::Reset | Action::Restart)
            && !matches!(cell.planned(), Disposition::Skip { .. })
        {
            failures.push(format!(
                "{cell:?}: reached but not skipped: {:?}",
                cell.planned()
            ));
        }
        match judge(&cell, &cfg) {
            Ok(Some(d)) => {
                seen.insert(d);
            }
            Ok(None) => {}
            Err(why) => failures.push(format!("{cell:?}: {why} (planned {:?})", cell.planned())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every listed difference still happens: a fixed one must leave the list.
    let all = BTreeSet::from([
        Difference::LockedWaits,
        Difference::PausedNeedsResume,
        Difference::ResumeNeedsPaused,
        Difference::DeallocateNeedsAzure,
        Difference::ConfiguredCountsAsOff,
    ]);
    assert_eq!(seen, all);
}

/// The settings that change the simulator's answers, and exactly where. The planner follows
/// the default table, so with `allow_paused_off` or `azure_deallocate_stopped` the simulator
/// accepts what the planner refuses (VM-4) or skips (already OFF); `locked_code` changes the
/// code of the LOCKED refusal the planner does not predict; `resume_as_reset` only the task
/// type. The other settings do not touch the rules.
#[test]
fn only_the_transition_settings_change_the_simulators_answers() {
    type Set = fn(&mut SimConfig);
    type Applies = fn(&Cell) -> bool;
    // VM-6 comes before the state: a XEN pause never gets the locked code.
    let locked: Applies = |cell| {
        cell.state == VmState::Locked
            && !(cell.action == Action::Pause && cell.hypervisor == "XEN_3")
    };
    let default = SimConfig::empty("agreement");
    let settings: [(&str, Set, Applies); 7] = [
        (
            "allow_paused_off",
            |c| c.allow_paused_off = true,
            |cell| {
                cell.state == VmState::Paused
                    && matches!(
                        cell.action,
                        Action::Off | Action::Shutdown | Action::Deallocate | Action::Restart
                    )
            },
        ),
        (
            "azure_deallocate_stopped",
            |c| c.azure_deallocate_stopped = true,
            |cell| {
                cell.azure()
                    && cell.deallocated == Some(false)
                    && cell.state == VmState::Off
                    && matches!(cell.action, Action::Off | Action::Deallocate)
            },
        ),
        (
            "resume_as_reset",
            |c| c.resume_as_reset = true,
            |cell| {
                cell.state == VmState::Paused && matches!(cell.action, Action::On | Action::Resume)
            },
        ),
        (
            "locked_code vm-2",
            |c| c.locked_code = LockedCode::Vm2,
            locked,
        ),
        (
            "locked_code async-task-2",
            |c| c.locked_code = LockedCode::AsyncTask2,
            locked,
        ),
        (
            "ack_sets_ack_error",
            |c| c.ack_sets_ack_error = true,
            |_| false,
        ),
        ("emit_entity", |c| c.emit_entity = true, |_| false),
    ];
    for (name, set, applies) in settings {
        let mut cfg = default.clone();
        set(&mut cfg);
        for cell in cells() {
            let changed = cell.answered(&cfg) != cell.answered(&default);
            assert_eq!(changed, applies(&cell), "{name} on {cell:?}");
        }
    }
}
