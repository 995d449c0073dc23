//! The runbook as written: one struct per TOML table, every leaf with its span. These types
//! are also the source of the JSON Schema (`powerbook schema`), and serde can read them
//! directly (`deny_unknown_fields`); [`super::read`] builds them by hand instead so that it can
//! report every unknown key and wrong type in one pass. A unit test keeps the two in step.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A leaf value with the byte range it was written at.
pub type Sp<T> = Spanned<T>;

/// A count (`3`) or a text that should be a percentage (`"10%"`), as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawAmount {
    Count(i64),
    Text(String),
}

/// A VDC or vApp: a numeric id or a name glob, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawNameOrId {
    Id(i64),
    Name(String),
}

/// A powerbook runbook: VM power actions against an Abiquo cloud, in ordered steps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "powerbook runbook")]
pub struct RawRunbook {
    /// Name of the runbook, shown in plans, reports and the journal.
    #[schemars(required, with = "String", length(min = 1))]
    pub name: Option<Sp<String>>,
    /// What the runbook is for.
    #[schemars(with = "Option<String>")]
    pub description: Option<Sp<String>>,
    /// Connection settings; a command-line flag or environment variable overrides them.
    /// Credentials never go here: use ABIQUO_API_USERNAME / ABIQUO_API_PASSWORD or
    /// ABIQUO_API_TOKEN.
    pub api: Option<RawApi>,
    /// Run-wide bounds.
    pub limits: Option<RawLimits>,
    /// Settings every step inherits unless it sets its own.
    pub defaults: Option<RawDefaults>,
    /// Expected task duration per action (for `powerbook plan` estimates), e.g. `shutdown = "2m"`.
    #[serde(default)]
    #[schemars(schema_with = "schema::estimates")]
    pub estimates: Option<Sp<BTreeMap<Sp<String>, Sp<String>>>>,
    /// The steps, in order. A step without `after` runs after the step above it.
    #[serde(rename = "step")]
    #[schemars(required, with = "Vec<RawStep>", length(min = 1))]
    pub steps: Option<Vec<Sp<RawStep>>>,
}

/// `[api]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Api")]
pub struct RawApi {
    /// API root URL, e.g. `https://abiquo.example.com/api`.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub endpoint: Option<Sp<String>>,
    /// Media-type version sent on Accept and Content-Type, e.g. `"5.0"`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub version: Option<Sp<String>>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub struct RawLimits {
    /// VMs in flight across the whole run (default 50).
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub concurrency: Option<Sp<i64>>,
    /// API requests per second across the whole run.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub requests_per_second: Option<Sp<i64>>,
    /// Start nothing new after this long (e.g. `"90m"`); the rest is reported not started.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub deadline: Option<Sp<String>>,
    /// Run-wide failure threshold over all VMs: a count (`3`) or a percentage (`"10%"`).
    #[serde(default)]
    #[schemars(schema_with = "schema::amount")]
    pub max_failures: Option<Sp<RawAmount>>,
}

/// `[defaults]`: inherited by every step unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Defaults")]
pub struct RawDefaults {
    /// How long one VM's task may take before it counts as failed (default `"10m"`).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub task_timeout: Option<Sp<String>>,
    /// What crossing `max_failures` does: `abort` (default) or `continue`.
    #[schemars(with = "Option<crate::runbook::model::OnFailure>")]
    pub on_failure: Option<Sp<String>>,
    /// Failure threshold per step: a count (`3`) or a percentage of the step's VMs (`"10%"`).
    #[serde(default)]
    #[schemars(schema_with = "schema::amount")]
    pub max_failures: Option<Sp<RawAmount>>,
    /// VMs in flight per step.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub concurrency: Option<Sp<i64>>,
    /// `parallel` (default) or `sequential`.
    #[schemars(with = "Option<crate::runbook::model::Order>")]
    pub order: Option<Sp<String>>,
    /// Act on protected VMs too (default false: they are skipped).
    #[schemars(with = "Option<bool>")]
    pub allow_protected: Option<Sp<bool>>,
    /// How long one task is expected to take, for plan estimates.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub expected_duration: Option<Sp<String>>,
}

