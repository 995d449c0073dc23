//! The power-transition rules: whether the API accepts a power request on a VM, and what
//! the accepted request does (task type, target state, Azure deallocation).

use super::config::{SimAction, SimConfig};
use super::error::ApiError;
use crate::abiquo::codes::Code;
use crate::abiquo::model::{PowerRequest, PowerState, TaskType, VmState};

/// What an accepted request will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub action: SimAction,
    pub task_type: TaskType,
    pub target: VmState,
    /// Azure only: `deallocated` after success.
    pub target_deallocated: Option<bool>,
    /// Label in the mutation records.
    pub record: &'static str,
}

/// The VM facts the transition rules look at.
pub(crate) struct VmFacts<'a> {
    pub state: &'a VmState,
    pub hypervisor: &'a str,
    pub protected: bool,
    pub deallocated: Option<bool>,
}

/// The transition table of the reference (§4.2) plus the settings for what it leaves open.
/// Check order: protected (VM-120) → XEN pause (VM-6) → in hypervisor (VM-11 / locked
/// code) → transition (VM-4, VM-26). A state that cannot be requested (VM-10) never becomes
/// a [`PowerRequest`]: the routes refuse it first.
pub(crate) fn decide(
    vm: &VmFacts<'_>,
    request: PowerRequest,
    cfg: &SimConfig,
) -> Result<Transition, ApiError> {
    if vm.protected {
        return Err(Code::Vm120.into());
    }
    if matches!(
        request,
        PowerRequest::State {
            target: PowerState::Paused,
            ..
        }
    ) && vm.hypervisor == "XEN_3"
    {
        return Err(Code::Vm6.into());
    }
    match vm.state {
        VmState::On | VmState::Off | VmState::Paused | VmState::Configured => {}
        VmState::Locked => return Err(cfg.locked_code.code().into()),
        _ => return Err(Code::Vm11.into()),
    }
    let azure = vm.hypervisor == "AZURE";
    let dealloc = |v: bool| azure.then_some(v);
    // A hard OFF releases an Azure VM's compute; a graceful one keeps it.
    let power_off = |graceful: bool| {
        if graceful {
            (SimAction::Shutdown, dealloc(false))
        } else {
            (SimAction::Off, dealloc(true))
        }
    };
    let (action, target_deallocated) = match (request, vm.state) {
        (PowerRequest::Reset, VmState::On) => (SimAction::Reset, vm.deallocated),
        (PowerRequest::Reset, _) => return Err(Code::Vm26.into()),
        (PowerRequest::State { target, graceful }, from) => match (from, target) {
            (VmState::Configured | VmState::Off, PowerState::On) => (SimAction::On, dealloc(false)),
            (VmState::On, PowerState::Off) => power_off(graceful),
            (VmState::On, PowerState::Paused) => (SimAction::Pause, vm.deallocated),
            (VmState::Paused, PowerState::On) => (SimAction::Resume, dealloc(false)),
            (VmState::Paused, PowerState::Off) if cfg.allow_paused_off => power_off(graceful),
            (VmState::Off, PowerState::Off)
                if azure
                    && !graceful
                    && vm.deallocated == Some(false)
                    && cfg.azure_deallocate_stopped =>
            {
                power_off(false)
            }
            _ => return Err(Code::Vm4.into()),
        },
    };
    Ok(Transition {
        action,
        task_type: task_type(request, vm.state, cfg),
        target: request.target_state(),
        target_deallocated,
        record: record_label(request),
    })
}

/// The type the task of an accepted request gets: the first the model names for it, or
/// RESET for a resume when the 2.0 behaviour is configured.
fn task_type(request: PowerRequest, from: &VmState, cfg: &SimConfig) -> TaskType {
    let types = request.task_types(from);
    if cfg.resume_as_reset && types.contains(&TaskType::Reset) {
        return TaskType::Reset;
    }
    // `task_types` names at least one type for every request.
    types.into_iter().next().unwrap_or(TaskType::Reset)
}

/// How the mutation records name a request.
fn record_label(request: PowerRequest) -> &'static str {
    match request {
        PowerRequest::State {
            target: PowerState::On,
            ..
        } => "ON",
        PowerRequest::State {
            target: PowerState::Off,
            graceful: true,
        } => "OFF graceful",
        PowerRequest::State {
            target: PowerState::Off,
            graceful: false,
        } => "OFF",
        PowerRequest::State {
            target: PowerState::Paused,
            ..
        } => "PAUSED",
        PowerRequest::Reset => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::LockedCode;
    use axum::http::StatusCode;

    fn facts<'a>(state: &'a VmState, hypervisor: &'a str) -> VmFacts<'a> {
        VmFacts {
            state,
            hypervisor,
            protected: false,
            deallocated: (hypervisor == "AZURE").then_some(false),
        }
    }

    const ON: PowerRequest = PowerRequest::State {
        target: PowerState::On,
        graceful: false,
    };

    #[test]
    fn settings_open_the_transitions_the_reference_leaves_uncertain() {
        let mut cfg = SimConfig::empty("t");
        let paused_off = PowerRequest::HARD_OFF;
        let err = decide(&facts(&VmState::Paused, "KVM"), paused_off, &cfg).unwrap_err();
        assert_eq!(err.code, "VM-4");
        cfg.allow_paused_off = true;
        let t = decide(&facts(&VmState::Paused, "KVM"), paused_off, &cfg).unwrap();
        assert_eq!(t.task_type, TaskType::PowerOff);

        let resume = decide(&facts(&VmState::Paused, "KVM"), ON, &cfg).unwrap();
        assert_eq!(resume.task_type, TaskType::Resume);
        cfg.resume_as_reset = true;
        let resume = decide(&facts(&VmState::Paused, "KVM"), ON, &cfg).unwrap();
        assert_eq!(resume.task_type, TaskType::Reset);

        let err = decide(&facts(&VmState::Off, "AZURE"), paused_off, &cfg).unwrap_err();
        assert_eq!(err.code, "VM-4");
        cfg.azure_deallocate_stopped = true;
        let t = decide(&facts(&VmState::Off, "AZURE"), paused_off, &cfg).unwrap();
        assert_eq!(t.target_deallocated, Some(true));
    }

    #[test]
    fn locked_code_setting_picks_the_busy_error() {
        let mut cfg = SimConfig::empty("t");
        for (code, expected) in [
            (LockedCode::Vm11, "VM-11"),
            (LockedCode::Vm2, "VM-2"),
            (LockedCode::AsyncTask2, "ASYNC-TASK-2"),
        ] {
            cfg.locked_code = code;
            let e = decide(&facts(&VmState::Locked, "KVM"), PowerRequest::Reset, &cfg).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::CONFLICT, expected)
            );
        }
        // Not allocated stays VM-11 whatever the locked code.
        let e = decide(&facts(&VmState::NotAllocated, "KVM"), ON, &cfg).unwrap_err();
        assert_eq!(e.code, "VM-11");
    }

    #[test]
    fn xen_refuses_pause_with_vm6() {
        let cfg = SimConfig::empty("t");
        let pause = PowerRequest::State {
            target: PowerState::Paused,
            graceful: false,
        };
        let e = decide(&facts(&VmState::On, "XEN_3"), pause, &cfg).unwrap_err();
        assert_eq!(e.code, "VM-6");
    }
}
