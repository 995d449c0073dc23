//! Validated runbook: no spans, no strings standing in for enums. Everything after
//! validation (plan, run, resume) works on these types only.

use crate::abiquo::model::{PowerRequest, PowerState, VmState};
use globset::{Glob, GlobMatcher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::Duration;

/// A power action a step performs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Power on (also resumes nothing: a PAUSED VM needs `resume`).
    On,
    /// Hard power off.
    Off,
    /// Graceful shutdown through the guest tools.
    Shutdown,
    /// Suspend a running VM (PAUSED).
    Pause,
    /// Continue a PAUSED VM.
    Resume,
    /// Hard reset of a running VM (it stays ON).
    Reset,
    /// Azure: hard power off that releases the compute (`deallocated: true`).
    Deallocate,
    /// Graceful shutdown (with the step's `fallback` to a hard off), then power on, as one
    /// unit holding one concurrency slot; a VM that is OFF is only powered on.
    Restart,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::On,
        Action::Off,
        Action::Shutdown,
        Action::Pause,
        Action::Resume,
        Action::Reset,
        Action::Deallocate,
        Action::Restart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Shutdown => "shutdown",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Reset => "reset",
            Action::Deallocate => "deallocate",
            Action::Restart => "restart",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The VM state the action leads to (`reset` keeps the VM ON).
    pub fn target_state(self) -> VmState {
        match self {
            Action::On | Action::Resume | Action::Reset | Action::Restart => VmState::On,
            Action::Off | Action::Shutdown | Action::Deallocate => VmState::Off,
            Action::Pause => VmState::Paused,
        }
    }

    /// The request the executor sends for the action (a resume is a PUT ON, a deallocation
    /// a hard PUT OFF).
    pub fn request(self) -> PowerRequest {
        let state = |target, graceful| PowerRequest::State { target, graceful };
        match self {
            Action::On | Action::Resume => state(PowerState::On, false),
            Action::Off | Action::Deallocate => PowerRequest::HARD_OFF,
            // A restart's first request; its power on follows (from OFF it is the only one).
            Action::Shutdown | Action::Restart => state(PowerState::Off, true),
            Action::Pause => state(PowerState::Paused, false),
            Action::Reset => PowerRequest::Reset,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A count or a percentage of some total (`3` or `"10%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Amount {
    Count(u64),
    /// 1..=100
    Percent(u8),
}

impl Amount {
    /// Resolves against a total. Percentages round up so that `25%` of 1 VM is 1, not 0.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Amount::Percent(p) => (total * usize::from(p)).div_ceil(100),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A name glob (`web-*`), kept with its source text. A glob is checked when it is made but
/// compiled only when first matched, and a name without glob syntax is compared as text:
/// validating a runbook of 100,000 selectors builds no matcher at all.
#[derive(Debug, Clone)]
pub struct Pattern {
    raw: String,
    /// `None` for a plain name. Boxed: a matcher is large and most names are plain.
    glob: Option<Box<LazyGlob>>,
}

#[derive(Debug, Clone)]
struct LazyGlob {
    glob: Glob,
    matcher: OnceLock<GlobMatcher>,
}

impl Pattern {
    pub fn new(raw: &str) -> Result<Self, globset::Error> {
        let plain = !raw.contains(['*', '?', '[', ']', '{', '}', '\\']);
        let glob = if plain {
            None
        } else {
            Some(Box::new(LazyGlob {
                glob: Glob::new(raw)?,
                matcher: OnceLock::new(),
            }))
        };
        Ok(Self {
            raw: raw.to_owned(),
            glob,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match &self.glob {
            None => self.raw == name,
            Some(lazy) => lazy
                .matcher
                .get_or_init(|| lazy.glob.compile_matcher())
                .is_match(name),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when the pattern has no glob metacharacters.
    pub fn is_literal(&self) -> bool {
        !self.raw.contains(['*', '?', '[', '{'])
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Pattern {}

/// A VDC or vApp reference: numeric id or name glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOrId {
    Id(u64),
    Name(Pattern),
}

impl NameOrId {
    pub fn matches(&self, id: Option<u64>, name: Option<&str>) -> bool {
        match self {
            NameOrId::Id(want) => id == Some(*want),
            NameOrId::Name(p) => name.is_some_and(|n| p.matches(n)),
        }
    }
}

impl fmt::Display for NameOrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameOrId::Id(id) => write!(f, "{id}"),
            NameOrId::Name(p) => f.write_str(p.as_str()),
        }
    }
}

/// One selector: all present fields must match (AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub vdc: Option<NameOrId>,
    pub vapp: Option<NameOrId>,
    pub vm: Option<Pattern>,
    pub label: Option<Pattern>,
    pub state: Option<VmState>,
    /// Hypervisor type as the API spells it (`AZURE`, `KVM`, ...), compared case-insensitively.
    pub hypervisor: Option<String>,
    /// An exact VM URL (`edit` link).
    pub href: Option<String>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.vdc {
            parts.push(format!("vdc={v}"));
        }
        if let Some(v) = &self.vapp {
            parts.push(format!("vapp={v}"));
        }
        if let Some(v) = &self.vm {
            parts.push(format!("vm={}", v.as_str()));
        }
        if let Some(v) = &self.label {
            parts.push(format!("label={}", v.as_str()));
        }
        if let Some(v) = &self.state {
            parts.push(format!("state={v}"));
        }
        if let Some(v) = &self.hypervisor {
            parts.push(format!("hypervisor={v}"));
        }
        if let Some(v) = &self.href {
            parts.push(format!("href={v}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// How a step walks its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Up to the step's concurrency at once.
    #[default]
    Parallel,
    /// One VM at a time, in the order the targets list them.
    Sequential,
}

/// What a failure threshold does when crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Start nothing new; let in-flight tasks finish; the rest is "not started".
    #[default]
    Abort,
    /// Keep going; failures are reported.
    Continue,
}

/// Waves: the step's VMs are split into chunks, with a pause between chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waves {
    /// The size of each wave in turn; the last one repeats (one size: every wave).
    pub sizes: Vec<Amount>,
    pub pause: Duration,
    /// Checked before each wave after the first.
    pub gate: Option<Gate>,
}

/// What a gate waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateCheck {
    /// A TCP connection to `address` (`host:port`) opens.
    Tcp { address: String },
    /// A GET of `url` answers with `status` (sent without credentials).
    Http { url: String, status: u16 },
    /// The program exits 0 (`argv[0]` with the other arguments; no shell).
    Command { argv: Vec<String> },
    /// The operator says go on (on the terminal, or `--approve-gates`).
    Approve { message: String },
}

/// What a per-VM gate knows of each VM it checks.
#[derive(Debug, Clone, Copy)]
pub struct GateVm<'a> {
    pub id: u64,
    pub name: &'a str,
    /// Its first NIC's address, as the API gave it.
    pub ip: Option<&'a str>,
}

/// The placeholders a gate's address, URL or command may hold, each replaced per VM.
pub const VM_PLACEHOLDERS: [&str; 3] = ["{vm.name}", "{vm.ip}", "{vm.id}"];

impl GateCheck {
    /// The texts placeholders may appear in.
    fn texts(&self) -> Vec<&str> {
        match self {
            GateCheck::Tcp { address } => vec![address],
            GateCheck::Http { url, .. } => vec![url],
            GateCheck::Command { argv } => argv.iter().map(String::as_str).collect(),
            GateCheck::Approve { message } => vec![message],
        }
    }

    /// Checked once per VM (its texts name `{vm.…}`), rather than once.
    pub fn per_vm(&self) -> bool {
        self.texts().iter().any(|t| t.contains("{vm."))
    }

    /// The check for one VM, its placeholders replaced; `Err` when the VM lacks what it
    /// needs (an address).
    pub fn for_vm(&self, vm: GateVm<'_>) -> Result<GateCheck, String> {
        let fill = |text: &str| -> Result<String, String> {
            let mut out = text
                .replace("{vm.name}", vm.name)
                .replace("{vm.id}", &vm.id.to_string());
            if out.contains("{vm.ip}") {
                let ip = vm.ip.ok_or_else(|| {
                    format!(
                        "{} has no IP address: the API shows no NIC (`nic0` link) for it",
                        vm.name
                    )
                })?;
                // An IPv6 address takes brackets before a port.
                let ip = if ip.contains(':') && !ip.starts_with('[') {
                    format!("[{ip}]")
                } else {
                    ip.to_owned()
                };
                out = out.replace("{vm.ip}", &ip);
            }
            Ok(out)
        };
        Ok(match self {
            GateCheck::Tcp { address } => GateCheck::Tcp {
                address: fill(address)?,
            },
            GateCheck::Http { url, status } => GateCheck::Http {
                url: fill(url)?,
                status: *status,
            },
            GateCheck::Command { argv } => GateCheck::Command {
                argv: argv.iter().map(|a| fill(a)).collect::<Result<_, _>>()?,
            },
            GateCheck::Approve { message } => GateCheck::Approve {
                message: fill(message)?,
            },
        })
    }
}

/// The first `{vm.…}` in `text` that is not one of [`VM_PLACEHOLDERS`].
pub fn unknown_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find("{vm.") {
        let tail = &rest[start..];
        let end = tail.find('}').map_or(tail.len(), |e| e + 1);
        let found = &tail[..end];
        if !VM_PLACEHOLDERS.contains(&found) {
            return Some(found);
        }
        rest = &tail[end..];
    }
    None
}

impl fmt::Display for GateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateCheck::Tcp { address } => write!(f, "tcp {address}"),
            GateCheck::Http { url, status } => write!(f, "http {url} → {status}"),
            GateCheck::Command { argv } => write!(f, "command `{}`", argv.join(" ")),
            GateCheck::Approve { message } => write!(f, "approve \"{message}\""),
        }
    }
}

/// A check that must pass before work goes on, retried every `interval_ms` for at most
/// `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Gate {
    pub check: GateCheck,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

/// A gate on an `after` edge: checked once step `after` is done (whatever the other steps
/// the step waits for are doing), before the step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EdgeGate {
    /// The step (index) whose end starts the checking.
    pub after: usize,
    pub gate: Gate,
}

/// How long a gate is checked when the runbook does not say.
pub const GATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between two checks of a gate when the runbook does not say.
pub const GATE_INTERVAL: Duration = Duration::from_secs(5);

impl Waves {
    /// Chunk lengths for `n` VMs: each size of the ramp resolved against `n`, the last one
    /// repeated until every VM has its wave. Every wave has at least one VM.
    pub fn chunks(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = n;
        let mut i = 0;
        while left > 0 {
            let size = self
                .sizes
                .get(i)
                .or(self.sizes.last())
                .map_or(left, |a| a.of(n))
                .clamp(1, left);
            out.push(size);
            left -= size;
            i += 1;
        }
        out
    }
}

/// Graceful shutdown fallback: hard off when the graceful task fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    /// Always `Action::Off` today.
    pub action: Action,
    pub after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    /// ORed selectors.
    pub targets: Vec<Selector>,
    /// VMs matching any of these are left out (recorded as "excluded").
    pub exclude: Vec<Selector>,
    /// Indices into `Runbook::steps` this step waits for. Empty = starts at once.
    pub after: Vec<usize>,
    /// Gates on some of those edges, in the order written (each on a step in `after`).
    pub after_gates: Vec<EdgeGate>,
    pub order: Order,
    /// Per-step limit on VMs in flight (the run-wide limit still applies).
    pub concurrency: Option<NonZeroUsize>,
    pub waves: Option<Waves>,
    /// Checked before the step starts (once the steps it waits for are done).
    pub gate: Option<Gate>,
    pub fallback: Option<Fallback>,
    pub task_timeout: Duration,
    pub on_failure: OnFailure,
    pub max_failures: Option<Amount>,
    /// Act on protected VMs too (they are skipped otherwise).
    pub allow_protected: bool,
    /// How long one task of this step is expected to take (for plan estimates).
    pub expected_duration: Option<Duration>,
}

/// `[api]`: lowest-priority connection settings (flag > environment > runbook).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiSettings {
    pub endpoint: Option<String>,
    pub version: Option<String>,
}

/// `[limits]`: run-wide bounds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub concurrency: Option<NonZeroUsize>,
    pub requests_per_second: Option<NonZeroUsize>,
    /// Start nothing new after this long.
    pub deadline: Option<Duration>,
    /// Run-wide failure threshold (over all VMs of the run).
    pub max_failures: Option<Amount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runbook {
    pub name: String,
    pub description: Option<String>,
    pub api: ApiSettings,
    pub limits: Limits,
    /// Expected task duration per action, for plan estimates (`[estimates]`).
    pub estimates: BTreeMap<Action, Duration>,
    pub steps: Vec<Step>,
    /// SHA-256 of the runbook source, hex (journal and saved plans compare it).
    pub source_hash: String,
}

impl Runbook {
    pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_CONCURRENCY: usize = 50;

    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_amount_rounds_up_and_count_is_literal() {
        assert_eq!(Amount::Percent(25).of(10), 3);
        assert_eq!(Amount::Percent(25).of(1), 1);
        assert_eq!(Amount::Percent(100).of(7), 7);
        assert_eq!(Amount::Count(3).of(100), 3);
    }

    #[test]
    fn pattern_matches_globs() {
        let p = Pattern::new("web-*").ok();
        assert!(p.as_ref().is_some_and(|p| p.matches("web-01")));
        assert!(!p.as_ref().is_some_and(|p| p.matches("db-01")));
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    #[test]
    fn a_gate_check_fills_in_each_vms_name_id_and_address() {
        let check = GateCheck::Http {
            url: "http://{vm.ip}:8080/health?vm={vm.name}&id={vm.id}".into(),
            status: 200,
        };
        assert!(check.per_vm());
        let vm = GateVm {
            id: 7,
            name: "web-07",
            ip: Some("10.0.0.7"),
        };
        assert_eq!(
            check.for_vm(vm).unwrap().to_string(),
            "http http://10.0.0.7:8080/health?vm=web-07&id=7 → 200"
        );
        let v6 = GateVm {
            ip: Some("fd00::7"),
            ..vm
        };
        let tcp = GateCheck::Tcp {
            address: "{vm.ip}:22".into(),
        };
        assert_eq!(tcp.for_vm(v6).unwrap().to_string(), "tcp [fd00::7]:22");
        let none = GateVm { ip: None, ..vm };
        assert!(tcp.for_vm(none).unwrap_err().contains("no IP address"));
        let fixed = GateCheck::Tcp {
            address: "db:5432".into(),
        };
        assert!(!fixed.per_vm());
    }

    #[test]
    fn only_the_known_placeholders_are_accepted() {
        assert_eq!(unknown_placeholder("{vm.ip}:{vm.port}"), Some("{vm.port}"));
        assert_eq!(unknown_placeholder("{vm.name}.internal:{vm.id}"), None);
        assert_eq!(unknown_placeholder("echo {} {vm.nam"), Some("{vm.nam"));
    }
}
