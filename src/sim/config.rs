//! Simulator configuration: the inventory it serves, task timing, fault rates, and the
//! settings for behaviour the API reference leaves uncertain.

use crate::abiquo::codes::Code;
use crate::abiquo::model::VmState;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Everything a simulator instance needs. Build it with [`SimConfig::lab`],
/// [`SimConfig::from_inventory_file`], [`SimConfig::from_inventory_str`] or
/// [`SimConfig::generated`], then adjust the public fields.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the inventory came from (file name, "lab", "generated"), for messages.
    pub name: String,
    /// VDCs → vApps → VMs, with resolved ids.
    pub vdcs: Vec<SimVdc>,
    /// Seed of every random choice (durations, failures, faults, ids).
    pub seed: u64,
    /// Tasks take `duration / speed`; must be finite and > 0.
    pub speed: f64,
    pub faults: Faults,
    /// Mean task duration (before `speed`).
    pub task_duration: Duration,
    /// Uniform jitter: the duration is drawn in `mean ± jitter`.
    pub task_jitter: Duration,
    /// Per-action mean overrides; keys `on|off|shutdown|pause|resume|reset`.
    pub durations: BTreeMap<String, Duration>,
    /// Media-type versions the server accepts; the last one is "latest" (used when a
    /// request sends no version).
    pub accepted_versions: Vec<String>,
    /// Error code for a power request on a LOCKED VM (the reference does not say which one
    /// 5.x/6.x use).
    pub locked_code: LockedCode,
    /// Accounts accepted by Basic auth; `/login` issues tokens for them.
    pub users: Vec<SimUser>,
    /// After `action/ack`, a failed task reads ACK_ERROR instead of staying
    /// FINISHED_UNSUCCESSFULLY.
    pub ack_sets_ack_error: bool,
    /// Also emit the 3.x `entity` key in acceptedrequest bodies (always emitted instead of
    /// `message` when the negotiated version is 3.x).
    pub emit_entity: bool,
    /// Record PAUSED → ON as task/job type RESET (Abiquo 2.0) instead of RESUME.
    pub resume_as_reset: bool,
    /// Allow PAUSED → OFF (2.0 refuses it with VM-4).
    pub allow_paused_off: bool,
    /// Allow a hard OFF on an Azure VM that is OFF but not deallocated (deallocates it).
    pub azure_deallocate_stopped: bool,
    /// Product version answered by `GET /api/version`.
    pub product_version: String,
    /// Lifetime of a token issued by `/login`, counted from its issue (not refreshed by
    /// use); older tokens are refused 401 `GEN-5` as unknown ones are. `None`: never expires.
    pub token_ttl: Option<Duration>,
    /// Base URL of every link in answers (e.g. `https://cloud.example.com/api`), as an API
    /// behind a proxy or answering under another public name emits them; `None`: the
    /// simulator's own address. Only the base changes: link paths stay the simulator's, and
    /// requests are still served on its own address.
    pub public_url: Option<String>,
    /// Added to every answer under `/api` (never `/_sim/*`), as a real API's network and
    /// server time: half is waited before the request is processed, half after, so a poll's
    /// answer shows the task as it was half a round trip before the client reads it. Zero:
    /// answers as fast as loopback allows.
    pub latency: Duration,
    /// Uniform jitter of `latency`: each answer's delay is drawn in `latency ± jitter`
    /// (seeded by `seed`); at most `latency`.
    pub latency_jitter: Duration,
}

/// Fault injection rates, each a probability in `0.0..=1.0`; all off by default.
/// Faults never apply to the `/_sim/*` endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Answer 503 without processing.
    pub http_503: f64,
    /// Answer 429 with `Retry-After` without processing.
    pub http_429: f64,
    pub retry_after: Duration,
    /// Close the connection before processing (nothing happened).
    pub drop_connection: f64,
    /// Mutations only: process the request, then close the connection without answering.
    pub lose_answer: f64,
    /// Delay the answer by `slow_delay`, GETs and mutations alike. The request is processed
    /// first and only its answer is held back: a client that times out on a slow mutation
    /// has lost the answer of a committed request (its task exists and runs).
    pub slow: f64,
    pub slow_delay: Duration,
    /// An accepted task fails (job FAILED, ROLLBACK_DONE) whatever the VM.
    pub job_failure: f64,
    /// An accepted task never finishes (the VM stays LOCKED).
    pub stuck_task: f64,
    /// A successful JSON answer is cut in half.
    pub malformed_json: f64,
    /// Power requests only: the request is processed (task created as usual) but the 202
    /// acceptedrequest lacks its `status` link.
    pub no_status_link: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            http_503: 0.0,
            http_429: 0.0,
            retry_after: Duration::from_secs(1),
            drop_connection: 0.0,
            lose_answer: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_millis(500),
            job_failure: 0.0,
            stuck_task: 0.0,
            malformed_json: 0.0,
            no_status_link: 0.0,
        }
    }
}

