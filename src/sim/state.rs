//! The simulated cloud: VMs, tasks, and the power-transition rules.
//!
//! Time is lazy: a task's STARTED and terminal instants are fixed when it is accepted and
//! pushed on a timeline; every access first applies the events that are due (`settle`).
//! No timer or thread per task, so 10k VMs cost nothing while idle.

use super::config::{LockedCode, SimAction, SimConfig};
use super::stats::{Counters, MutationRecord, SimStats};
use crate::abiquo::media;
use crate::abiquo::model::{
    Collection, Job, JobState, Jobs, Link, Task, TaskState, TaskType, User, VirtualAppliance,
    VirtualDatacenter, VirtualMachine, VirtualMachineStateBody, VmState,
};
use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

/// A refusal as the API answers it: status + errors body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    fn conflict(code: &str, message: &str) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn vm_missing() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "VM-1",
            "The requested virtual machine does not exist",
        )
    }

    pub fn vdc_missing() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "VDC-0",
            "The requested virtual datacenter does not exist",
        )
    }

    pub fn task_missing() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "TASK-1",
            "The requested task does not exist",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "GEN-4",
            "Not enough permissions to perform this action",
        )
    }

    pub fn bad_state_value() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VM-10",
            "The virtual machine is in a state that does not allow the request; the requested state must be ON, OFF or PAUSED",
        )
    }
}

/// A power request on a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PowerRequest {
    State { target: VmState, graceful: bool },
    Reset,
}

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

fn locked_error(code: LockedCode) -> ApiError {
    match code {
        LockedCode::Vm11 => not_in_hypervisor(),
        LockedCode::Vm2 => ApiError::conflict(
            "VM-2",
            "The virtual machine is already locked by another operation",
        ),
        LockedCode::AsyncTask2 => ApiError::conflict(
            "ASYNC-TASK-2",
            "Unable to operate with a Taskable related to a task in progress",
        ),
    }
}

fn not_in_hypervisor() -> ApiError {
    ApiError::conflict(
        "VM-11",
        "The virtual machine is not in any hypervisor. Therefore the change of state cannot be applied",
    )
}

fn invalid_transition() -> ApiError {
    ApiError::conflict(
        "VM-4",
        "The virtual machine cannot change to the required state",
    )
}

/// The transition table of the reference (§4.2) plus the settings for what it leaves open.
/// Check order: value (VM-10) → protected (VM-120) → XEN pause (VM-6) → in hypervisor
/// (VM-11 / locked code) → transition (VM-4, VM-26).
pub(crate) fn decide(
    vm: &VmFacts<'_>,
    request: &PowerRequest,
    cfg: &SimConfig,
) -> Result<Transition, ApiError> {
    if let PowerRequest::State { target, .. } = request
        && !matches!(target, VmState::On | VmState::Off | VmState::Paused)
    {
        return Err(ApiError::bad_state_value());
    }
    if vm.protected {
        return Err(ApiError::conflict(
            "VM-120",
            "The virtual machine is protected and cannot be used",
        ));
    }
    if matches!(
        request,
        PowerRequest::State {
            target: VmState::Paused,
            ..
        }
    ) && vm.hypervisor == "XEN_3"
    {
        return Err(ApiError::conflict(
            "VM-6",
            "The virtual machine does not support the action PAUSE",
        ));
    }
    match vm.state {
        VmState::On | VmState::Off | VmState::Paused | VmState::Configured => {}
        VmState::Locked => return Err(locked_error(cfg.locked_code)),
        _ => return Err(not_in_hypervisor()),
    }
    let azure = vm.hypervisor == "AZURE";
    let dealloc = |v: bool| azure.then_some(v);
    let t = |action, task_type, target, target_deallocated, record| Transition {
        action,
        task_type,
        target,
        target_deallocated,
        record,
    };
    let resume_type = if cfg.resume_as_reset {
        TaskType::Reset
    } else {
        TaskType::Resume
    };
    let power_on = || {
        t(
            SimAction::On,
            TaskType::PowerOn,
            VmState::On,
            dealloc(false),
            "ON",
        )
    };
    let power_off = |graceful: bool| {
        if graceful {
            t(
                SimAction::Shutdown,
                TaskType::Shutdown,
                VmState::Off,
                dealloc(false),
                "OFF graceful",
            )
        } else {
            t(
                SimAction::Off,
                TaskType::PowerOff,
                VmState::Off,
                dealloc(true),
                "OFF",
            )
        }
    };
    match (request, vm.state) {
        (PowerRequest::Reset, VmState::On) => Ok(t(
            SimAction::Reset,
            TaskType::Reset,
            VmState::On,
            vm.deallocated,
            "reset",
        )),
        (PowerRequest::Reset, _) => Err(ApiError::conflict(
            "VM-26",
            "The allowed power state for resetting a virtual machine is ON",
        )),
        (PowerRequest::State { target, graceful }, from) => match (from, target) {
            (VmState::Configured | VmState::Off, VmState::On) => Ok(power_on()),
            (VmState::On, VmState::Off) => Ok(power_off(*graceful)),
            (VmState::On, VmState::Paused) => Ok(t(
                SimAction::Pause,
                TaskType::Pause,
                VmState::Paused,
                vm.deallocated,
                "PAUSED",
            )),
            (VmState::Paused, VmState::On) => Ok(t(
                SimAction::Resume,
                resume_type,
                VmState::On,
                dealloc(false),
                "ON",
            )),
            (VmState::Paused, VmState::Off) if cfg.allow_paused_off => Ok(power_off(*graceful)),
            (VmState::Off, VmState::Off)
                if azure
                    && !*graceful
                    && vm.deallocated == Some(false)
                    && cfg.azure_deallocate_stopped =>
            {
                Ok(power_off(false))
            }
            _ => Err(invalid_transition()),
        },
    }
}