/// `[[step]]`: one power action on a set of VMs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
pub struct RawStep {
    /// Unique name; `after` refers to it.
    #[schemars(required, with = "String", length(min = 1))]
    pub name: Option<Sp<String>>,
    /// The power action.
    #[schemars(required, with = "crate::runbook::model::Action")]
    pub action: Option<Sp<String>>,
    /// Which VMs: a VM matching any selector is acted on.
    #[schemars(required, with = "Vec<RawSelector>", length(min = 1))]
    pub targets: Option<Sp<Vec<Sp<RawSelector>>>>,
    /// VMs matching any of these selectors are left out.
    #[schemars(with = "Option<Vec<RawSelector>>")]
    pub exclude: Option<Sp<Vec<Sp<RawSelector>>>>,
    /// Steps this one waits for. Absent: the step above. `[]`: starts at once. An entry is
    /// a step name, or `{ step = "db up", gate = { ... } }`: that step, with a gate checked
    /// once it is done.
    #[schemars(with = "Option<Vec<RawAfter>>")]
    pub after: Option<Sp<Vec<Sp<RawAfter>>>>,
    /// `parallel` (default) or `sequential`: one VM at a time, in the order the targets list them.
    #[schemars(with = "Option<crate::runbook::model::Order>")]
    pub order: Option<Sp<String>>,
    /// VMs of this step in flight at once (the run-wide limit still applies).
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub concurrency: Option<Sp<i64>>,
    /// Split the step's VMs into waves with a pause between them.
    #[schemars(with = "Option<RawWaves>")]
    pub waves: Option<Sp<RawWaves>>,
    /// Checked once the steps in `after` are done, before this step starts: it starts when
    /// the check passes (a port answers, a URL answers with a status, a command exits 0).
    #[schemars(with = "Option<RawGate>")]
    pub gate: Option<Sp<RawGate>>,
    /// `shutdown` only: hard power off when the graceful shutdown fails or takes too long.
    #[schemars(with = "Option<RawFallback>")]
    pub fallback: Option<Sp<RawFallback>>,
    /// How long one VM's task may take before it counts as failed.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub task_timeout: Option<Sp<String>>,
    /// What crossing `max_failures` does: `abort` or `continue`.
    #[schemars(with = "Option<crate::runbook::model::OnFailure>")]
    pub on_failure: Option<Sp<String>>,
    /// Failure threshold: a count (`3`) or a percentage of the step's VMs (`"10%"`).
    #[serde(default)]
    #[schemars(schema_with = "schema::amount")]
    pub max_failures: Option<Sp<RawAmount>>,
    /// Act on protected VMs too.
    #[schemars(with = "Option<bool>")]
    pub allow_protected: Option<Sp<bool>>,
    /// How long one task is expected to take, for plan estimates.
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub expected_duration: Option<Sp<String>>,
}

/// A VM selector: every field given must match (AND). At least one field is required.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Selector")]
#[schemars(extend("minProperties" = 1))]
pub struct RawSelector {
    /// Virtual datacenter: a name glob or a numeric id.
    #[serde(default)]
    #[schemars(schema_with = "schema::name_or_id")]
    pub vdc: Option<Sp<RawNameOrId>>,
    /// Virtual appliance: a name glob or a numeric id.
    #[serde(default)]
    #[schemars(schema_with = "schema::name_or_id")]
    pub vapp: Option<Sp<RawNameOrId>>,
    /// VM name glob, e.g. `"web-*"`.
    #[schemars(with = "Option<String>", length(min = 1))]
    pub vm: Option<Sp<String>>,
    /// VM label glob.
    #[schemars(with = "Option<String>", length(min = 1))]
    pub label: Option<Sp<String>>,
    /// Current VM state, as the API spells it (`ON`, `OFF`, `PAUSED`, ...).
    #[serde(default)]
    #[schemars(schema_with = "schema::state")]
    pub state: Option<Sp<String>>,
    /// Hypervisor type, as the API spells it (`KVM`, `VMX_04`, `AZURE`, ...).
    #[serde(default)]
    #[schemars(schema_with = "schema::hypervisor")]
    pub hypervisor: Option<Sp<String>>,
    /// One exact VM URL (its `edit` link).
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub href: Option<Sp<String>>,
}

