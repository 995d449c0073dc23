//! One power request on a VM: what the client sends, the journal records and the simulator
//! judges.

use super::{TaskType, VmState};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The three states a power `PUT` may ask for (anything else is VM-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerState {
    On,
    Off,
    Paused,
}

impl PowerState {
    pub fn state(self) -> VmState {
        match self {
            PowerState::On => VmState::On,
            PowerState::Off => VmState::Off,
            PowerState::Paused => VmState::Paused,
        }
    }

    /// The requestable state `state` names, if it is one.
    pub fn of(state: &VmState) -> Option<PowerState> {
        match state {
            VmState::On => Some(PowerState::On),
            VmState::Off => Some(PowerState::Off),
            VmState::Paused => Some(PowerState::Paused),
            _ => None,
        }
    }
}

/// One power request on a VM, as the client sends it, the journal records it and the
/// simulator judges it. Serialised in journals: keep the shape stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PowerRequest {
    /// `PUT` on the VM's `state` link.
    State {
        target: PowerState,
        /// `gracefulShutdown: true` (guest-tools shutdown).
        #[serde(default)]
        graceful: bool,
    },
    /// `POST` on the VM's `reset` link. Not idempotent: never resent blindly.
    Reset,
}

impl PowerRequest {
    pub const HARD_OFF: PowerRequest = PowerRequest::State {
        target: PowerState::Off,
        graceful: false,
    };

    /// The state the VM is in once the request's task succeeded.
    pub fn target_state(self) -> VmState {
        match self {
            PowerRequest::State { target, .. } => target.state(),
            PowerRequest::Reset => VmState::On,
        }
    }

    /// A graceful shutdown (through the guest tools).
    pub fn is_graceful(self) -> bool {
        matches!(self, PowerRequest::State { graceful: true, .. })
    }

    /// Whether sending it twice is harmless (a second identical `PUT state` is refused,
    /// a second reset reboots again).
    pub fn is_idempotent(self) -> bool {
        matches!(self, PowerRequest::State { .. })
    }

    /// Task types the API may record for this request on a VM that was `from`.
    pub fn task_types(self, from: &VmState) -> Vec<TaskType> {
        match self {
            PowerRequest::Reset => vec![TaskType::Reset],
            PowerRequest::State { target, graceful } => match target {
                // 2.0 records a resume as RESET.
                PowerState::On if *from == VmState::Paused => {
                    vec![TaskType::Resume, TaskType::Reset, TaskType::PowerOn]
                }
                PowerState::On => vec![TaskType::PowerOn],
                PowerState::Off if graceful => vec![TaskType::Shutdown],
                PowerState::Off => vec![TaskType::PowerOff],
                PowerState::Paused => vec![TaskType::Pause],
            },
        }
    }
}

/// `PUT state OFF (graceful)`, `POST reset`.
impl fmt::Display for PowerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerRequest::State { target, graceful } => write!(
                f,
                "PUT state {}{}",
                target.state(),
                if *graceful { " (graceful)" } else { "" }
            ),
            PowerRequest::Reset => f.write_str("POST reset"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_requests_map_to_the_task_types_the_api_records() {
        let shutdown = PowerRequest::State {
            target: PowerState::Off,
            graceful: true,
        };
        assert_eq!(shutdown.task_types(&VmState::On), vec![TaskType::Shutdown]);
        assert_eq!(
            PowerRequest::HARD_OFF.task_types(&VmState::On),
            vec![TaskType::PowerOff]
        );
        let on = PowerRequest::State {
            target: PowerState::On,
            graceful: false,
        };
        assert!(on.task_types(&VmState::Paused).contains(&TaskType::Resume));
        assert_eq!(on.task_types(&VmState::Off), vec![TaskType::PowerOn]);
        assert_eq!(
            PowerRequest::Reset.task_types(&VmState::On),
            vec![TaskType::Reset]
        );
    }

    #[test]
    fn power_requests_read_back_from_their_journal_form() {
        for r in [shutdown_req(), PowerRequest::HARD_OFF, PowerRequest::Reset] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<PowerRequest>(&text).unwrap(), r);
        }
        assert_eq!(PowerRequest::Reset.to_string(), "POST reset");
        assert_eq!(shutdown_req().to_string(), "PUT state OFF (graceful)");
        assert!(!PowerRequest::Reset.is_idempotent());
    }

    fn shutdown_req() -> PowerRequest {
        PowerRequest::State {
            target: PowerState::Off,
            graceful: true,
        }
    }
}
