//! Abiquo API model types, shared by the client and the simulator (one definition each).
//!
//! Shapes follow `shared/abiquo-api.md`. Deserialisation is tolerant: unknown fields are
//! ignored, optional fields default, and enums keep unknown values instead of failing, because
//! a newer server may add states we have never seen. One file for the entities (a little over
//! 500 lines with their tests): they are read together against the reference.

mod listed;
mod power;

pub use listed::{ListedVm, Names, Place};
pub use power::{PowerRequest, PowerState};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A hypermedia link as the API emits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Link {
    pub rel: String,
    pub href: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl Link {
    pub fn new(rel: &str, href: impl Into<String>) -> Self {
        Self {
            rel: rel.to_owned(),
            href: href.into(),
            media_type: None,
            title: None,
        }
    }

    #[must_use]
    pub fn typed(mut self, media_type: &str) -> Self {
        self.media_type = Some(media_type.to_owned());
        self
    }

    #[must_use]
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

/// Finds a link by `rel` in a link list.
pub fn find_link<'a>(links: &'a [Link], rel: &str) -> Option<&'a Link> {
    links.iter().find(|l| l.rel == rel)
}

/// Declares a string enum that round-trips unknown values through `Other(String)`.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)+
            /// A value this version of powerbook does not know.
            Other(String),
        }

        impl $name {
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// Parses a known value (case-sensitive, as the API spells it).
            pub fn parse_known(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::parse_known(s).unwrap_or_else(|| $name::Other(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A string: one of the values the API is known to send, or another it may add.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!(
                        "As the Abiquo API spells it (other values may appear): ",
                        $($text, " "),+
                    ),
                    "examples": [$($text),+],
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

open_enum! {
    /// VM state (`state` on the VM, §4.1).
    VmState {
        NotAllocated => "NOT_ALLOCATED",
        Allocated => "ALLOCATED",
        Configured => "CONFIGURED",
        On => "ON",
        Paused => "PAUSED",
        Off => "OFF",
        Locked => "LOCKED",
        Unknown => "UNKNOWN",
    }
}

impl VmState {
    /// Numeric `idState` as the API pairs it with `state`.
    pub fn id(&self) -> u32 {
        match self {
            VmState::NotAllocated => 1,
            VmState::Allocated => 2,
            VmState::Configured => 3,
            VmState::On => 4,
            VmState::Paused => 5,
            VmState::Off => 6,
            VmState::Locked => 7,
            VmState::Unknown | VmState::Other(_) => 8,
        }
    }
}

open_enum! {
    /// Task state (§4.3).
    TaskState {
        Pending => "PENDING",
        Started => "STARTED",
        Queueing => "QUEUEING",
        FinishedSuccessfully => "FINISHED_SUCCESSFULLY",
        FinishedUnsuccessfully => "FINISHED_UNSUCCESSFULLY",
        Aborted => "ABORTED",
        Cancelled => "CANCELLED",
        AckError => "ACK_ERROR",
    }
}

impl TaskState {
    /// Whether the task will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::FinishedSuccessfully
                | TaskState::FinishedUnsuccessfully
                | TaskState::Aborted
                | TaskState::Cancelled
                | TaskState::AckError
        )
    }

    pub fn is_success(&self) -> bool {
        matches!(self, TaskState::FinishedSuccessfully)
    }
}

open_enum! {
    /// Task type (§4.4), restricted to the power-relevant ones we name.
    TaskType {
        PowerOn => "POWER_ON",
        PowerOff => "POWER_OFF",
        Shutdown => "SHUTDOWN",
        Pause => "PAUSE",
        Resume => "RESUME",
        Reset => "RESET",
        Deploy => "DEPLOY",
        Undeploy => "UNDEPLOY",
        Reconfigure => "RECONFIGURE",
    }
}

open_enum! {
    /// Job state, also used for `rollbackState` (§4.5).
    JobState {
        Pending => "PENDING",
        Started => "STARTED",
        Done => "DONE",
        Failed => "FAILED",
        Skipped => "SKIPPED",
        RollbackStarted => "ROLLBACK_STARTED",
        RollbackDone => "ROLLBACK_DONE",
        Unknown => "UNKNOWN",
    }
}

/// A virtual machine as listed or fetched (`virtualmachine` media type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(default)]
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub state: VmState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_state: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_cause: Option<String>,
    /// Azure only: the VM is deallocated (hard powered off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocated: Option<bool>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// Where a VM is, as a listing showed it: what confirming a finished action needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSeen {
    /// Its `edit` link.
    pub href: String,
    pub state: VmState,
    pub deallocated: Option<bool>,
}

impl VmSeen {
    /// `None` for a VM without an `edit` link (it could not be matched to anything).
    pub fn of(vm: &VirtualMachine) -> Option<VmSeen> {
        Some(VmSeen {
            href: vm.href()?.to_owned(),
            state: vm.state.clone(),
            deallocated: vm.deallocated,
        })
    }
}

impl VirtualMachine {
    /// The IP addresses of its NICs, `nic0` first: each NIC is a link `nicN` whose title is
    /// its address (a convention clients rely on; the `nics` collection has it as `ip`).
    pub fn nic_ips(&self) -> Vec<&str> {
        let mut nics: Vec<(u32, &str)> = self
            .links
            .iter()
            .filter_map(|l| {
                let n = l.rel.strip_prefix("nic")?.parse::<u32>().ok()?;
                let ip = l
                    .title
                    .as_deref()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())?;
                Some((n, ip))
            })
            .collect();
        // The API does not list them in order.
        nics.sort_unstable();
        nics.into_iter().map(|(_, ip)| ip).collect()
    }

    pub fn link(&self, rel: &str) -> Option<&Link> {
        find_link(&self.links, rel)
    }

    /// Canonical URL of the VM (`edit` link; the VM has no `self`).
    pub fn href(&self) -> Option<&str> {
        self.link("edit").map(|l| l.href.as_str())
    }

    /// Hypervisor type from the `hypervisortype` link (title, or last path segment).
    pub fn hypervisor(&self) -> Option<&str> {
        let link = self.link("hypervisortype")?;
        match &link.title {
            Some(t) if !t.is_empty() => Some(t.as_str()),
            _ => link.href.rsplit('/').find(|s| !s.is_empty()),
        }
    }

    /// Title of a link (e.g. the vApp or VDC name), if the API gave one.
    pub fn link_title(&self, rel: &str) -> Option<&str> {
        self.link(rel).and_then(|l| l.title.as_deref())
    }

    /// Id of a parent resource from its link's last path segment (e.g. `virtualappliance`).
    pub fn link_id(&self, rel: &str) -> Option<u64> {
        self.link(rel)
            .and_then(|l| l.href.trim_end_matches('/').rsplit('/').next())
            .and_then(|s| s.parse().ok())
    }
}

