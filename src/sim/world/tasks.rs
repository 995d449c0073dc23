//! Tasks: their records, the timeline that moves them (lazily, on access), `action/ack`,
//! and the `task` / `tasks` answers.

use super::World;
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::abiquo::model::{
    Collection, Job, JobState, Jobs, Link, Task, TaskState, TaskType, VmState,
};
use crate::sim::error::ApiError;
use crate::sim::rehearsal::WorldEvent;
use crate::sim::vm::user_link;
use std::cmp::Reverse;
use std::sync::Arc;

pub(super) struct TaskRec {
    pub(super) id: String,
    pub(super) vm: usize,
    pub(super) user: usize,
    pub(super) task_type: TaskType,
    pub(super) job_id: String,
    pub(super) accepted_ms: u64,
    pub(super) fails: bool,
    pub(super) prev_state: VmState,
    pub(super) prev_deallocated: Option<bool>,
    pub(super) target: VmState,
    pub(super) target_deallocated: Option<bool>,
    pub(super) state: TaskState,
    pub(super) job_state: JobState,
    pub(super) rollback: JobState,
    pub(super) updated_ms: u64,
    pub(super) acked: bool,
    /// Index into `mutations[vm name]`.
    pub(super) record: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Event {
    Start,
    End,
}

impl World {
    /// Applies every task event due at `now` (ms since start).
    pub fn settle(&mut self, now: u64) {
        while let Some(Reverse((at, event, ti))) = self.timeline.peek().copied() {
            if at > now {
                break;
            }
            self.timeline.pop();
            let vm_idx = self.tasks[ti].vm;
            let info = Arc::clone(&self.vms[vm_idx].info);
            let task = &mut self.tasks[ti];
            let record = self
                .mutations
                .get_mut(&info.name)
                .and_then(|r| r.get_mut(task.record));
            match event {
                Event::Start => {
                    task.state = TaskState::Started;
                    task.job_state = JobState::Started;
                    task.updated_ms = at;
                    if let Some(r) = record {
                        r.started_ms = Some(at);
                    }
                }
                Event::End => {
                    let (state, job, rollback) = if task.fails {
                        (
                            TaskState::FinishedUnsuccessfully,
                            JobState::Failed,
                            JobState::RollbackDone,
                        )
                    } else {
                        (
                            TaskState::FinishedSuccessfully,
                            JobState::Done,
                            JobState::Unknown,
                        )
                    };
                    task.state = state.clone();
                    task.job_state = job;
                    task.rollback = rollback;
                    task.updated_ms = at;
                    if let Some(r) = record {
                        r.finished_ms = Some(at);
                        r.outcome = Some(state.as_str().to_owned());
                    }
                    let (new_state, new_dealloc) = if task.fails {
                        (task.prev_state.clone(), task.prev_deallocated)
                    } else {
                        (task.target.clone(), task.target_deallocated)
                    };
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let vm = &mut self.vms[vm_idx];
                    if vm.active == Some(ti) {
                        vm.state = new_state;
                        vm.deallocated = new_dealloc;
                        vm.active = None;
                    }
                }
            }
        }
    }

    /// A task of the VM at `vm_idx`.
    pub fn task_of(&self, vm_idx: usize, task_id: &str) -> Result<usize, ApiError> {
        match self.task_index.get(task_id) {
            Some(&ti) if self.tasks[ti].vm == vm_idx => Ok(ti),
            _ => Err(Code::Task1.into()),
        }
    }

    pub fn task_id(&self, ti: usize) -> &str {
        &self.tasks[ti].id
    }

    /// `action/ack` on a failed task.
    pub fn ack(&mut self, now: u64, ti: usize) -> Result<(), ApiError> {
        self.settle(now);
        let ack_error = self.cfg.ack_sets_ack_error;
        let task = &mut self.tasks[ti];
        match task.state {
            TaskState::FinishedUnsuccessfully | TaskState::AckError => {
                task.acked = true;
                if ack_error && task.state != TaskState::AckError {
                    task.state = TaskState::AckError;
                    task.updated_ms = now;
                }
                let task = task.id.clone();
                self.log(|| WorldEvent::Ack { at_ms: now, task });
                Ok(())
            }
            _ => Err(Code::Task2.into()),
        }
    }

    pub fn task_dto(&self, base: &str, ti: usize) -> Task {
        let task = &self.tasks[ti];
        let vm = &self.vms[task.vm].info;
        let vm_href = vm.href(base);
        let self_href = format!("{vm_href}/tasks/{}", task.id);
        let mut links = vec![
            Link::new("self", self_href.clone()).typed(&media::unversioned(media::TASK)),
            Link::new("parent", format!("{vm_href}/tasks"))
                .typed(&media::unversioned(media::TASKS)),
            user_link(base, task.user, self.user_name(task.user)),
            Link::new("virtualmachine", vm_href)
                .typed(&media::unversioned(media::VIRTUAL_MACHINE))
                .titled(vm.name.clone()),
        ];
        if task.state == TaskState::FinishedUnsuccessfully && !task.acked {
            links.push(Link::new("acknowledge", format!("{self_href}/action/ack")));
        }
        let words = job_words(&task.task_type);
        let created = self.epoch_s(task.accepted_ms);
        let updated = self.epoch_s(task.updated_ms);
        Task {
            task_id: task.id.clone(),
            task_type: task.task_type.clone(),
            state: task.state.clone(),
            owner_id: vm.id.to_string(),
            user_id: (task.user + 1).to_string(),
            creation_timestamp: Some(created),
            timestamp: Some(updated),
            jobs: Jobs {
                links: Vec::new(),
                collection: vec![Job {
                    id: task.job_id.clone(),
                    parent_task_id: Some(task.id.clone()),
                    job_type: task.task_type.as_str().to_owned(),
                    description: format!(
                        "{} task's {words} on virtual machine with id {}",
                        capitalised(words),
                        vm.id
                    ),
                    state: task.job_state.clone(),
                    rollback_state: task.rollback.clone(),
                    creation_timestamp: Some(created),
                    timestamp: Some(updated),
                    links: Vec::new(),
                }],
            },
            links,
        }
    }

    /// The VM's tasks, newest first.
    pub fn tasks_dto(&self, base: &str, vm_idx: usize) -> Collection<Task> {
        let vm = &self.vms[vm_idx];
        let href = vm.info.href(base);
        Collection {
            total_size: None,
            links: vec![
                Link::new("self", format!("{href}/tasks")).typed(&media::unversioned(media::TASKS)),
                Link::new("parent", href).typed(&media::unversioned(media::VIRTUAL_MACHINE)),
            ],
            collection: vm
                .tasks
                .iter()
                .rev()
                .map(|&ti| self.task_dto(base, ti))
                .collect(),
        }
    }
}

fn job_words(t: &TaskType) -> &'static str {
    match t {
        TaskType::PowerOn => "power on",
        TaskType::PowerOff => "power off",
        TaskType::Shutdown => "shutdown",
        TaskType::Pause => "pause",
        TaskType::Resume => "resume",
        TaskType::Reset => "reset",
        _ => "operation",
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