/// `waves = { size = "25%", pause = "30s" }` or a ramp, `waves = { sizes = [1, "10%", "25%"] }`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Waves")]
pub struct RawWaves {
    /// VMs per wave: a count (`5`) or a percentage of the step's VMs (`"25%"`). One of
    /// `size` and `sizes`.
    #[serde(default)]
    #[schemars(schema_with = "schema::amount")]
    pub size: Option<Sp<RawAmount>>,
    /// A ramp: the size of each wave in turn, the last one repeating, e.g.
    /// `[1, "10%", "25%"]` (a canary VM, then 10%, then 25% at a time).
    #[serde(default)]
    #[schemars(schema_with = "schema::amounts")]
    pub sizes: Option<Sp<Vec<Sp<RawAmount>>>>,
    /// Checked before each wave after the first (after the pause).
    #[serde(default)]
    #[schemars(with = "Option<RawGate>")]
    pub gate: Option<Sp<RawGate>>,
    /// Pause between waves (default: none).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub pause: Option<Sp<String>>,
}

/// An `after` entry: a step name (`"db up"`), or that step with a gate on the edge
/// (`{ step = "db up", gate = { tcp = "db-1:5432" } }`).
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "After")]
pub enum RawAfter {
    /// The name of a step this one waits for.
    Step(#[schemars(length(min = 1))] String),
    /// A step this one waits for, and a gate checked once it is done.
    // Boxed: most entries are names, and a long chain of steps has one each.
    Gated(Box<RawAfterStep>),
}

/// Serde reads a name as [`RawAfter::Step`] and a table as [`RawAfter::Gated`] (an untagged
/// derive would lose the spans inside the table).
impl<'de> Deserialize<'de> for RawAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = RawAfter;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a step name or a table { step = \"...\", gate = { ... } }")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<RawAfter, E> {
                Ok(RawAfter::Step(name.to_owned()))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawAfter, M::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                RawAfterStep::deserialize(d).map(|g| RawAfter::Gated(Box::new(g)))
            }
        }
        d.deserialize_any(Entry)
    }
}

/// `{ step = "db up", gate = { tcp = "db-1:5432", timeout = "10m" } }` in `after`: the step
/// waits for `db up`, and once `db up` is done checks the gate (while the other steps it
/// waits for may still run); it starts when every step it waits for is done and every gate
/// passed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AfterStep")]
pub struct RawAfterStep {
    /// The name of a step this one waits for.
    #[schemars(required, with = "String", length(min = 1))]
    pub step: Option<Sp<String>>,
    /// Checked once that step is done, before this one starts.
    #[serde(default)]
    #[schemars(with = "Option<RawGate>")]
    pub gate: Option<Sp<RawGate>>,
}

/// `gate = { tcp = "db-1:5432", timeout = "5m", interval = "5s" }`: exactly one check.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Gate")]
pub struct RawGate {
    /// Passes when a TCP connection to `host:port` opens.
    #[serde(default)]
    #[schemars(with = "Option<String>", length(min = 3))]
    pub tcp: Option<Sp<String>>,
    /// Passes when a GET of `url` answers with `status` (default 200).
    #[serde(default)]
    #[schemars(with = "Option<RawHttpGate>")]
    pub http: Option<Sp<RawHttpGate>>,
    /// Passes when the command (program and arguments, no shell) exits 0.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// Passes when the operator approves (the run asks on its terminal, showing this).
    #[serde(default)]
    #[schemars(with = "Option<String>", length(min = 1))]
    pub approve: Option<Sp<String>>,
    /// How long to keep checking before the gate fails (default 5m).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<Sp<String>>,
    /// Time between two checks (default 5s).
    #[serde(default)]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<Sp<String>>,
}

/// `http = { url = "https://app.example.com/health", status = 200 }`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpGate")]
pub struct RawHttpGate {
    #[schemars(required, with = "String", regex(pattern = r"^https?://"))]
    pub url: Option<Sp<String>>,
    /// The status that passes (default 200).
    #[serde(default)]
    #[schemars(with = "Option<u16>", range(min = 100, max = 599))]
    pub status: Option<Sp<i64>>,
}