/// A VM as `/_sim/vms` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimVm {
    pub id: u64,
    pub name: String,
    pub label: Option<String>,
    pub vdc: String,
    pub vapp: String,
    pub hypervisor: String,
    pub state: VmState,
    /// Azure VMs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocated: Option<bool>,
    pub protected: bool,
    /// The VM's `edit` URL.
    pub href: String,
}

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

/// What never changes about a VM: shared with answers built outside the world lock.
pub(crate) struct VmStatic {
    id: u64,
    uuid: String,
    name: String,
    label: Option<String>,
    vdc_id: u64,
    vdc_name: String,
    vapp_id: u64,
    vapp_name: String,
    hypervisor: String,
    protected: bool,
    protected_cause: Option<String>,
    cpu: u32,
    ram: u64,
}

impl VmStatic {
    fn href(&self, base: &str) -> String {
        format!(
            "{base}/cloud/virtualdatacenters/{}/virtualappliances/{}/virtualmachines/{}",
            self.vdc_id, self.vapp_id, self.id
        )
    }
}

/// A VM as of one instant, cheap to take under the lock (one `Arc` clone).
pub(crate) struct VmSnapshot {
    info: Arc<VmStatic>,
    state: VmState,
    deallocated: Option<bool>,
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

struct TaskRec {
    id: String,
    vm: usize,
    user: usize,
    task_type: TaskType,
    job_id: String,
    accepted_ms: u64,
    fails: bool,
    prev_state: VmState,
    prev_deallocated: Option<bool>,
    target: VmState,
    target_deallocated: Option<bool>,
    state: TaskState,
    job_state: JobState,
    rollback: JobState,
    updated_ms: u64,
    acked: bool,
    /// Index into `mutations[vm name]`.
    record: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Start,
    End,
}

/// Which VMs a listing covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    All,
    Vdc(u64),
    Vapp(u64, u64),
}

/// Sort key of a listing (`by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortBy {
    Name,
    Label,
    Id,
    State,
}

impl SortBy {
    pub fn parse(s: &str) -> Option<SortBy> {
        match s.to_ascii_lowercase().as_str() {
            "name" => Some(SortBy::Name),
            "label" => Some(SortBy::Label),
            "id" => Some(SortBy::Id),
            "state" => Some(SortBy::State),
            _ => None,
        }
    }
}

/// Filters and order of a listing (paging is applied by the caller).
pub(crate) struct ListFilter<'a> {
    pub has: Option<&'a str>,
    pub vmlabel: Option<&'a str>,
    pub by: SortBy,
    pub asc: bool,
}

/// Extra VM fields the real API sends that the shared model does not carry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VmDto {
    #[serde(flatten)]
    pub vm: VirtualMachine,
    #[serde(rename = "type")]
    pub vm_type: &'static str,
    pub id_type: u32,
    pub high_disponibility: bool,
    pub vdrp_enabled: bool,
    pub monitored: bool,
    pub cores_per_socket: u32,
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

fn user_link(base: &str, user: usize, name: &str) -> Link {
    Link::new(
        "user",
        format!("{base}/admin/enterprises/1/users/{}", user + 1),
    )
    .typed(&media::unversioned(media::USER))
    .titled(name)
}

