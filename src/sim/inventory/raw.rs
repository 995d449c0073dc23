//! The inventory as written: one struct per TOML table, every leaf with its span. These
//! types are the source of the inventory's JSON Schema (`powerbook schema --inventory`), and
//! serde can read them directly (`deny_unknown_fields`); [`super::read`] builds them by hand
//! instead, so that every unknown key and wrong type is reported in one pass. A unit test
//! keeps the two in step.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A leaf value with the byte range it was written at.
pub(super) type Sp<T> = Spanned<T>;

/// A simulator inventory: the VDCs, vApps and VMs `powerbook sim` serves, and optional
/// settings of its behaviour.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "powerbook simulator inventory")]
pub(super) struct RawInventory {
    /// Task timing and the behaviour the API reference leaves open.
    #[schemars(with = "Option<RawSettings>")]
    pub settings: Option<Sp<RawSettings>>,
    /// The virtual datacenters, each with its vApps.
    #[serde(default, rename = "vdc")]
    #[schemars(with = "Vec<RawVdc>")]
    pub vdcs: Vec<Sp<RawVdc>>,
}

/// `[settings]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Settings")]
pub(super) struct RawSettings {
    /// Mean task duration (default "1500ms").
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub task_duration: Option<Sp<String>>,
    /// Uniform jitter: each task takes `task_duration ± task_jitter` (default "500ms").
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub task_jitter: Option<Sp<String>>,
    /// Mean duration per action, overriding `task_duration`: keys on, off, shutdown, pause,
    /// resume, reset.
    #[serde(default)]
    #[schemars(schema_with = "schema::durations")]
    pub durations: Option<Sp<BTreeMap<Sp<String>, Sp<String>>>>,
    /// Seed of every random choice (durations, failures, faults).
    #[schemars(with = "Option<u64>")]
    pub seed: Option<Sp<u64>>,
    /// Tasks take `duration / speed` (default 1; more than 0).
    #[serde(default)]
    #[schemars(schema_with = "schema::speed")]
    pub speed: Option<Sp<f64>>,
    /// Media-type versions accepted; the last one is used when a request names none.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub accepted_versions: Option<Sp<Vec<Sp<String>>>>,
    /// Error answered for a power request on a LOCKED VM: VM-11 (default), VM-2 or
    /// ASYNC-TASK-2.
    #[serde(default)]
    #[schemars(schema_with = "schema::locked_code")]
    pub locked_code: Option<Sp<String>>,
    /// Record PAUSED → ON as task type RESET (Abiquo 2.0) instead of RESUME.
    #[schemars(with = "Option<bool>")]
    pub resume_as_reset: Option<Sp<bool>>,
    /// Allow PAUSED → OFF (Abiquo 2.0 refuses it with VM-4).
    #[schemars(with = "Option<bool>")]
    pub allow_paused_off: Option<Sp<bool>>,
    /// Allow a hard off of an Azure VM that is OFF but not deallocated (deallocates it).
    #[schemars(with = "Option<bool>")]
    pub azure_deallocate_stopped: Option<Sp<bool>>,
    /// After `action/ack`, a failed task reads ACK_ERROR.
    #[schemars(with = "Option<bool>")]
    pub ack_sets_ack_error: Option<Sp<bool>>,
    /// Also send the 3.x `entity` key in acceptedrequest answers.
    #[schemars(with = "Option<bool>")]
    pub emit_entity: Option<Sp<bool>>,
}

/// `[[vdc]]`: a virtual datacenter.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vdc")]
pub(super) struct RawVdc {
    /// The VDC's name.
    #[schemars(required, with = "String", length(min = 1))]
    pub name: Option<Sp<String>>,
    /// Its API id (unique among VDCs, 1 or more); without one it follows the previous VDC's.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub id: Option<Sp<u64>>,
    /// Hypervisor type of every VM in it, as the API spells it (default "KVM"); "AZURE"
    /// VDCs know `deallocated` VMs.
    #[serde(default)]
    #[schemars(schema_with = "schema::hypervisor")]
    pub hypervisor: Option<Sp<String>>,
    /// Its virtual appliances.
    #[serde(default, rename = "vapp")]
    #[schemars(with = "Vec<RawVapp>")]
    pub vapps: Vec<Sp<RawVapp>>,
}

/// `[[vdc.vapp]]`: a virtual appliance.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vapp")]
pub(super) struct RawVapp {
    /// The vApp's name.
    #[schemars(required, with = "String", length(min = 1))]
    pub name: Option<Sp<String>>,
    /// Its API id (unique among all vApps, 1 or more); without one it follows the previous
    /// vApp's.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub id: Option<Sp<u64>>,
    /// Its virtual machines.
    #[serde(default, rename = "vm")]
    #[schemars(with = "Vec<RawVm>")]
    pub vms: Vec<Sp<RawVm>>,
}

