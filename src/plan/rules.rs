//! What an action does to a VM in a given state: act, skip (already there) or refuse (the API
//! would reject it). Follows the transition table of the API reference (§4.2); the executor
//! applies the same rules again right before acting, on the state it has just read.

use crate::abiquo::codes::Code;
use crate::abiquo::model::{PowerRequest, VmState};
use crate::plan::{Disposition, PlannedFallback};
use crate::runbook::model::Action;

/// Start of the reason given for a LOCKED VM (`plan` adds which task holds it).
pub const LOCKED_REASON: &str = "LOCKED by a running task";

pub fn is_azure(hypervisor: Option<&str>) -> bool {
    hypervisor.is_some_and(|h| h.eq_ignore_ascii_case("AZURE"))
}

/// The disposition of `action` on a VM in `state`. Protection and exclusion are decided
/// before this (they do not depend on the state).
pub fn evaluate(
    action: Action,
    state: &VmState,
    deallocated: Option<bool>,
    hypervisor: Option<&str>,
    fallback: Option<&PlannedFallback>,
) -> Disposition {
    let refuse = |code: Code| Disposition::Refuse {
        code: Some(code.code().to_owned()),
        reason: code.message().to_owned(),
    };
    let skip = |reason: String| Disposition::Skip { reason };
    let act_with = |request: PowerRequest| Disposition::Act {
        from: state.clone(),
        to: action.target_state(),
        request,
        deallocate: action == Action::Deallocate,
        fallback: fallback
            .filter(|_| {
                request.is_graceful() && matches!(action, Action::Shutdown | Action::Restart)
            })
            .copied(),
    };
    let act = || act_with(action.request());

    if action == Action::Deallocate && !is_azure(hypervisor) {
        return Disposition::Refuse {
            code: None,
            reason: format!(
                "deallocate needs an Azure VM (hypervisor {})",
                hypervisor.unwrap_or("unknown")
            ),
        };
    }
    // The API refuses a pause on XEN before it looks at the state; one already paused
    // needs no request at all.
    if action == Action::Pause
        && *state != VmState::Paused
        && hypervisor.is_some_and(|h| h.eq_ignore_ascii_case("XEN_3"))
    {
        return refuse(Code::Vm6);
    }
    match state {
        VmState::Locked => {
            // The API refuses any power action while a task holds the VM; `run` waits for
            // the lock (bounded) and decides on the state it finds then.
            return Disposition::Refuse {
                code: None,
                reason: format!("{LOCKED_REASON}; `run` waits for it (--lock-wait), then decides"),
            };
        }
        VmState::NotAllocated | VmState::Allocated => {
            // Not deployed: nothing runs, so "off"-like goals already hold.
            return if matches!(action, Action::Off | Action::Shutdown | Action::Deallocate) {
                skip(format!("not deployed ({state})"))
            } else {
                refuse(Code::Vm11)
            };
        }
        VmState::Unknown | VmState::Other(_) => return refuse(Code::Vm11),
        _ => {}
    }
    let from = state.as_str();
    match action {
        Action::On => match state {
            VmState::On => skip("already ON".into()),
            VmState::Off | VmState::Configured => act(),
            VmState::Paused => Disposition::Refuse {
                code: None,
                reason: "the VM is PAUSED: use the `resume` action".into(),
            },
            _ => refuse(Code::Vm4),
        },
        Action::Off | Action::Shutdown => match state {
            VmState::Off => skip("already OFF".into()),
            VmState::Configured => skip("never powered on (CONFIGURED)".into()),
            VmState::On => act(),
            _ => refuse(Code::Vm4),
        },
        Action::Deallocate => match state {
            VmState::Off if deallocated == Some(true) => skip("already deallocated".into()),
            VmState::On => act(),
            // OFF → OFF is VM-4: a stopped Azure VM must be powered on to be deallocated.
            _ => refuse(Code::Vm4),
        },
        Action::Pause => match state {
            VmState::Paused => skip("already PAUSED".into()),
            VmState::On => act(),
            _ => refuse(Code::Vm4),
        },
        Action::Resume => match state {
            VmState::On => skip("already ON".into()),
            VmState::Paused => act(),
            _ => Disposition::Refuse {
                code: None,
                reason: format!("the VM is {from}, not PAUSED: use the `on` action"),
            },
        },
        Action::Reset => match state {
            VmState::On => act(),
            _ => refuse(Code::Vm26),
        },
        Action::Restart => match state {
            VmState::On => act(),
            // Down already: the restart is its power on.
            VmState::Off | VmState::Configured => act_with(Action::On.request()),
            // The API refuses the shutdown of a PAUSED VM (VM-4): `resume` it first.
            _ => refuse(Code::Vm4),
        },
    }
}