impl VmSnapshot {
    pub fn sim_vm(&self, base: &str) -> SimVm {
        let i = &self.info;
        SimVm {
            id: i.id,
            name: i.name.clone(),
            label: i.label.clone(),
            vdc: i.vdc_name.clone(),
            vapp: i.vapp_name.clone(),
            hypervisor: i.hypervisor.clone(),
            state: self.state.clone(),
            deallocated: self.deallocated,
            protected: i.protected,
            href: i.href(base),
        }
    }

    /// The `virtualmachine` answer.
    pub fn dto(&self, base: &str) -> VmDto {
        let i = &self.info;
        let href = i.href(base);
        let vdc_href = format!("{base}/cloud/virtualdatacenters/{}", i.vdc_id);
        let acc = media::unversioned(media::ACCEPTED_REQUEST);
        let links = vec![
            Link::new("edit", href.clone()).typed(&media::unversioned(media::VIRTUAL_MACHINE)),
            Link::new("enterprise", format!("{base}/admin/enterprises/1"))
                .typed(&media::unversioned("enterprise"))
                .titled("Abiquo"),
            user_link(base, 0, "admin"),
            Link::new(
                "virtualappliance",
                format!("{vdc_href}/virtualappliances/{}", i.vapp_id),
            )
            .typed(&media::unversioned("virtualappliance"))
            .titled(i.vapp_name.clone()),
            Link::new("virtualdatacenter", vdc_href)
                .typed(&media::unversioned("virtualdatacenter"))
                .titled(i.vdc_name.clone()),
            Link::new("state", format!("{href}/state"))
                .typed(&media::unversioned(media::VIRTUAL_MACHINE_STATE))
                .titled(self.state.as_str()),
            Link::new("deploy", format!("{href}/action/deploy")).typed(&acc),
            Link::new("undeploy", format!("{href}/action/undeploy")).typed(&acc),
            Link::new("reset", format!("{href}/action/reset")).typed(&acc),
            Link::new("tasks", format!("{href}/tasks")).typed(&media::unversioned(media::TASKS)),
            Link::new(
                "hypervisortype",
                format!("{base}/config/hypervisortypes/{}", i.hypervisor),
            )
            .typed(&media::unversioned("hypervisortype"))
            .titled(i.hypervisor.clone()),
        ];
        VmDto {
            vm: VirtualMachine {
                id: i.id,
                uuid: Some(i.uuid.clone()),
                name: i.name.clone(),
                label: i.label.clone(),
                description: None,
                state: self.state.clone(),
                id_state: Some(self.state.id()),
                cpu: Some(i.cpu),
                ram: Some(i.ram),
                protected: i.protected,
                protected_cause: i.protected_cause.clone(),
                deallocated: self.deallocated,
                links,
            },
            vm_type: "MANAGED",
            id_type: 1,
            high_disponibility: false,
            vdrp_enabled: false,
            monitored: false,
            cores_per_socket: 1,
        }
    }

    /// The `virtualmachinestate` answer.
    pub fn state_dto(&self, base: &str) -> VirtualMachineStateBody {
        let href = self.info.href(base);
        VirtualMachineStateBody {
            state: self.state.clone(),
            graceful_shutdown: None,
            links: vec![
                Link::new("parent", href.clone())
                    .typed(&media::unversioned(media::VIRTUAL_MACHINE)),
                Link::new("edit", format!("{href}/state"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINE_STATE))
                    .titled(self.state.as_str()),
            ],
        }
    }
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

    fn epoch_s(&self, ms: u64) -> i64 {
        i64::try_from((self.start_epoch_ms + ms) / 1000).unwrap_or(i64::MAX)
    }

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

    /// Finds a VM by its full path; a VM under another VDC or vApp does not exist here.
    pub fn vm_at(&self, vdc: u64, vapp: u64, vm: u64) -> Result<usize, ApiError> {
        let idx = *self.vm_index.get(&vm).ok_or_else(ApiError::vm_missing)?;
        let rec = &self.vms[idx];
        if self.vapps[rec.vapp].id != vapp || self.vdcs[rec.vdc].id != vdc {
            return Err(ApiError::vm_missing());
        }
        Ok(idx)
    }

    pub fn vdc(&self, vdc: u64) -> Result<usize, ApiError> {
        self.vdc_index
            .get(&vdc)
            .copied()
            .ok_or_else(ApiError::vdc_missing)
    }

