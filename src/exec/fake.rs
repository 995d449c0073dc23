//! A scripted, in-memory [`CloudApi`] for the executor's unit tests: a few VMs with the links
//! the API gives, power answers that follow a per-VM script, tasks that end after a number
//! of polls or a (paused-time) duration, and a log of every call.
//!
//! Longer than most files on purpose: the script types, the cloud model they drive and the
//! `CloudApi` answers are one fixture, read together when writing a test.

use crate::abiquo::api::{CloudApi, MutationAnswer};
use crate::abiquo::client::ClientStats;
use crate::abiquo::codes::Code;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{
    ErrorsBody, Job, JobState, Jobs, Link, ListedVm, PowerRequest, PowerState, Task, TaskState,
    TaskType, VirtualMachine, VmSeen, VmState,
};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const ROOT: &str = "http://fake.test/api";
/// VMs per page of the fake's listing.
const FAKE_PAGE: usize = 100;

/// When something running in the fake ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// A task: at its n-th poll (`get_task`). A foreign lock: at the n-th read of the VM.
    Polls(u32),
    /// This long (paused time) after it started.
    After(Duration),
    Never,
}

/// How an accepted request's task goes.
#[derive(Debug, Clone)]
pub(crate) struct TaskScript {
    pub finish: Finish,
    pub end: TaskState,
    /// `(type, state, rollbackState)` of the task's jobs once it ended.
    pub jobs: Vec<(String, JobState, JobState)>,
    /// The VM's state once the task ended; `None`: the request's target on success, the
    /// state before on failure (rolled back).
    pub vm_after: Option<VmState>,
    /// The VM shows LOCKED while the task runs (as the API does).
    pub locks: bool,
}

impl TaskScript {
    pub fn ok_after_polls(n: u32) -> Self {
        Self {
            finish: Finish::Polls(n),
            end: TaskState::FinishedSuccessfully,
            jobs: Vec::new(),
            vm_after: None,
            locks: true,
        }
    }

    pub fn ok_after(d: Duration) -> Self {
        Self {
            finish: Finish::After(d),
            ..Self::ok_after_polls(1)
        }
    }

    pub fn never() -> Self {
        Self {
            finish: Finish::Never,
            ..Self::ok_after_polls(1)
        }
    }

    /// Fails at the n-th poll with one job `job_type` FAILED and rolled back.
    pub fn fails_after_polls(n: u32, job_type: &str) -> Self {
        Self {
            end: TaskState::FinishedUnsuccessfully,
            jobs: vec![(job_type.into(), JobState::Failed, JobState::RollbackDone)],
            ..Self::ok_after_polls(n)
        }
    }

    #[must_use]
    pub fn unlocked(mut self) -> Self {
        self.locks = false;
        self
    }

    #[must_use]
    pub fn leaves(mut self, state: VmState) -> Self {
        self.vm_after = Some(state);
        self
    }
}

impl Default for TaskScript {
    fn default() -> Self {
        Self::ok_after_polls(1)
    }
}

/// One answer to `power()`.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// 202 with a task.
    Accept(TaskScript),
    /// An Abiquo error (`errors` body) with this status and code.
    Refuse { status: u16, code: &'static str },
    /// The answer was lost; reconciliation found the task (the client's `Adopted`).
    LostAdopted(TaskScript),
    /// The answer was lost; the VM already is in the requested state (`AlreadyDone`).
    LostAlreadyDone,
    /// A transport error; with `Some`, the API processed the request all the same.
    LostTransport(Option<TaskScript>),
    /// The reply comes after this long (paused time).
    Slow(Duration, Box<Reply>),
}

impl Reply {
    pub fn refuse(code: &'static str) -> Self {
        Reply::Refuse { status: 409, code }
    }
}

/// The Abiquo error the API gives for `code`, built as the client builds it from an answer.
pub(crate) fn api_error(status: u16, code: &str) -> ClientError {
    let message = Code::ALL
        .into_iter()
        .find(|c| c.code() == code)
        .map_or("scripted error", Code::message);
    let body = serde_json::to_vec(&ErrorsBody::single(code, message)).unwrap_or_default();
    ClientError::from_answer(status, &body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    ListVms,
    /// One page of the listing (the task watch's look).
    ListPage,
    GetVm,
    GetTask,
    VmTasks,
    Power,
}

/// One call the executor made.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub kind: CallKind,
    pub vm: String,
    pub request: Option<PowerRequest>,
    pub at: Instant,
}