/// Body of `PUT {vm}/state` and answer of `GET {vm}/state` (`virtualmachinestate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStateBody {
    pub state: VmState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown: Option<bool>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// 202 answer (`acceptedrequest`). Older servers put the text under `entity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AcceptedRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

impl AcceptedRequest {
    /// The task link to follow (`rel=status`).
    pub fn status_href(&self) -> Option<&str> {
        find_link(&self.links, "status").map(|l| l.href.as_str())
    }
}

/// A list wrapper: `{"links": [...], "collection": [...]}`, with optional `totalSize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collection<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<u64>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default = "Vec::new")]
    pub collection: Vec<T>,
}

impl<T> Collection<T> {
    pub fn next_href(&self) -> Option<&str> {
        find_link(&self.links, "next").map(|l| l.href.as_str())
    }
}

/// A job inside a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default)]
    pub description: String,
    pub state: JobState,
    #[serde(default = "unknown_job_state")]
    pub rollback_state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub links: Vec<Link>,
}

fn unknown_job_state() -> JobState {
    JobState::Unknown
}

/// The `jobs` field of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Jobs {
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub collection: Vec<Job>,
}

/// An asynchronous task (`task` media type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_id: String,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub state: TaskState,
    /// VM id as a string, as the API sends it.
    #[serde(default)]
    pub owner_id: String,
    #[serde(default)]
    pub user_id: String,
    /// Epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<i64>,
    /// Epoch seconds of the last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub jobs: Jobs,
    #[serde(default)]
    pub links: Vec<Link>,
}