impl Faults {
    /// Checks every rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("http_503", self.http_503),
            ("http_429", self.http_429),
            ("drop_connection", self.drop_connection),
            ("lose_answer", self.lose_answer),
            ("slow", self.slow),
            ("job_failure", self.job_failure),
            ("stuck_task", self.stuck_task),
            ("malformed_json", self.malformed_json),
            ("no_status_link", self.no_status_link),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "fault rate {name} = {rate} is not within 0.0..=1.0"
                ));
            }
        }
        Ok(())
    }
}

/// Which error a power request on a LOCKED VM gets (all 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LockedCode {
    /// `VM-11` "not in any hypervisor" (Abiquo 2.0 behaviour).
    #[default]
    #[value(name = "vm-11")]
    Vm11,
    /// `VM-2` "already locked by another operation".
    #[value(name = "vm-2")]
    Vm2,
    /// `ASYNC-TASK-2` "task in progress".
    #[value(name = "async-task-2")]
    AsyncTask2,
}

impl LockedCode {
    /// The error code this setting answers a request on a LOCKED VM with.
    pub(crate) fn code(self) -> Code {
        match self {
            LockedCode::Vm11 => Code::Vm11,
            LockedCode::Vm2 => Code::Vm2,
            LockedCode::AsyncTask2 => Code::AsyncTask2,
        }
    }
}

/// A simulator account (these are the simulator's own, not secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A virtual datacenter of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVdc {
    pub id: u64,
    pub name: String,
    /// Hypervisor type of every VM in it, e.g. `KVM`, `VMX_04`, `XEN_3`, `AZURE`.
    pub hypervisor: String,
    pub vapps: Vec<SimVapp>,
}

/// A virtual appliance of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVapp {
    pub id: u64,
    pub name: String,
    pub vms: Vec<SimVmSpec>,
}

/// A VM of the inventory as it is at start.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVmSpec {
    pub id: u64,
    pub name: String,
    pub label: Option<String>,
    pub state: VmState,
    /// Graceful shutdown fails without guest tools.
    pub guest_tools: bool,
    pub protected: bool,
    pub protected_cause: Option<String>,
    /// Chance that any task on this VM fails (job FAILED, ROLLBACK_DONE).
    pub fail_rate: f64,
    /// Actions whose tasks always fail on this VM.
    pub fail_actions: Vec<SimAction>,
    /// Mutations on this VM are refused with 403.
    pub forbidden: bool,
    /// Azure only (ignored elsewhere): the VM starts deallocated.
    pub deallocated: bool,
    /// Its NICs' IP addresses (`nic0` first). `None`: one private address derived from
    /// its id ([`SimVmSpec::default_ip`]); empty: no NIC.
    pub ips: Option<Vec<String>>,
}

impl SimVmSpec {
    /// A VM with defaults: guest tools on, unprotected, never failing.
    pub fn new(id: u64, name: impl Into<String>, state: VmState) -> Self {
        Self {
            id,
            name: name.into(),
            label: None,
            state,
            guest_tools: true,
            protected: false,
            protected_cause: None,
            fail_rate: 0.0,
            fail_actions: Vec::new(),
            forbidden: false,
            deallocated: false,
            ips: None,
        }
    }

    /// The private address a VM gets when the inventory names none: `10.x.y.z` from its id,
    /// distinct for the first 16 million ids, never a `.0` or `.255`.
    pub fn default_ip(id: u64) -> String {
        let n = id.saturating_sub(1);
        let host = n % 254 + 1;
        let net = n / 254;
        format!("10.{}.{}.{host}", (net / 256) % 256, net % 256)
    }

    /// The addresses it is served with.
    pub fn nic_ips(&self) -> Vec<String> {
        self.ips
            .clone()
            .unwrap_or_else(|| vec![SimVmSpec::default_ip(self.id)])
    }
}

/// The power actions the simulator distinguishes (duration and failure keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimAction {
    On,
    Off,
    Shutdown,
    Pause,
    Resume,
    Reset,
}