/// `[[vdc.vapp.vm]]`: a virtual machine as it is when the simulator starts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vm")]
pub(super) struct RawVm {
    /// The VM's name, unique in the inventory.
    #[schemars(required, with = "String", length(min = 1))]
    pub name: Option<Sp<String>>,
    /// Its API id (unique among VMs, 1 or more); without one it follows the previous VM's.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub id: Option<Sp<u64>>,
    /// Its friendly name.
    #[schemars(with = "Option<String>")]
    pub label: Option<Sp<String>>,
    /// Its power state at start (default "ON").
    #[serde(default)]
    #[schemars(schema_with = "schema::state")]
    pub state: Option<Sp<String>>,
    /// Whether it has guest tools (default true): a graceful shutdown fails without them.
    #[schemars(with = "Option<bool>")]
    pub guest_tools: Option<Sp<bool>>,
    /// Protected VMs are refused every action (VM-120).
    #[schemars(with = "Option<bool>")]
    pub protected: Option<Sp<bool>>,
    /// Why it is protected.
    #[schemars(with = "Option<String>")]
    pub protected_cause: Option<Sp<String>>,
    /// Chance (0.0 to 1.0) that any task on it fails with ROLLBACK_DONE.
    #[schemars(with = "Option<f64>", range(min = 0.0, max = 1.0))]
    pub fail_rate: Option<Sp<f64>>,
    /// Actions whose tasks always fail on it: on, off, shutdown, pause, resume, reset,
    /// deallocate.
    #[serde(default)]
    #[schemars(schema_with = "schema::fail_actions")]
    pub fail_actions: Option<Sp<Vec<Sp<String>>>>,
    /// The user may not act on it: every action is refused 403.
    #[schemars(with = "Option<bool>")]
    pub forbidden: Option<Sp<bool>>,
    /// AZURE VDCs only: it starts deallocated.
    #[schemars(with = "Option<bool>")]
    pub deallocated: Option<Sp<bool>>,
    /// Its NICs' IP addresses, `nic0` first, linked from the VM as the API links them.
    /// Absent: one private address derived from its id; `[]`: no NIC.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub ips: Option<Sp<Vec<Sp<String>>>>,
}

/// The keys each table knows, in the order the documentation lists them.
pub(super) mod keys {
    pub const INVENTORY: &[&str] = &["settings", "vdc"];
    pub const SETTINGS: &[&str] = &[
        "task_duration",
        "task_jitter",
        "durations",
        "seed",
        "speed",
        "accepted_versions",
        "locked_code",
        "resume_as_reset",
        "allow_paused_off",
        "azure_deallocate_stopped",
        "ack_sets_ack_error",
        "emit_entity",
    ];
    pub const VDC: &[&str] = &["name", "id", "hypervisor", "vapp"];
    pub const VAPP: &[&str] = &["name", "id", "vm"];
    pub const VM: &[&str] = &[
        "name",
        "id",
        "label",
        "state",
        "guest_tools",
        "protected",
        "protected_cause",
        "fail_rate",
        "fail_actions",
        "forbidden",
        "deallocated",
        "ips",
    ];
}

/// Values `locked_code` takes, as the API spells the codes (lower case is accepted too).
pub(super) const LOCKED_CODES: &[&str] = &["VM-11", "VM-2", "ASYNC-TASK-2"];

/// Actions `fail_actions` names; `deallocate` is Azure's hard off.
pub(super) const FAIL_ACTIONS: &[&str] = &[
    "on",
    "off",
    "shutdown",
    "pause",
    "resume",
    "reset",
    "deallocate",
];

/// Schema fragments for leaves whose TOML form differs from their Rust type.
mod schema {
    use crate::sim::SimAction;
    use schemars::{Schema, SchemaGenerator, json_schema};

    pub fn duration(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as \"1500ms\", \"2s\", \"1m 30s\".",
            "pattern": r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$"
        })
    }

    pub fn speed(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "description": "Tasks take `duration / speed` (default 1).",
            "exclusiveMinimum": 0
        })
    }

    pub fn durations(generator: &mut SchemaGenerator) -> Schema {
        let actions: Vec<&str> = SimAction::ALL.iter().map(|a| a.as_str()).collect();
        json_schema!({
            "type": "object",
            "description": "Mean task duration per action, e.g. shutdown = \"2500ms\".",
            "propertyNames": { "enum": actions },
            "additionalProperties": duration(generator)
        })
    }

    pub fn locked_code(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Error answered for a power request on a LOCKED VM (default VM-11).",
            "enum": ["VM-11", "VM-2", "ASYNC-TASK-2", "vm-11", "vm-2", "async-task-2"]
        })
    }

    pub fn hypervisor(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "Hypervisor type as the API spells it (default \"KVM\").",
            "examples": crate::runbook::raw::HYPERVISORS
        })
    }

    pub fn state(_: &mut SchemaGenerator) -> Schema {
        let known: Vec<&str> = crate::abiquo::model::VmState::KNOWN
            .iter()
            .map(|s| s.as_str())
            .collect();
        json_schema!({
            "type": "string",
            "description": "Power state at start (default \"ON\").",
            "enum": known
        })
    }

    pub fn fail_actions(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "description": "Actions whose tasks always fail on this VM.",
            "items": { "enum": super::FAIL_ACTIONS }
        })
    }
}