impl Task {
    pub fn link(&self, rel: &str) -> Option<&Link> {
        find_link(&self.links, rel)
    }

    /// Jobs that did not finish well (state FAILED or a rollback happened).
    pub fn failed_jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.collection.iter().filter(|j| {
            matches!(j.state, JobState::Failed)
                || matches!(
                    j.rollback_state,
                    JobState::RollbackDone | JobState::RollbackStarted
                )
        })
    }
}

/// One Abiquo error (`collection[i]` of an `errors` body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorEntry {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiErrorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// `errors` body: `{"collection":[{"code":"VM-4","message":"..."}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ErrorsBody {
    #[serde(default)]
    pub collection: Vec<ApiErrorEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

impl ErrorsBody {
    pub fn single(code: &str, message: &str) -> Self {
        Self {
            collection: vec![ApiErrorEntry {
                code: code.to_owned(),
                message: message.to_owned(),
            }],
            links: Vec::new(),
        }
    }
}

/// Virtual datacenter (only the fields selection needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualDatacenter {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor_type: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// Virtual appliance (only the fields selection needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualAppliance {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// The user answered by `GET /login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub nick: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_task_state_round_trips_instead_of_failing() {
        let s: TaskState = serde_json::from_str("\"ON_HOLD\"").unwrap_or(TaskState::Pending);
        assert_eq!(s, TaskState::Other("ON_HOLD".into()));
        assert!(!s.is_terminal());
        assert_eq!(
            serde_json::to_string(&s).ok().as_deref(),
            Some("\"ON_HOLD\"")
        );
    }

    #[test]
    fn seed_failed_shutdown_task_parses() {
        let body = r#"{"taskId":"6cf6a3c6-0000","userId":"1","type":"SHUTDOWN","ownerId":"17883",
          "state":"FINISHED_UNSUCCESSFULLY","creationTimestamp":1600000000,"timestamp":1600000005,
          "jobs":{"links":[],"collection":[{"id":"6cf6a3c6-0000.1","parentTaskId":"6cf6a3c6-0000",
          "type":"SHUTDOWN","description":"Shutdown task's shutdown on virtual machine with id 17883",
          "state":"FAILED","rollbackState":"ROLLBACK_DONE","creationTimestamp":1600000000,
          "timestamp":1600000005,"links":[]}]},"links":[{"rel":"acknowledge","href":"x/action/ack"}]}"#;
        let task: Task = match serde_json::from_str(body) {
            Ok(t) => t,
            Err(e) => panic!("seed task must parse: {e}"),
        };
        assert_eq!(task.state, TaskState::FinishedUnsuccessfully);
        let failed: Vec<_> = task.failed_jobs().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].rollback_state, JobState::RollbackDone);
        assert!(task.link("acknowledge").is_some());
    }

    #[test]
    fn hypervisor_comes_from_link_title_or_href() {
        let mut vm = VirtualMachine {
            id: 1,
            uuid: None,
            name: "a".into(),
            label: None,
            description: None,
            state: VmState::On,
            id_state: None,
            cpu: None,
            ram: None,
            protected: false,
            protected_cause: None,
            deallocated: None,
            links: vec![Link::new(
                "hypervisortype",
                "http://h:80/api/config/hypervisortypes/AZURE",
            )],
        };
        assert_eq!(vm.hypervisor(), Some("AZURE"));
        vm.links[0].title = Some("KVM".into());
        assert_eq!(vm.hypervisor(), Some("KVM"));
    }
}