struct FakeVm {
    vm: VirtualMachine,
    replies: VecDeque<Reply>,
    read_errors: VecDeque<ClientError>,
    /// A foreign operation holds the VM: it ends as `Finish` says, leaving this state.
    foreign: Option<(Finish, VmState, Instant)>,
    reads: u32,
}

struct FakeTask {
    vm: usize,
    task: Task,
    script: TaskScript,
    request: PowerRequest,
    before: VmState,
    started: Instant,
    polls: u32,
    ended: Option<Instant>,
}

type Trigger = (CallKind, String, usize, Box<dyn Fn() + Send + Sync>);

#[derive(Default)]
struct World {
    vms: Vec<FakeVm>,
    tasks: Vec<FakeTask>,
    calls: Vec<Call>,
    /// At the n-th call of a kind on a VM, the VM changes state (before the answer).
    changes: Vec<(CallKind, String, usize, VmState)>,
    /// How long a task read takes to answer (paused time).
    task_read_delay: Duration,
    /// Before each answer to a VM read or a VM's task list.
    vm_read_delay: Duration,
}

/// The fake cloud. Cheap to share by reference; all state is behind one lock.
#[derive(Default)]
pub(crate) struct FakeCloud {
    world: Mutex<World>,
    triggers: Mutex<Vec<Trigger>>,
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl FakeCloud {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a KVM VM.
    #[must_use]
    pub fn with_vm(self, name: &str, state: VmState) -> Self {
        self.add(name, state, "KVM");
        self
    }

    /// Adds an Azure VM (not deallocated).
    #[must_use]
    pub fn with_azure_vm(self, name: &str, state: VmState) -> Self {
        self.add(name, state, "AZURE");
        self
    }

    fn add(&self, name: &str, state: VmState, hypervisor: &str) {
        let mut w = self.lock();
        let id = w.vms.len() as u64 + 1;
        let vdc = format!("{ROOT}/cloud/virtualdatacenters/1");
        let edit = format!("{vdc}/virtualappliances/1/virtualmachines/{id}");
        let vm = VirtualMachine {
            id,
            uuid: None,
            name: name.into(),
            label: None,
            description: None,
            state,
            id_state: None,
            cpu: None,
            ram: None,
            protected: false,
            protected_cause: None,
            deallocated: (hypervisor == "AZURE").then_some(false),
            links: vec![
                Link::new("edit", edit.clone()),
                Link::new("state", format!("{edit}/state")),
                Link::new("reset", format!("{edit}/action/reset")),
                Link::new("tasks", format!("{edit}/tasks")),
                Link::new("virtualdatacenter", vdc.clone()).titled("dc"),
                Link::new("virtualappliance", format!("{vdc}/virtualappliances/1")).titled("app"),
                Link::new(
                    "hypervisortype",
                    format!("{ROOT}/config/hypervisortypes/{hypervisor}"),
                )
                .titled(hypervisor),
            ],
        };
        w.vms.push(FakeVm {
            vm,
            replies: VecDeque::new(),
            read_errors: VecDeque::new(),
            foreign: None,
            reads: 0,
        });
    }

    /// Every task read answers this long after it was asked (as of the time it answers).
    pub fn slow_task_reads(&self, delay: Duration) {
        self.lock().task_read_delay = delay;
    }

    /// Every VM read and task list answers after `delay` (paused time): a real API's latency.
    pub fn slow_vm_reads(&self, delay: Duration) {
        self.lock().vm_read_delay = delay;
    }

    async fn vm_read_latency(&self) {
        let delay = self.lock().vm_read_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The answers `power()` gives on `vm`, in order; after them it judges like the API.
    pub fn script(&self, vm: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut w = self.lock();
        let i = index(&w, vm);
        w.vms[i].replies.extend(replies);
    }

    /// The next reads of `vm` fail with `error`, `n` times.
    pub fn fail_reads(&self, vm: &str, n: usize, error: &ClientError) {
        let mut w = self.lock();
        let i = index(&w, vm);
        w.vms[i]
            .read_errors
            .extend(std::iter::repeat_n(error.clone(), n));
    }

    /// Another operation holds `vm` (LOCKED) until `release`, then leaves it `then`.
    pub fn hold(&self, vm: &str, release: Finish, then: VmState) {
        let mut w = self.lock();
        let i = index(&w, vm);
        w.vms[i].vm.state = VmState::Locked;
        w.vms[i].foreign = Some((release, then, Instant::now()));
        w.vms[i].reads = 0;
    }

    /// A task accepted before the run (as an earlier run left it); returns its link.
    pub fn start_task(&self, vm: &str, request: PowerRequest, script: TaskScript) -> String {
        let mut w = self.lock();
        let i = index(&w, vm);
        create_task(&mut w, i, request, script)
    }

    /// Runs `f` when the `nth` call of `kind` on `vm` (1-based) is made, before it answers.
    pub fn when(&self, kind: CallKind, vm: &str, nth: usize, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.triggers).push((kind, vm.into(), nth, Box::new(f)));
    }

    /// At the `nth` call of `kind` on `vm`, the VM becomes `state` (something outside the
    /// run changed it), before that call is answered.
    pub fn set_state_at(&self, kind: CallKind, vm: &str, nth: usize, state: VmState) {
        self.lock().changes.push((kind, vm.into(), nth, state));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn count(&self, kind: CallKind, vm: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind == kind && c.vm == vm)
            .count()
    }

    /// Reads of the VM (`GET` on its `edit` link).
    pub fn reads(&self, vm: &str) -> usize {
        self.count(CallKind::GetVm, vm)
    }

    /// Polls of the VM's tasks.
    pub fn polls(&self, vm: &str) -> usize {
        self.count(CallKind::GetTask, vm)
    }

    pub fn task_lists(&self, vm: &str) -> usize {
        self.count(CallKind::VmTasks, vm)
    }

    /// Every power request sent for `vm`, in order.
    pub fn mutations(&self, vm: &str) -> Vec<PowerRequest> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind == CallKind::Power && c.vm == vm)
            .filter_map(|c| c.request)
            .collect()
    }

    pub fn total_mutations(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind == CallKind::Power)
            .count()
    }

    /// The VM's state now.
    pub fn state(&self, vm: &str) -> VmState {
        let mut w = self.lock();
        settle(&mut w);
        let i = index(&w, vm);
        w.vms[i].vm.state.clone()
    }

    /// Every VM as listed now.
    pub fn listing(&self) -> Vec<VirtualMachine> {
        let mut w = self.lock();
        settle(&mut w);
        w.vms.iter().map(|v| v.vm.clone()).collect()
    }

    /// Most tasks of the VMs `filter` accepts that were running at the same time.
    pub fn max_in_flight(&self, filter: impl Fn(&str) -> bool) -> usize {
        let w = self.lock();
        let spans: Vec<(Instant, Option<Instant>)> = w
            .tasks
            .iter()
            .filter(|t| filter(&w.vms[t.vm].vm.name))
            .map(|t| (t.started, t.ended))
            .collect();
        spans
            .iter()
            .map(|&(at, _)| {
                spans
                    .iter()
                    .filter(|&&(s, e)| s <= at && e.is_none_or(|e| e > at))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// (started, ended) of every task of `vm`, in creation order.
    pub fn task_spans(&self, vm: &str) -> Vec<(Instant, Option<Instant>)> {
        let w = self.lock();
        w.tasks
            .iter()
            .filter(|t| w.vms[t.vm].vm.name == vm)
            .map(|t| (t.started, t.ended))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Logs the call, settles what time has ended, then fires its triggers.
    fn enter(&self, kind: CallKind, vm: &str, request: Option<PowerRequest>) {
        let nth = {
            let mut w = self.lock();
            settle(&mut w);
            w.calls.push(Call {
                kind,
                vm: vm.into(),
                request,
                at: Instant::now(),
            });
            let nth = w
                .calls
                .iter()
                .filter(|c| c.kind == kind && c.vm == vm)
                .count();
            let change = w
                .changes
                .iter()
                .find(|(k, v, n, _)| *k == kind && v == vm && *n == nth)
                .map(|c| c.3.clone());
            if let Some(state) = change {
                let i = index(&w, vm);
                w.vms[i].vm.state = state;
            }
            nth
        };
        for (k, v, n, f) in lock(&self.triggers).iter() {
            if *k == kind && v == vm && *n == nth {
                f();
            }
        }
    }

    fn vm_by_href(&self, href: &str) -> Result<(usize, String), ClientError> {
        let w = self.lock();
        w.vms
            .iter()
            .position(|v| v.vm.href() == Some(href))
            .map(|i| (i, w.vms[i].vm.name.clone()))
            .ok_or_else(|| api_error(404, "VM-1"))
    }

    fn task_by_href(&self, href: &str) -> Result<(usize, String), ClientError> {
        let w = self.lock();
        w.tasks
            .iter()
            .position(|t| t.task.link("self").is_some_and(|l| l.href == href))
            .map(|i| (i, w.vms[w.tasks[i].vm].vm.name.clone()))
            .ok_or_else(|| api_error(404, "TASK-1"))
    }

    /// Applies one reply; `Slow` replies are unwrapped by the caller.
    fn answer(&self, i: usize, vm: &VirtualMachine, request: PowerRequest, reply: Reply) -> Answer {
        let mut w = self.lock();
        match reply {
            Reply::Accept(script) => Answer::Done(Ok(MutationAnswer::Accepted {
                task_href: create_task(&mut w, i, request, script),
            })),
            Reply::Refuse { status, code } => Answer::Done(Err(api_error(status, code))),
            Reply::LostAdopted(script) => Answer::Done(Ok(MutationAnswer::Adopted {
                task_href: create_task(&mut w, i, request, script),
            })),
            Reply::LostAlreadyDone => {
                let v = &mut w.vms[i].vm;
                v.state = request.target_state();
                Answer::Done(Ok(MutationAnswer::AlreadyDone {
                    state: v.state.clone(),
                }))
            }
            Reply::LostTransport(processed) => {
                if let Some(script) = processed {
                    create_task(&mut w, i, request, script);
                }
                Answer::Done(Err(ClientError::Transport {
                    url: vm.link("state").map(|l| l.href.clone()).unwrap_or_default(),
                    detail: "connection reset by peer".into(),
                }))
            }
            Reply::Slow(d, inner) => Answer::Later(d, *inner),
        }
    }
}

enum Answer {
    Done(Result<MutationAnswer, ClientError>),
    Later(Duration, Reply),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn index(w: &World, name: &str) -> usize {
    w.vms
        .iter()
        .position(|v| v.vm.name == name)
        .unwrap_or_else(|| panic!("no VM {name} in the fake"))
}

/// What the API answers when the script says nothing (the 2.0 transition table).
fn judge(vm: &VirtualMachine, request: PowerRequest) -> Reply {
    use VmState as S;
    match (&vm.state, request) {
        (S::Locked | S::NotAllocated | S::Allocated | S::Unknown, _) => Reply::refuse("VM-11"),
        (S::On, PowerRequest::Reset) => Reply::Accept(TaskScript::default()),
        (_, PowerRequest::Reset) => Reply::refuse("VM-26"),
        (S::On, PowerRequest::State { target, .. }) if target != PowerState::On => {
            Reply::Accept(TaskScript::default())
        }
        (S::Off | S::Configured, PowerRequest::State { target, .. })
        | (S::Paused, PowerRequest::State { target, .. })
            if target == PowerState::On =>
        {
            Reply::Accept(TaskScript::default())
        }
        _ => Reply::refuse("VM-4"),
    }
}

fn task_type(request: PowerRequest, from: &VmState) -> TaskType {
    match request {
        PowerRequest::State {
            target: PowerState::On,
            ..
        } if *from == VmState::Paused => TaskType::Resume,
        r => r
            .task_types(from)
            .into_iter()
            .next()
            .unwrap_or(TaskType::Other("UNKNOWN".into())),
    }
}

fn create_task(w: &mut World, i: usize, request: PowerRequest, script: TaskScript) -> String {
    let n = w.tasks.len() + 1;
    let vm = &mut w.vms[i].vm;
    let edit = vm.href().unwrap_or_default().to_owned();
    let href = format!("{edit}/tasks/t-{n}");
    let before = vm.state.clone();
    let task = Task {
        task_id: format!("t-{n}"),
        task_type: task_type(request, &before),
        state: TaskState::Started,
        owner_id: vm.id.to_string(),
        user_id: "1".into(),
        creation_timestamp: Some(epoch_secs()),
        timestamp: Some(epoch_secs()),
        jobs: Jobs::default(),
        links: vec![Link::new("self", href.clone()), Link::new("parent", edit)],
    };
    if script.locks {
        vm.state = VmState::Locked;
    }
    w.tasks.push(FakeTask {
        vm: i,
        task,
        script,
        request,
        before,
        started: Instant::now(),
        polls: 0,
        ended: None,
    });
    href
}

/// Ends the tasks and foreign locks whose time has come.
fn settle(w: &mut World) {
    let now = Instant::now();
    for t in 0..w.tasks.len() {
        if let Finish::After(d) = w.tasks[t].script.finish
            && w.tasks[t].ended.is_none()
            && now >= w.tasks[t].started + d
        {
            end_task(w, t);
        }
    }
    for v in &mut w.vms {
        if let Some((Finish::After(d), then, since)) = &v.foreign
            && now >= *since + *d
        {
            v.vm.state = then.clone();
            v.foreign = None;
        }
    }
}

fn end_task(w: &mut World, t: usize) {
    let ft = &mut w.tasks[t];
    ft.ended = Some(Instant::now());
    ft.task.state = ft.script.end.clone();
    ft.task.timestamp = Some(epoch_secs());
    ft.task.jobs.collection = ft
        .script
        .jobs
        .iter()
        .enumerate()
        .map(|(j, (job_type, state, rollback))| Job {
            id: format!("{}.{j}", ft.task.task_id),
            parent_task_id: Some(ft.task.task_id.clone()),
            job_type: job_type.clone(),
            description: format!("{job_type} job of task {}", ft.task.task_id),
            state: state.clone(),
            rollback_state: rollback.clone(),
            creation_timestamp: ft.task.creation_timestamp,
            timestamp: ft.task.timestamp,
            links: Vec::new(),
        })
        .collect();
    let success = ft.script.end.is_success();
    let state = ft.script.vm_after.clone().unwrap_or_else(|| {
        if success {
            ft.request.target_state()
        } else {
            ft.before.clone()
        }
    });
    let (request, vm) = (ft.request, ft.vm);
    let v = &mut w.vms[vm].vm;
    if success && v.deallocated.is_some() {
        v.deallocated = match request {
            PowerRequest::State { target, graceful } => {
                Some(target == PowerState::Off && !graceful)
            }
            PowerRequest::Reset => v.deallocated,
        };
    }
    v.state = state;
}

impl CloudApi for FakeCloud {
    fn endpoint(&self) -> &str {
        ROOT
    }

    fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.lock().calls.len() as u64,
            ..ClientStats::default()
        }
    }

    async fn list_vms(&self) -> Result<Vec<ListedVm>, ClientError> {
        self.enter(CallKind::ListVms, "", None);
        Ok(self.listing().iter().map(ListedVm::from).collect())
    }

    async fn list_vm_states(&self) -> Result<Vec<VmSeen>, ClientError> {
        self.enter(CallKind::ListVms, "", None);
        Ok(self.listing().iter().filter_map(VmSeen::of).collect())
    }

    fn page_size(&self) -> usize {
        FAKE_PAGE
    }

    async fn list_vm_states_range(
        &self,
        startwith: usize,
        limit: usize,
    ) -> Result<Vec<VmSeen>, ClientError> {
        self.enter(CallKind::ListPage, "", None);
        Ok(self
            .listing()
            .iter()
            .skip(startwith)
            .take(limit.min(FAKE_PAGE))
            .filter_map(VmSeen::of)
            .collect())
    }

    async fn get_vm_at(&self, href: &str) -> Result<VirtualMachine, ClientError> {
        self.vm_read_latency().await;
        let (i, name) = self.vm_by_href(href)?;
        self.enter(CallKind::GetVm, &name, None);
        let mut w = self.lock();
        let v = &mut w.vms[i];
        if let Some(e) = v.read_errors.pop_front() {
            return Err(e);
        }
        v.reads += 1;
        if let Some((Finish::Polls(n), then, _)) = &v.foreign
            && v.reads >= *n
        {
            v.vm.state = then.clone();
            v.foreign = None;
        }
        Ok(v.vm.clone())
    }

    async fn get_task(&self, href: &str) -> Result<Task, ClientError> {
        let (t, name) = self.task_by_href(href)?;
        self.enter(CallKind::GetTask, &name, None);
        let delay = self.lock().task_read_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut w = self.lock();
        settle(&mut w);
        w.tasks[t].polls += 1;
        if let Finish::Polls(n) = w.tasks[t].script.finish
            && w.tasks[t].ended.is_none()
            && w.tasks[t].polls >= n
        {
            end_task(&mut w, t);
        }
        Ok(w.tasks[t].task.clone())
    }

    async fn vm_tasks(&self, vm: &VirtualMachine) -> Result<Vec<Task>, ClientError> {
        self.vm_read_latency().await;
        self.enter(CallKind::VmTasks, &vm.name, None);
        let w = self.lock();
        Ok(w.tasks
            .iter()
            .rev()
            .filter(|t| w.vms[t.vm].vm.id == vm.id)
            .map(|t| t.task.clone())
            .collect())
    }

    async fn power(
        &self,
        vm: &VirtualMachine,
        request: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        let (i, name) = self.vm_by_href(vm.href().unwrap_or_default())?;
        self.enter(CallKind::Power, &name, Some(request));
        let mut reply = {
            let mut w = self.lock();
            let scripted = w.vms[i].replies.pop_front();
            scripted.unwrap_or_else(|| judge(&w.vms[i].vm, request))
        };
        loop {
            match self.answer(i, vm, request, reply) {
                Answer::Done(result) => return result,
                Answer::Later(d, next) => {
                    tokio::time::sleep(d).await;
                    let mut w = self.lock();
                    settle(&mut w);
                    reply = next;
                }
            }
        }
    }
}
