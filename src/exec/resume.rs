//! What an earlier, interrupted run already did, as the executor needs it to continue
//! without sending any power action twice. Built from a journal by `journal::resume`.

use crate::abiquo::model::TaskType;
use crate::exec::event::{Intent, VmResult};
use crate::runbook::model::Action;
use std::collections::HashMap;

/// The state of one VM of one step when the earlier run stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeVm {
    /// Finished earlier: the recorded result stands and the VM is not touched.
    Done(Box<VmResult>),
    /// A task was accepted for it: follow that task instead of sending anything.
    Reattach { href: String, intent: Intent },
    /// The intent was recorded but no answer: the request may or may not have been
    /// processed. Look at the VM's tasks and state before acting.
    Inspect {
        intent: Intent,
        /// When the intent was recorded (ms since the epoch).
        at_ms: u64,
        /// Task hrefs the earlier run already followed on this VM (not ours to adopt).
        known_tasks: Vec<String>,
    },
}

/// Per (step index, target index); VMs not in the map run as usual.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumeState {
    pub vms: HashMap<(usize, usize), ResumeVm>,
}

impl ResumeState {
    pub fn get(&self, step: usize, target: usize) -> Option<&ResumeVm> {
        self.vms.get(&(step, target))
    }

    /// Whether the VM's earlier result is replayed as is.
    pub fn is_done(&self, step: usize, target: usize) -> bool {
        matches!(self.get(step, target), Some(ResumeVm::Done(_)))
    }
}

impl Intent {
    /// Task types the API records for this request (as in the client's reconciliation).
    pub fn task_types(&self) -> Vec<TaskType> {
        self.request.task_types(&self.from)
    }

    /// The action whose target state tells whether the request took effect.
    pub fn effective_action(&self) -> Action {
        self.path.task_action(self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::{PowerRequest, VmState};
    use crate::exec::event::PathTaken;

    fn intent(action: Action, request: PowerRequest, from: VmState, to: VmState) -> Intent {
        Intent {
            action,
            request,
            from,
            to,
            path: PathTaken::Direct,
        }
    }

    #[test]
    fn a_restart_intent_is_judged_by_the_task_of_its_half() {
        let mut i = intent(
            Action::Restart,
            Action::Restart.request(),
            VmState::On,
            VmState::Off,
        );
        i.path = PathTaken::Graceful;
        assert_eq!(i.effective_action(), Action::Shutdown);
        i.path = PathTaken::Forced;
        assert_eq!(i.effective_action(), Action::Off);
        i.path = PathTaken::GracefulOn;
        assert_eq!(i.effective_action(), Action::On);
        i.path = PathTaken::Direct;
        assert_eq!(i.effective_action(), Action::On);
        assert_eq!(
            serde_json::to_value(PathTaken::ForcedOn).unwrap(),
            serde_json::json!("forced+on")
        );
    }

    #[test]
    fn intents_map_to_the_task_types_the_api_records() {
        let i = intent(Action::Reset, PowerRequest::Reset, VmState::On, VmState::On);
        assert_eq!(i.task_types(), [TaskType::Reset]);
        let i = intent(
            Action::Shutdown,
            Action::Shutdown.request(),
            VmState::On,
            VmState::Off,
        );
        assert_eq!(i.task_types(), [TaskType::Shutdown]);
        let i = intent(
            Action::Off,
            PowerRequest::HARD_OFF,
            VmState::On,
            VmState::Off,
        );
        assert_eq!(i.task_types(), [TaskType::PowerOff]);
        let i = intent(
            Action::Resume,
            Action::On.request(),
            VmState::Paused,
            VmState::On,
        );
        assert!(i.task_types().contains(&TaskType::Resume));
        let i = intent(
            Action::Pause,
            Action::Pause.request(),
            VmState::On,
            VmState::Paused,
        );
        assert_eq!(i.task_types(), [TaskType::Pause]);
    }

    #[test]
    fn a_forced_intent_is_judged_as_a_hard_off() {
        let mut i = intent(
            Action::Shutdown,
            PowerRequest::HARD_OFF,
            VmState::On,
            VmState::Off,
        );
        i.path = PathTaken::Forced;
        assert_eq!(i.effective_action(), Action::Off);
        assert_eq!(i.task_types(), [TaskType::PowerOff]);
    }

    #[test]
    fn intent_lines_carry_the_typed_request() {
        let i = intent(
            Action::Shutdown,
            Action::Shutdown.request(),
            VmState::On,
            VmState::Off,
        );
        let line = serde_json::to_string(&i).unwrap();
        assert!(line.contains(r#""request":{"kind":"state","target":"OFF","graceful":true}"#));
        assert_eq!(serde_json::from_str::<Intent>(&line).unwrap(), i);
        // The display text of the previous journal format is not a request.
        let old = line.replace(
            r#"{"kind":"state","target":"OFF","graceful":true}"#,
            r#""PUT state OFF (graceful)""#,
        );
        assert!(serde_json::from_str::<Intent>(&old).is_err());
    }
}
