//! The simulated cloud: the inventory's VDCs, vApps and VMs, and the power requests that
//! lock a VM and queue a task.
//!
//! Time is lazy: a task's STARTED and terminal instants are fixed when it is accepted and
//! pushed on a timeline; every access first applies the events that are due (`settle`).
//! No timer or thread per task, so 10k VMs cost nothing while idle.

mod catalog;
mod tasks;

pub(crate) use catalog::{ListFilter, Scope, SortBy};

use super::config::{SimAction, SimConfig};
use super::error::ApiError;
use super::rehearsal::{WorldEvent, WorldRecorder};
use super::stats::{Counters, MutationRecord, SimStats};
use super::transitions::{VmFacts, decide};
use super::vm::{VmSnapshot, VmStatic};
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::abiquo::model::{JobState, Link, PowerRequest, TaskState, User, VmState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use tasks::{Event, TaskRec};

struct VdcRec {
    id: u64,
    name: String,
    hypervisor: String,
    vapps: Vec<usize>,
    /// VM indices sorted by name.
    vms_by_name: Vec<usize>,
}

struct VappRec {
    id: u64,
    name: String,
    vdc: usize,
    vms_by_name: Vec<usize>,
}

struct VmRec {
    info: Arc<VmStatic>,
    vdc: usize,
    vapp: usize,
    state: VmState,
    deallocated: Option<bool>,
    guest_tools: bool,
    fail_rate: f64,
    fail_actions: Vec<SimAction>,
    forbidden: bool,
    /// Task indices, oldest first.
    tasks: Vec<usize>,
    /// The task whose outcome will set this VM's state.
    active: Option<usize>,
    /// Mutations accepted so far: with the seed, it picks this mutation's random draws.
    seq: u64,
}

/// The whole simulated cloud. Lives behind one mutex; every method is short.
pub(crate) struct World {
    cfg: Arc<SimConfig>,
    start_epoch_ms: u64,
    vdcs: Vec<VdcRec>,
    vapps: Vec<VappRec>,
    vms: Vec<VmRec>,
    vdc_index: HashMap<u64, usize>,
    vapp_index: HashMap<u64, usize>,
    vm_index: HashMap<u64, usize>,
    vm_by_name: HashMap<String, usize>,
    vms_by_name: Vec<usize>,
    tasks: Vec<TaskRec>,
    task_index: HashMap<String, usize>,
    timeline: BinaryHeap<Reverse<(u64, Event, usize)>>,
    in_flight: u64,
    max_in_flight: u64,
    mutations: BTreeMap<String, Vec<MutationRecord>>,
    /// A rehearsal's file of changes (`None`: nothing is kept).
    recorder: Option<WorldRecorder>,
}

/// SplitMix64 finaliser: spreads (seed, vm, sequence) over the RNG seed space.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A random (v4-shaped) UUID from the given RNG.
pub(crate) fn uuid(rng: &mut StdRng) -> String {
    let v: u128 = rng.random();
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl World {
    pub fn new(cfg: Arc<SimConfig>, start_epoch_ms: u64) -> World {
        let mut w = World {
            cfg: Arc::clone(&cfg),
            start_epoch_ms,
            vdcs: Vec::new(),
            vapps: Vec::new(),
            vms: Vec::new(),
            vdc_index: HashMap::new(),
            vapp_index: HashMap::new(),
            vm_index: HashMap::new(),
            vm_by_name: HashMap::new(),
            vms_by_name: Vec::new(),
            tasks: Vec::new(),
            task_index: HashMap::new(),
            timeline: BinaryHeap::new(),
            in_flight: 0,
            max_in_flight: 0,
            mutations: BTreeMap::new(),
            recorder: None,
        };
        let mut id_rng = StdRng::seed_from_u64(mix(cfg.seed ^ 0x5EED_0001));
        for vdc in &cfg.vdcs {
            let vdc_idx = w.vdcs.len();
            w.vdc_index.insert(vdc.id, vdc_idx);
            w.vdcs.push(VdcRec {
                id: vdc.id,
                name: vdc.name.clone(),
                hypervisor: vdc.hypervisor.clone(),
                vapps: Vec::new(),
                vms_by_name: Vec::new(),
            });
            let azure = vdc.hypervisor == "AZURE";
            for vapp in &vdc.vapps {
                let vapp_idx = w.vapps.len();
                w.vapp_index.insert(vapp.id, vapp_idx);
                w.vdcs[vdc_idx].vapps.push(vapp_idx);
                w.vapps.push(VappRec {
                    id: vapp.id,
                    name: vapp.name.clone(),
                    vdc: vdc_idx,
                    vms_by_name: Vec::new(),
                });
                for vm in &vapp.vms {
                    let vm_idx = w.vms.len();
                    w.vm_index.insert(vm.id, vm_idx);
                    w.vm_by_name.insert(vm.name.clone(), vm_idx);
                    w.vapps[vapp_idx].vms_by_name.push(vm_idx);
                    w.vdcs[vdc_idx].vms_by_name.push(vm_idx);
                    w.vms_by_name.push(vm_idx);
                    w.vms.push(VmRec {
                        info: Arc::new(VmStatic {
                            id: vm.id,
                            uuid: uuid(&mut id_rng),
                            name: vm.name.clone(),
                            label: vm.label.clone(),
                            vdc_id: vdc.id,
                            vdc_name: vdc.name.clone(),
                            vapp_id: vapp.id,
                            vapp_name: vapp.name.clone(),
                            hypervisor: vdc.hypervisor.clone(),
                            protected: vm.protected,
                            protected_cause: vm.protected_cause.clone(),
                            cpu: 2,
                            ram: 4096,
                            ips: vm.nic_ips(),
                        }),
                        vdc: vdc_idx,
                        vapp: vapp_idx,
                        state: vm.state.clone(),
                        deallocated: azure.then_some(vm.deallocated),
                        guest_tools: vm.guest_tools,
                        fail_rate: vm.fail_rate,
                        fail_actions: vm.fail_actions.clone(),
                        forbidden: vm.forbidden,
                        tasks: Vec::new(),
                        active: None,
                        seq: 0,
                    });
                }
            }
        }
        let vms = &w.vms;
        let by_name = |a: &usize, b: &usize| vms[*a].info.name.cmp(&vms[*b].info.name);
        let mut all = std::mem::take(&mut w.vms_by_name);
        all.sort_by(by_name);
        for d in &mut w.vdcs {
            d.vms_by_name.sort_by(by_name);
        }
        for a in &mut w.vapps {
            a.vms_by_name.sort_by(by_name);
        }
        w.vms_by_name = all;
        w
    }

    pub fn start_epoch_ms(&self) -> u64 {
        self.start_epoch_ms
    }

    fn epoch_s(&self, ms: u64) -> i64 {
        i64::try_from((self.start_epoch_ms + ms) / 1000).unwrap_or(i64::MAX)
    }

    /// Finds a VM by its full path; a VM under another VDC or vApp does not exist here.
    pub fn vm_at(&self, vdc: u64, vapp: u64, vm: u64) -> Result<usize, ApiError> {
        let idx = *self
            .vm_index
            .get(&vm)
            .ok_or_else(|| ApiError::from(Code::Vm1))?;
        let rec = &self.vms[idx];
        if self.vapps[rec.vapp].id != vapp || self.vdcs[rec.vdc].id != vdc {
            return Err(Code::Vm1.into());
        }
        Ok(idx)
    }

    pub fn vdc(&self, vdc: u64) -> Result<usize, ApiError> {
        self.vdc_index
            .get(&vdc)
            .copied()
            .ok_or_else(|| ApiError::from(Code::Vdc0))
    }

    pub fn vapp(&self, vdc: u64, vapp: u64) -> Result<usize, ApiError> {
        let vdc_idx = self.vdc(vdc)?;
        match self.vapp_index.get(&vapp) {
            Some(&i) if self.vapps[i].vdc == vdc_idx => Ok(i),
            _ => Err(Code::Vapp0.into()),
        }
    }

    /// Accepts or refuses a power request; on success the VM is LOCKED and a task queued.
    /// Returns the task and the fault injected into it, if any (`stuck`, `job_failure`).
    pub fn mutate(
        &mut self,
        now: u64,
        vm_idx: usize,
        user: usize,
        request: PowerRequest,
    ) -> Result<(usize, Option<&'static str>), ApiError> {
        self.settle(now);
        let vm = &self.vms[vm_idx];
        if vm.forbidden {
            return Err(Code::Gen4.into());
        }
        let vdc = &self.vdcs[vm.vdc];
        let transition = decide(
            &VmFacts {
                state: &vm.state,
                hypervisor: &vdc.hypervisor,
                protected: vm.info.protected,
                deallocated: vm.deallocated,
            },
            request,
            &self.cfg,
        )?;
        let graceful = transition.action == SimAction::Shutdown;

        // One RNG per (seed, VM, mutation number): the same seed gives the same durations
        // and failures per VM whatever the interleaving of concurrent clients.
        let vm = &mut self.vms[vm_idx];
        let mut rng = StdRng::seed_from_u64(mix(self.cfg.seed
            ^ mix(vm.info.id)
            ^ mix(vm.seq.wrapping_add(0xA5A5))));
        vm.seq += 1;
        let task_id = uuid(&mut rng);
        let job_id = format!("{task_id}.{}", uuid(&mut rng));
        let mean = self.cfg.duration_of(transition.action).as_secs_f64() * 1000.0;
        let jitter = self.cfg.task_jitter.as_secs_f64() * 1000.0;
        let offset = if jitter > 0.0 {
            rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        let duration = ((mean + offset).max(0.0) / self.cfg.speed).round() as u64;
        let started = (duration / 10).min(50);
        let (roll_vm, roll_job, roll_stuck): (f64, f64, f64) =
            (rng.random(), rng.random(), rng.random());
        let injected_failure = roll_job < self.cfg.faults.job_failure;
        let fails = vm.fail_actions.contains(&transition.action)
            || (graceful && !vm.guest_tools)
            || roll_vm < vm.fail_rate
            || injected_failure;
        let stuck = roll_stuck < self.cfg.faults.stuck_task;
        let fault = if stuck {
            Some("stuck")
        } else if injected_failure {
            Some("job_failure")
        } else {
            None
        };

        let ti = self.tasks.len();
        let records = self.mutations.entry(vm.info.name.clone()).or_default();
        records.push(MutationRecord {
            vm_id: vm.info.id,
            action: transition.record.to_owned(),
            task_id: task_id.clone(),
            task_type: transition.task_type.as_str().to_owned(),
            accepted_ms: now,
            started_ms: None,
            finished_ms: None,
            outcome: None,
        });
        let record = records.len() - 1;
        self.tasks.push(TaskRec {
            id: task_id.clone(),
            vm: vm_idx,
            user,
            task_type: transition.task_type,
            job_id,
            accepted_ms: now,
            fails,
            prev_state: vm.state.clone(),
            prev_deallocated: vm.deallocated,
            target: transition.target,
            target_deallocated: transition.target_deallocated,
            state: TaskState::Pending,
            job_state: JobState::Pending,
            rollback: JobState::Unknown,
            updated_ms: now,
            acked: false,
            record,
        });
        self.task_index.insert(task_id, ti);
        vm.state = VmState::Locked;
        vm.active = Some(ti);
        vm.tasks.push(ti);
        self.timeline
            .push(Reverse((now + started, Event::Start, ti)));
        if !stuck {
            self.timeline
                .push(Reverse((now + duration, Event::End, ti)));
        }
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        let vm = self.vms[vm_idx].info.id;
        self.log(|| WorldEvent::Power {
            at_ms: now,
            vm,
            user,
            request,
        });
        Ok((ti, fault))
    }

    /// Changes a VM's state directly (tests); detaches it from its running task.
    pub fn set_vm_state(&mut self, now: u64, name: &str, state: VmState) -> bool {
        self.settle(now);
        let Some(&idx) = self.vm_by_name.get(name) else {
            return false;
        };
        let azure = self.vdcs[self.vms[idx].vdc].hypervisor == "AZURE";
        let vm = &mut self.vms[idx];
        if azure && state == VmState::On {
            vm.deallocated = Some(false);
        }
        vm.state = state.clone();
        vm.active = None;
        self.log(|| WorldEvent::SetState {
            at_ms: now,
            vm: name.to_owned(),
            state,
        });
        true
    }

    /// Keeps every later change in `recorder`'s file.
    pub fn record_to(&mut self, recorder: WorldRecorder) {
        self.recorder = Some(recorder);
    }

    fn log(&mut self, event: impl FnOnce() -> WorldEvent) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&event());
        }
    }

    /// Applies a saved world's changes at their instants, as they were accepted then.
    pub fn replay(&mut self, events: &[WorldEvent]) -> Result<(), String> {
        for (i, event) in events.iter().enumerate() {
            let diverged = |what: String| {
                format!(
                    "change {} of the saved world does not replay: {what}",
                    i + 1
                )
            };
            match event {
                WorldEvent::Power {
                    at_ms,
                    vm,
                    user,
                    request,
                } => {
                    let idx = *self
                        .vm_index
                        .get(vm)
                        .ok_or_else(|| diverged(format!("no VM {vm}")))?;
                    self.mutate(*at_ms, idx, *user, *request)
                        .map_err(|e| diverged(format!("VM {vm} refused it ({})", e.code)))?;
                }
                WorldEvent::Ack { at_ms, task } => {
                    let ti = *self
                        .task_index
                        .get(task)
                        .ok_or_else(|| diverged(format!("no task {task}")))?;
                    self.ack(*at_ms, ti)
                        .map_err(|e| diverged(format!("task {task} refused it ({})", e.code)))?;
                }
                WorldEvent::SetState { at_ms, vm, state } => {
                    if !self.set_vm_state(*at_ms, vm, state.clone()) {
                        return Err(diverged(format!("no VM named {vm}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counters plus what the world knows (mutations, tasks in flight).
    pub fn stats(&mut self, now: u64, counters: &Counters) -> SimStats {
        self.settle(now);
        SimStats {
            requests: counters.requests.clone(),
            mutations: self.mutations.clone(),
            task_gets: counters.task_gets.clone(),
            tasks_in_flight: self.in_flight,
            max_tasks_in_flight: self.max_in_flight,
            rejected: counters.rejected.clone(),
            total_requests: counters.total,
            faults_injected: counters.faults.clone(),
            started_epoch_ms: self.start_epoch_ms,
            connections: 0,
        }
    }

    /// Snapshots of the given VMs (build answers from them after releasing the lock).
    pub fn snapshots(&self, indices: &[usize]) -> Vec<VmSnapshot> {
        indices.iter().map(|&i| self.snapshot(i)).collect()
    }

    pub fn snapshot(&self, vm_idx: usize) -> VmSnapshot {
        let vm = &self.vms[vm_idx];
        VmSnapshot {
            info: Arc::clone(&vm.info),
            state: vm.state.clone(),
            deallocated: vm.deallocated,
        }
    }

    /// Every VM, in inventory order.
    pub fn all_snapshots(&mut self, now: u64) -> Vec<VmSnapshot> {
        self.settle(now);
        (0..self.vms.len()).map(|i| self.snapshot(i)).collect()
    }

    pub fn vm_href_of(&self, base: &str, vm_idx: usize) -> String {
        self.vms[vm_idx].info.href(base)
    }

    fn user_name(&self, user: usize) -> &str {
        self.cfg
            .users
            .get(user)
            .map_or("admin", |u| u.name.as_str())
    }

    pub fn user_dto(&self, base: &str, user: usize) -> User {
        let name = self.user_name(user).to_owned();
        let href = format!("{base}/admin/enterprises/1/users/{}", user + 1);
        User {
            id: user as u64 + 1,
            nick: name.clone(),
            name,
            links: vec![
                Link::new("edit", href.clone()).typed(&media::unversioned(media::USER)),
                Link::new("enterprise", format!("{base}/admin/enterprises/1"))
                    .typed(&media::unversioned("enterprise"))
                    .titled("Abiquo"),
                Link::new("virtualmachines", format!("{href}/action/virtualmachines"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINES)),
                Link::new("pendingtasks", format!("{href}/action/pendingtasks"))
                    .typed(&media::unversioned(media::TASKS)),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_v4_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        let u = uuid(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