impl SimAction {
    pub const ALL: [SimAction; 6] = [
        SimAction::On,
        SimAction::Off,
        SimAction::Shutdown,
        SimAction::Pause,
        SimAction::Resume,
        SimAction::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SimAction::On => "on",
            SimAction::Off => "off",
            SimAction::Shutdown => "shutdown",
            SimAction::Pause => "pause",
            SimAction::Resume => "resume",
            SimAction::Reset => "reset",
        }
    }

    /// Parses an action key; `deallocate` (Azure's hard off) is accepted as `off`.
    pub fn parse(s: &str) -> Option<SimAction> {
        if s == "deallocate" {
            return Some(SimAction::Off);
        }
        SimAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for SimAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SimConfig {
    /// An empty simulator with default settings (no VDCs).
    pub fn empty(name: impl Into<String>) -> SimConfig {
        SimConfig {
            name: name.into(),
            vdcs: Vec::new(),
            seed: 1,
            speed: 1.0,
            faults: Faults::default(),
            task_duration: Duration::from_millis(1500),
            task_jitter: Duration::from_millis(500),
            durations: BTreeMap::new(),
            accepted_versions: ["3.10", "4.7", "5.0", "5.2", "6.0", "6.1"]
                .into_iter()
                .map(String::from)
                .collect(),
            locked_code: LockedCode::default(),
            users: vec![SimUser {
                name: DEFAULT_USER.to_owned(),
                password: DEFAULT_PASSWORD.to_owned(),
            }],
            ack_sets_ack_error: false,
            emit_entity: false,
            resume_as_reset: false,
            allow_paused_off: false,
            azure_deallocate_stopped: false,
            product_version: "6.1.0".to_owned(),
            token_ttl: None,
            public_url: None,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
        }
    }

    /// The version used when a request names none.
    pub fn latest_version(&self) -> &str {
        self.accepted_versions
            .last()
            .map(String::as_str)
            .unwrap_or(crate::abiquo::media::DEFAULT_VERSION)
    }

    /// Mean duration of an action before `speed`.
    pub fn duration_of(&self, action: SimAction) -> Duration {
        self.durations
            .get(action.as_str())
            .copied()
            .unwrap_or(self.task_duration)
    }

    /// Every VM with its VDC and vApp.
    pub fn vms(&self) -> impl Iterator<Item = (&SimVdc, &SimVapp, &SimVmSpec)> {
        self.vdcs.iter().flat_map(|d| {
            d.vapps
                .iter()
                .flat_map(move |a| a.vms.iter().map(move |v| (d, a, v)))
        })
    }

    /// Checks what the inventory parser cannot: speed, rates, unique ids and names.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(format!("speed must be a number > 0, not {}", self.speed));
        }
        self.faults.validate()?;
        if self.token_ttl.is_some_and(|t| t.is_zero()) {
            return Err("token_ttl must be more than zero".into());
        }
        if let Some(url) = &self.public_url {
            check_public_url(url)?;
        }
        if self.latency_jitter > self.latency {
            return Err(format!(
                "latency_jitter ({:?}) must not exceed latency ({:?})",
                self.latency_jitter, self.latency
            ));
        }
        if self.accepted_versions.is_empty() {
            return Err("accepted_versions must name at least one version".into());
        }
        if self.users.is_empty() {
            return Err("at least one simulator user is needed".into());
        }
        for key in self.durations.keys() {
            if SimAction::ALL.iter().all(|a| a.as_str() != key) {
                return Err(format!(
                    "unknown action `{key}` in durations (expected on, off, shutdown, pause, resume or reset)"
                ));
            }
        }
        let mut vdc_ids = std::collections::HashSet::new();
        let mut vapp_ids = std::collections::HashSet::new();
        let mut vm_ids = std::collections::HashSet::new();
        let mut vm_names = std::collections::HashSet::new();
        for vdc in &self.vdcs {
            if !vdc_ids.insert(vdc.id) {
                return Err(format!("duplicate VDC id {}", vdc.id));
            }
            for vapp in &vdc.vapps {
                if !vapp_ids.insert(vapp.id) {
                    return Err(format!("duplicate vApp id {}", vapp.id));
                }
            }
        }
        for (_, _, vm) in self.vms() {
            if !vm_ids.insert(vm.id) {
                return Err(format!("duplicate VM id {}", vm.id));
            }
            if !vm_names.insert(vm.name.as_str()) {
                return Err(format!("duplicate VM name `{}`", vm.name));
            }
            if !(0.0..=1.0).contains(&vm.fail_rate) {
                return Err(format!(
                    "VM `{}`: fail_rate {} is not within 0.0..=1.0",
                    vm.name, vm.fail_rate
                ));
            }
        }
        Ok(())
    }
}

/// A public base URL must be an absolute http(s) URL with a host and nothing after the
/// path (links are built by appending paths to it).
fn check_public_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("public_url `{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "public_url `{url}` must be an http:// or https:// URL with a host"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(format!(
            "public_url `{url}` must have no user, query or fragment"
        ));
    }
    Ok(())
}

/// The simulator's own account (printed by `powerbook sim`; not a secret).
pub const DEFAULT_USER: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "xabiquo";