    pub fn vapp(&self, vdc: u64, vapp: u64) -> Result<usize, ApiError> {
        let vdc_idx = self.vdc(vdc)?;
        match self.vapp_index.get(&vapp) {
            Some(&i) if self.vapps[i].vdc == vdc_idx => Ok(i),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "VAPP-0",
                "The requested virtual appliance does not exist",
            )),
        }
    }

    /// Accepts or refuses a power request; on success the VM is LOCKED and a task queued.
    /// Returns the task and the fault injected into it, if any (`stuck`, `job_failure`).
    pub fn mutate(
        &mut self,
        now: u64,
        vm_idx: usize,
        user: usize,
        request: &PowerRequest,
    ) -> Result<(usize, Option<&'static str>), ApiError> {
        self.settle(now);
        let vm = &self.vms[vm_idx];
        if vm.forbidden {
            return Err(ApiError::forbidden());
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
        Ok((ti, fault))
    }

    /// A task of the VM at `vm_idx`.
    pub fn task_of(&self, vm_idx: usize, task_id: &str) -> Result<usize, ApiError> {
        match self.task_index.get(task_id) {
            Some(&ti) if self.tasks[ti].vm == vm_idx => Ok(ti),
            _ => Err(ApiError::task_missing()),
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
                Ok(())
            }
            _ => Err(ApiError::conflict(
                "TASK-2",
                "The task is not in the appropriate state",
            )),
        }
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
        vm.state = state;
        vm.active = None;
        true
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

    /// VMs of a scope, filtered and sorted (paging is the caller's).
    pub fn list(
        &mut self,
        now: u64,
        scope: Scope,
        f: &ListFilter<'_>,
    ) -> Result<Vec<usize>, ApiError> {
        self.settle(now);
        let base: &[usize] = match scope {
            Scope::All => &self.vms_by_name,
            Scope::Vdc(vdc) => &self.vdcs[self.vdc(vdc)?].vms_by_name,
            Scope::Vapp(vdc, vapp) => &self.vapps[self.vapp(vdc, vapp)?].vms_by_name,
        };
        let has = f.has.map(str::to_lowercase);
        let vms = &self.vms;
        let mut out: Vec<usize> = if f.vmlabel.is_none() && has.is_none() {
            base.to_vec()
        } else {
            base.iter()
                .copied()
                .filter(|&i| {
                    let vm = &vms[i].info;
                    let label_ok = f.vmlabel.is_none_or(|l| vm.label.as_deref() == Some(l));
                    let has_ok = has.as_deref().is_none_or(|h| {
                        vm.name.to_lowercase().contains(h)
                            || vm
                                .label
                                .as_deref()
                                .is_some_and(|l| l.to_lowercase().contains(h))
                    });
                    label_ok && has_ok
                })
                .collect()
        };
        match f.by {
            SortBy::Name => {}
            SortBy::Label => out.sort_by(|a, b| {
                let (a, b) = (&vms[*a].info, &vms[*b].info);
                (a.label.as_deref(), &a.name).cmp(&(b.label.as_deref(), &b.name))
            }),
            SortBy::Id => out.sort_by_key(|i| vms[*i].info.id),
            SortBy::State => out.sort_by(|a, b| {
                (vms[*a].state.as_str(), &vms[*a].info.name)
                    .cmp(&(vms[*b].state.as_str(), &vms[*b].info.name))
            }),
        }
        if !f.asc {
            out.reverse();
        }
        Ok(out)
    }

    pub fn vdc_list(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.vdcs.len()).collect();
        out.sort_by(|a, b| self.vdcs[*a].name.cmp(&self.vdcs[*b].name));
        out
    }

    pub fn vapp_list(&self, vdc_idx: usize) -> Vec<usize> {
        let mut out = self.vdcs[vdc_idx].vapps.clone();
        out.sort_by(|a, b| self.vapps[*a].name.cmp(&self.vapps[*b].name));
        out
    }

    fn vdc_href(&self, base: &str, vdc_idx: usize) -> String {
        format!("{base}/cloud/virtualdatacenters/{}", self.vdcs[vdc_idx].id)
    }

    fn vapp_href(&self, base: &str, vapp_idx: usize) -> String {
        let vapp = &self.vapps[vapp_idx];
        format!(
            "{}/virtualappliances/{}",
            self.vdc_href(base, vapp.vdc),
            vapp.id
        )
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

    pub fn vdc_dto(&self, base: &str, vdc_idx: usize) -> VirtualDatacenter {
        let vdc = &self.vdcs[vdc_idx];
        let href = self.vdc_href(base, vdc_idx);
        VirtualDatacenter {
            id: vdc.id,
            name: vdc.name.clone(),
            hypervisor_type: Some(vdc.hypervisor.clone()),
            links: vec![
                Link::new("edit", href.clone()).typed(&media::unversioned("virtualdatacenter")),
                Link::new("virtualappliances", format!("{href}/virtualappliances"))
                    .typed(&media::unversioned(media::VIRTUAL_APPLIANCES)),
                Link::new("virtualmachines", format!("{href}/action/virtualmachines"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINES)),
                Link::new("enterprise", format!("{base}/admin/enterprises/1"))
                    .typed(&media::unversioned("enterprise"))
                    .titled("Abiquo"),
            ],
        }
    }

    pub fn vapp_dto(&self, base: &str, vapp_idx: usize) -> VirtualAppliance {
        let vapp = &self.vapps[vapp_idx];
        let href = self.vapp_href(base, vapp_idx);
        let state = if vapp.vms_by_name.is_empty() {
            "EMPTY"
        } else if vapp.vms_by_name.iter().all(|&i| {
            matches!(
                self.vms[i].state,
                VmState::NotAllocated | VmState::Allocated
            )
        }) {
            "NOT_DEPLOYED"
        } else {
            "DEPLOYED"
        };
        VirtualAppliance {
            id: vapp.id,
            name: vapp.name.clone(),
            state: Some(state.to_owned()),
            links: vec![
                Link::new("edit", href.clone()).typed(&media::unversioned("virtualappliance")),
                Link::new("virtualdatacenter", self.vdc_href(base, vapp.vdc))
                    .typed(&media::unversioned("virtualdatacenter"))
                    .titled(self.vdcs[vapp.vdc].name.clone()),
                Link::new("virtualmachines", format!("{href}/virtualmachines"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINES)),
            ],
        }
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

    fn facts<'a>(state: &'a VmState, hypervisor: &'a str) -> VmFacts<'a> {
        VmFacts {
            state,
            hypervisor,
            protected: false,
            deallocated: (hypervisor == "AZURE").then_some(false),
        }
    }

    fn on() -> PowerRequest {
        PowerRequest::State {
            target: VmState::On,
            graceful: false,
        }
    }

    #[test]
    fn settings_open_the_transitions_the_reference_leaves_uncertain() {
        let mut cfg = SimConfig::empty("t");
        let paused_off = PowerRequest::State {
            target: VmState::Off,
            graceful: false,
        };
        let err = decide(&facts(&VmState::Paused, "KVM"), &paused_off, &cfg).unwrap_err();
        assert_eq!(err.code, "VM-4");
        cfg.allow_paused_off = true;
        let t = decide(&facts(&VmState::Paused, "KVM"), &paused_off, &cfg).unwrap();
        assert_eq!(t.task_type, TaskType::PowerOff);

        let resume = decide(&facts(&VmState::Paused, "KVM"), &on(), &cfg).unwrap();
        assert_eq!(resume.task_type, TaskType::Resume);
        cfg.resume_as_reset = true;
        let resume = decide(&facts(&VmState::Paused, "KVM"), &on(), &cfg).unwrap();
        assert_eq!(resume.task_type, TaskType::Reset);

        let err = decide(&facts(&VmState::Off, "AZURE"), &paused_off, &cfg).unwrap_err();
        assert_eq!(err.code, "VM-4");
        cfg.azure_deallocate_stopped = true;
        let t = decide(&facts(&VmState::Off, "AZURE"), &paused_off, &cfg).unwrap();
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
            let e =
                decide(&facts(&VmState::Locked, "KVM"), &PowerRequest::Reset, &cfg).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::CONFLICT, expected)
            );
        }
        // Not allocated stays VM-11 whatever the locked code.
        let e = decide(&facts(&VmState::NotAllocated, "KVM"), &on(), &cfg).unwrap_err();
        assert_eq!(e.code, "VM-11");
    }

    #[test]
    fn xen_refuses_pause_with_vm6() {
        let cfg = SimConfig::empty("t");
        let pause = PowerRequest::State {
            target: VmState::Paused,
            graceful: false,
        };
        let e = decide(&facts(&VmState::On, "XEN_3"), &pause, &cfg).unwrap_err();
        assert_eq!(e.code, "VM-6");
    }

    #[test]
    fn uuid_has_v4_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        let u = uuid(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