/// `fallback = { action = "off", after = "5m" }`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Fallback")]
pub struct RawFallback {
    /// The fallback action; `off` (hard power off) is the only one, and the default.
    #[schemars(with = "Option<FallbackAction>")]
    pub action: Option<Sp<String>>,
    /// Give the graceful shutdown this long before the hard off.
    #[schemars(required, schema_with = "schema::duration")]
    pub after: Option<Sp<String>>,
}

/// Schema-only: the actions a fallback may take.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum FallbackAction {
    Off,
}

/// Known keys per table, used by the reader to reject unknown keys. A unit test checks them
/// against the schema generated from the structs above.
pub mod keys {
    pub const RUNBOOK: &[&str] = &[
        "name",
        "description",
        "api",
        "limits",
        "defaults",
        "estimates",
        "step",
    ];
    pub const API: &[&str] = &["endpoint", "version"];
    pub const LIMITS: &[&str] = &[
        "concurrency",
        "requests_per_second",
        "deadline",
        "max_failures",
    ];
    pub const DEFAULTS: &[&str] = &[
        "task_timeout",
        "on_failure",
        "max_failures",
        "concurrency",
        "order",
        "allow_protected",
        "expected_duration",
    ];
    pub const STEP: &[&str] = &[
        "name",
        "action",
        "targets",
        "exclude",
        "after",
        "order",
        "concurrency",
        "waves",
        "gate",
        "fallback",
        "task_timeout",
        "on_failure",
        "max_failures",
        "allow_protected",
        "expected_duration",
    ];
    pub const SELECTOR: &[&str] = &["vdc", "vapp", "vm", "label", "state", "hypervisor", "href"];
    pub const AFTER_STEP: &[&str] = &["step", "gate"];
    pub const WAVES: &[&str] = &["size", "sizes", "pause", "gate"];
    pub const GATE: &[&str] = &["tcp", "http", "command", "approve", "timeout", "interval"];
    pub const HTTP_GATE: &[&str] = &["url", "status"];
    pub const FALLBACK: &[&str] = &["action", "after"];
}

/// Hypervisor types powerbook knows (as the API spells them). Unknown ones are rejected with
/// a suggestion; extend this list when a cloud reports a new one.
pub const HYPERVISORS: &[&str] = &[
    "VBOX",
    "KVM",
    "XEN_3",
    "XENSERVER",
    "VMX_04",
    "HYPERV_301",
    "OVM",
    "TEST_HYPERVISOR",
    "AZURE",
    "AMAZON",
    "GOOGLE",
    "OPENSTACK",
    "VCD",
    "DIGITALOCEAN",
    "ORACLE",
];

/// Schema fragments for leaves whose TOML form differs from their Rust type.
mod schema {
    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    pub fn duration(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A positive duration such as \"30s\", \"5m\", \"1h 30m\".",
            "pattern": r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$"
        })
    }

    pub fn amount(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count (3) or a percentage (\"10%\", 1-100).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^(100|[1-9][0-9]?)%$" }
            ]
        })
    }

    pub fn amounts(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Wave sizes in turn, the last one repeating: counts (1) or percentages (\"25%\").",
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    { "type": "integer", "minimum": 1 },
                    { "type": "string", "pattern": "^(100|[1-9][0-9]?)%$" }
                ]
            }
        })
    }

    pub fn name_or_id(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A name glob (\"web-*\") or a numeric id.",
            "anyOf": [
                { "type": "string", "minLength": 1 },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }

    pub fn state(_: &mut SchemaGenerator) -> Schema {
        let known: Vec<&str> = crate::abiquo::model::VmState::KNOWN
            .iter()
            .map(|s| s.as_str())
            .collect();
        json_schema!({ "type": "string", "enum": known })
    }

    pub fn hypervisor(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": super::HYPERVISORS })
    }

    pub fn estimates(generator: &mut SchemaGenerator) -> Schema {
        let actions = crate::runbook::model::Action::json_schema(generator);
        json_schema!({
            "type": "object",
            "propertyNames": actions,
            "additionalProperties": duration(generator)
        })
    }
}