/// Whether a VM in `state` (with `deallocated`) already is where `action` leads.
pub fn reached(action: Action, state: &VmState, deallocated: Option<bool>) -> bool {
    match action {
        Action::Deallocate => *state == VmState::Off && deallocated == Some(true),
        a => *state == a.target_state(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::{PowerRequest, PowerState};
    use crate::runbook::model::Fallback;
    use std::time::Duration;

    fn kind(d: &Disposition) -> String {
        match d {
            Disposition::Act { .. } => "act".into(),
            Disposition::Skip { reason } => format!("skip: {reason}"),
            Disposition::Refuse { code, .. } => {
                format!("refuse {}", code.as_deref().unwrap_or("-"))
            }
            Disposition::Excluded => "excluded".into(),
            Disposition::Protected { .. } => "protected".into(),
        }
    }

    #[test]
    fn transition_table_matches_the_api_reference() {
        use Action::*;
        let kvm = Some("KVM");
        let cases: &[(Action, VmState, &str)] = &[
            (On, VmState::Off, "act"),
            (On, VmState::Configured, "act"),
            (On, VmState::On, "skip: already ON"),
            (On, VmState::NotAllocated, "refuse VM-11"),
            (Off, VmState::On, "act"),
            (Off, VmState::Off, "skip: already OFF"),
            (Off, VmState::Paused, "refuse VM-4"),
            (
                Off,
                VmState::NotAllocated,
                "skip: not deployed (NOT_ALLOCATED)",
            ),
            (Shutdown, VmState::On, "act"),
            (
                Shutdown,
                VmState::Configured,
                "skip: never powered on (CONFIGURED)",
            ),
            (Pause, VmState::On, "act"),
            (Pause, VmState::Paused, "skip: already PAUSED"),
            (Pause, VmState::Off, "refuse VM-4"),
            (Resume, VmState::Paused, "act"),
            (Resume, VmState::On, "skip: already ON"),
            (Resume, VmState::Off, "refuse -"),
            (Reset, VmState::On, "act"),
            (Reset, VmState::Off, "refuse VM-26"),
            (Reset, VmState::Paused, "refuse VM-26"),
            (Reset, VmState::Unknown, "refuse VM-11"),
            (Deallocate, VmState::On, "refuse -"),
        ];
        for (action, state, want) in cases {
            let d = evaluate(*action, state, None, kvm, None);
            assert_eq!(kind(&d), *want, "{action} on {state}");
        }
    }

    #[test]
    fn xen_cannot_pause_whatever_the_state() {
        for state in [VmState::On, VmState::Off, VmState::Locked] {
            let d = evaluate(Action::Pause, &state, None, Some("XEN_3"), None);
            assert_eq!(kind(&d), "refuse VM-6", "{state}");
        }
        let d = evaluate(Action::Off, &VmState::On, None, Some("XEN_3"), None);
        assert_eq!(kind(&d), "act");
    }

    #[test]
    fn deallocate_rules_on_azure() {
        let az = Some("AZURE");
        let d = evaluate(Action::Deallocate, &VmState::On, Some(false), az, None);
        assert_eq!(kind(&d), "act");
        let d = evaluate(Action::Deallocate, &VmState::Off, Some(true), az, None);
        assert_eq!(kind(&d), "skip: already deallocated");
        let d = evaluate(Action::Deallocate, &VmState::Off, Some(false), az, None);
        assert_eq!(kind(&d), "refuse VM-4");
    }

    #[test]
    fn locked_vms_are_refused_for_now_and_left_to_the_run() {
        let d = evaluate(Action::Off, &VmState::Locked, None, None, None);
        assert!(matches!(d, Disposition::Refuse { code: None, ref reason }
                if reason.starts_with(LOCKED_REASON) && reason.contains("--lock-wait")));
    }

    #[test]
    fn a_restart_shuts_an_on_vm_down_gracefully_and_only_powers_on_an_off_one() {
        let f = PlannedFallback::of(&Fallback {
            action: Action::Off,
            after: Duration::from_secs(60),
        });
        let on = evaluate(Action::Restart, &VmState::On, None, None, Some(&f));
        assert_eq!(
            on,
            Disposition::Act {
                from: VmState::On,
                to: VmState::On,
                request: PowerRequest::State {
                    target: PowerState::Off,
                    graceful: true
                },
                deallocate: false,
                fallback: Some(f),
            }
        );
        assert_eq!(
            on.reason(),
            "ON → OFF → ON (graceful, fallback hard off after 1m)"
        );
        let off = evaluate(Action::Restart, &VmState::Off, None, None, Some(&f));
        assert!(
            matches!(off, Disposition::Act { request, fallback: None, .. } if request == Action::On.request()),
            "{off:?}"
        );
        assert_eq!(off.reason(), "OFF → ON");
        let paused = evaluate(Action::Restart, &VmState::Paused, None, None, None);
        assert!(kind(&paused).starts_with("refuse"), "{paused:?}");
        let undeployed = evaluate(Action::Restart, &VmState::NotAllocated, None, None, None);
        assert_eq!(kind(&undeployed), "refuse VM-11");
        assert!(reached(Action::Restart, &VmState::On, None));
    }

    #[test]
    fn shutdown_transition_mentions_the_fallback() {
        let f = PlannedFallback::of(&Fallback {
            action: Action::Off,
            after: Duration::from_secs(300),
        });
        let d = evaluate(Action::Shutdown, &VmState::On, None, None, Some(&f));
        assert_eq!(
            d,
            Disposition::Act {
                from: VmState::On,
                to: VmState::Off,
                request: PowerRequest::State {
                    target: PowerState::Off,
                    graceful: true,
                },
                deallocate: false,
                fallback: Some(f),
            }
        );
        assert_eq!(
            d.reason(),
            "ON → OFF (graceful, fallback hard off after 5m)"
        );
    }

    #[test]
    fn acting_dispositions_read_as_before() {
        use Action::*;
        let az = Some("AZURE");
        let cases: &[(Action, VmState, &str)] = &[
            (On, VmState::Off, "OFF → ON"),
            (On, VmState::Configured, "CONFIGURED → ON"),
            (Off, VmState::On, "ON → OFF (hard)"),
            (Shutdown, VmState::On, "ON → OFF (graceful)"),
            (Deallocate, VmState::On, "ON → OFF (deallocated)"),
            (Pause, VmState::On, "ON → PAUSED"),
            (Resume, VmState::Paused, "PAUSED → ON (resume)"),
            (Reset, VmState::On, "ON → reset → ON"),
        ];
        for (action, state, want) in cases {
            let d = evaluate(*action, state, Some(false), az, None);
            assert_eq!(d.reason(), *want, "{action} on {state}");
        }
        // The fallback belongs to graceful shutdowns only.
        let f = PlannedFallback {
            action: Off,
            after_ms: 1000,
        };
        let d = evaluate(Off, &VmState::On, None, None, Some(&f));
        assert!(
            matches!(d, Disposition::Act { fallback: None, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn reached_checks_deallocation_for_deallocate_only() {
        assert!(reached(Action::Off, &VmState::Off, Some(false)));
        assert!(!reached(Action::Deallocate, &VmState::Off, Some(false)));
        assert!(reached(Action::Deallocate, &VmState::Off, Some(true)));
        assert!(reached(Action::Reset, &VmState::On, None));
    }
}
