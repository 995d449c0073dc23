//! Inventory files (the format of `runbooks/lab.toml`, documented in `runbooks/README.md`)
//! and generated inventories.
//!
//! Text → [`read`] (TOML tree → [`raw`] structs: syntax, unknown keys, types) → [`Builder`]
//! (values, ids, names → [`SimConfig`]). Every problem in a file is reported at once, each
//! with its `file:line:col`.

mod raw;
mod read;
mod write;

pub use write::vdcs_toml;

/// JSON Schema (draft-07) of the inventory format, generated from the raw structs.
/// Committed as `runbooks/inventory.schema.json`; a test fails when that file is stale.
pub fn schema_json() -> String {
    crate::runbook::schema::toml_schema_json::<raw::RawInventory>()
}

use super::config::{LockedCode, SimAction, SimConfig, SimVapp, SimVdc, SimVmSpec};
use super::{InventoryError, SimError};
use crate::abiquo::model::VmState;
use crate::runbook::diagnostic::did_you_mean;
use crate::runbook::lines::LineIndex;
use clap::ValueEnum;
use raw::{FAIL_ACTIONS, LOCKED_CODES, RawInventory, RawSettings, RawVm, Sp};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// The built-in lab, embedded so `powerbook sim` works from any directory.
const LAB_TOML: &str = include_str!("../../../runbooks/lab.toml");

/// One problem in an inventory text, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    at: usize,
    message: String,
}

impl SimConfig {
    /// The built-in lab's inventory text (`runbooks/lab.toml`).
    pub const LAB_TOML: &'static str = LAB_TOML;

    /// The built-in lab (`runbooks/lab.toml`, embedded).
    pub fn lab() -> SimConfig {
        match SimConfig::from_inventory_str("lab.toml", LAB_TOML) {
            Ok(config) => config,
            Err(e) => {
                // Unreachable in practice: a unit test parses the embedded lab.
                tracing::error!("the built-in lab inventory is invalid: {e}");
                SimConfig::empty("lab.toml")
            }
        }
    }

    /// Inventory from a TOML file (format of `runbooks/lab.toml`); every error names file,
    /// line and column.
    pub fn from_inventory_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SimConfig::from_inventory_str(&path.display().to_string(), &text)
    }

    /// Inventory from TOML text; `name` is used in error messages. Reports every problem
    /// found, in the order of the text.
    pub fn from_inventory_str(name: &str, toml_text: &str) -> Result<SimConfig, SimError> {
        let read = read::read(toml_text);
        let mut builder = Builder {
            index: LineIndex::new(toml_text),
            problems: read.problems,
        };
        let config = if read.syntax_failed {
            None
        } else {
            Some(builder.config(name, &read.raw))
        };
        if !builder.problems.is_empty() {
            return Err(located(name, &builder.index, builder.problems));
        }
        let config = config.unwrap_or_else(|| SimConfig::empty(name));
        config
            .validate()
            .map_err(|m| SimError::Config(format!("{name}: {m}")))?;
        Ok(config)
    }

    /// `n` VMs spread over VDCs (10 vApps each) and vApps (20 VMs each), with
    /// deterministic names (`vdc-01`, `vapp-001`, `vm-00001`), all ON, guest tools on.
    pub fn generated(n: usize) -> SimConfig {
        const VMS_PER_VAPP: usize = 20;
        const VAPPS_PER_VDC: usize = 10;
        let mut config = SimConfig::empty(format!("generated-{n}"));
        let vapps = n.div_ceil(VMS_PER_VAPP);
        let vdcs = vapps.div_ceil(VAPPS_PER_VDC);
        let width = |min: usize, count: usize| min.max(count.to_string().len());
        let (wd, wa, wv) = (width(2, vdcs), width(3, vapps), width(5, n));
        let mut vm_id = 0u64;
        let mut vapp_id = 0u64;
        for d in 0..vdcs {
            let mut vdc = SimVdc {
                id: d as u64 + 1,
                name: format!("vdc-{:0wd$}", d + 1),
                hypervisor: "KVM".to_owned(),
                vapps: Vec::new(),
            };
            for _ in 0..VAPPS_PER_VDC {
                if (vm_id as usize) >= n {
                    break;
                }
                vapp_id += 1;
                let mut vapp = SimVapp {
                    id: vapp_id,
                    name: format!("vapp-{vapp_id:0wa$}"),
                    vms: Vec::new(),
                };
                for _ in 0..VMS_PER_VAPP {
                    if (vm_id as usize) >= n {
                        break;
                    }
                    vm_id += 1;
                    let mut vm = SimVmSpec::new(vm_id, format!("vm-{vm_id:0wv$}"), VmState::On);
                    vm.label = Some(format!("generated vm {vm_id}"));
                    vapp.vms.push(vm);
                }
                vdc.vapps.push(vapp);
            }
            config.vdcs.push(vdc);
        }
        config
    }
}

/// The problems as `file:line:col` errors, in the order of the text.
fn located(name: &str, index: &LineIndex<'_>, mut problems: Vec<Problem>) -> SimError {
    problems.sort_by_key(|p| p.at);
    problems.dedup();
    let errors = problems
        .into_iter()
        .map(|p| {
            let (line, column) = index.line_col(p.at);
            InventoryError {
                line,
                column,
                message: p.message,
            }
        })
        .collect();
    SimError::Inventory {
        file: name.to_owned(),
        errors,
    }
}

/// Raw structs → a simulator configuration, collecting every problem with its offset.
struct Builder<'t> {
    index: LineIndex<'t>,
    problems: Vec<Problem>,
}

impl Builder<'_> {
    fn problem<T>(&mut self, at: &Sp<T>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.span().start,
            message: message.into(),
        });
    }

    fn config(&mut self, name: &str, raw: &RawInventory) -> SimConfig {
        let mut config = SimConfig::empty(name);
        if let Some(settings) = &raw.settings {
            self.settings(settings.get_ref(), &mut config);
        }
        let vdcs = || raw.vdcs.iter().map(Sp::get_ref);
        let mut vdc_ids = IdAllocator::new(self, "VDC", vdcs().filter_map(|d| d.id.as_ref()));
        let mut vapp_ids = IdAllocator::new(
            self,
            "vApp",
            vdcs().flat_map(|d| d.vapps.iter().filter_map(|a| a.get_ref().id.as_ref())),
        );
        let mut vm_ids = IdAllocator::new(
            self,
            "VM",
            vdcs().flat_map(|d| {
                d.vapps.iter().flat_map(|a| {
                    a.get_ref()
                        .vms
                        .iter()
                        .filter_map(|v| v.get_ref().id.as_ref())
                })
            }),
        );
        // First place each VM name is written.
        let mut names: HashMap<String, usize> = HashMap::new();
        for raw_vdc in vdcs() {
            let hypervisor = match &raw_vdc.hypervisor {
                Some(h) if h.get_ref().trim().is_empty() => {
                    self.problem(h, "hypervisor must not be empty (the default is \"KVM\")");
                    "KVM".to_owned()
                }
                Some(h) => h.get_ref().clone(),
                None => "KVM".to_owned(),
            };
            let mut vdc = SimVdc {
                id: vdc_ids.next(raw_vdc.id.as_ref()),
                name: self.name(raw_vdc.name.as_ref(), "VDC name"),
                hypervisor,
                vapps: Vec::new(),
            };
            let azure = vdc.hypervisor == "AZURE";
            for raw_vapp in raw_vdc.vapps.iter().map(Sp::get_ref) {
                let mut vapp = SimVapp {
                    id: vapp_ids.next(raw_vapp.id.as_ref()),
                    name: self.name(raw_vapp.name.as_ref(), "vApp name"),
                    vms: Vec::new(),
                };
                for raw_vm in raw_vapp.vms.iter().map(Sp::get_ref) {
                    let vm = self.vm(raw_vm, azure, vm_ids.next(raw_vm.id.as_ref()));
                    if let Some(written) = &raw_vm.name {
                        let at = written.span().start;
                        match names.get(&vm.name) {
                            Some(&first) => {
                                let line = self.line_of(first);
                                self.problem(
                                    written,
                                    format!("duplicate VM name `{}` (also {line})", vm.name),
                                );
                            }
                            None => {
                                names.insert(vm.name.clone(), at);
                            }
                        }
                    }
                    vapp.vms.push(vm);
                }
                vdc.vapps.push(vapp);
            }
            config.vdcs.push(vdc);
        }
        config
    }

    /// A name that must be there (its absence is reported by the reader) and not be empty.
    fn name(&mut self, value: Option<&Sp<String>>, what: &str) -> String {
        let Some(value) = value else {
            return String::new();
        };
        if value.get_ref().trim().is_empty() {
            self.problem(value, format!("{what} must not be empty"));
        }
        value.get_ref().clone()
    }

    /// `at line N`, for messages that point back at an earlier entry.
    fn line_of(&self, offset: usize) -> String {
        format!("at line {}", self.index.line_col(offset).0)
    }

    fn duration(&mut self, value: &Sp<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    value,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. \"1500ms\" or \"2s\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn settings(&mut self, s: &RawSettings, config: &mut SimConfig) {
        if let Some(d) = s.task_duration.as_ref().and_then(|d| self.duration(d)) {
            config.task_duration = d;
        }
        if let Some(j) = s.task_jitter.as_ref().and_then(|j| self.duration(j)) {
            config.task_jitter = j;
        }
        let actions: Vec<&str> = SimAction::ALL.iter().map(|a| a.as_str()).collect();
        for (action, value) in s.durations.iter().flat_map(|d| d.get_ref()) {
            let key = action.get_ref().as_str();
            if !actions.contains(&key) {
                let hint = match did_you_mean(key, actions.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("expected one of: {}", actions.join(", ")),
                };
                self.problem(
                    action,
                    format!("unknown action `{key}` in durations; {hint}"),
                );
                continue;
            }
            if let Some(d) = self.duration(value) {
                config.durations.insert(key.to_owned(), d);
            }
        }
        if let Some(seed) = &s.seed {
            config.seed = *seed.get_ref();
        }
        if let Some(speed) = &s.speed {
            if speed.get_ref().is_finite() && *speed.get_ref() > 0.0 {
                config.speed = *speed.get_ref();
            } else {
                self.problem(speed, "speed must be a number > 0");
            }
        }
        if let Some(versions) = &s.accepted_versions {
            if versions.get_ref().is_empty() {
                self.problem(versions, "accepted_versions must name at least one version");
            } else {
                config.accepted_versions = versions
                    .get_ref()
                    .iter()
                    .map(|v| v.get_ref().clone())
                    .collect();
            }
        }
        if let Some(code) = &s.locked_code {
            let text = code.get_ref().as_str();
            // The code as the API spells it, or all in lower case.
            let named = |c: &LockedCode| {
                let api = c.code().code();
                text == api || text == api.to_ascii_lowercase()
            };
            match LockedCode::value_variants().iter().copied().find(named) {
                Some(c) => config.locked_code = c,
                None => {
                    let hint = match did_you_mean(text, LOCKED_CODES.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "expected VM-11, VM-2 or ASYNC-TASK-2".to_owned(),
                    };
                    self.problem(code, format!("unknown locked_code `{text}`; {hint}"));
                }
            }
        }
        let flags = [
            (&s.resume_as_reset, &mut config.resume_as_reset),
            (&s.allow_paused_off, &mut config.allow_paused_off),
            (
                &s.azure_deallocate_stopped,
                &mut config.azure_deallocate_stopped,
            ),
            (&s.ack_sets_ack_error, &mut config.ack_sets_ack_error),
            (&s.emit_entity, &mut config.emit_entity),
        ];
        for (value, field) in flags {
            if let Some(v) = value {
                *field = *v.get_ref();
            }
        }
    }

    fn vm(&mut self, raw: &RawVm, azure: bool, id: u64) -> SimVmSpec {
        let name = self.name(raw.name.as_ref(), "VM name");
        let state = match &raw.state {
            None => VmState::On,
            Some(s) => VmState::parse_known(s.get_ref()).unwrap_or_else(|| {
                let known: Vec<&str> = VmState::KNOWN.iter().map(VmState::as_str).collect();
                let hint = match did_you_mean(s.get_ref(), known.iter().copied()) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("expected one of {}", known.join(", ")),
                };
                self.problem(s, format!("unknown VM state `{}`; {hint}", s.get_ref()));
                VmState::On
            }),
        };
        let mut vm = SimVmSpec::new(id, name, state);
        vm.label = raw.label.as_ref().map(|l| l.get_ref().clone());
        vm.guest_tools = raw.guest_tools.as_ref().is_none_or(|g| *g.get_ref());
        vm.protected = raw.protected.as_ref().is_some_and(|p| *p.get_ref());
        vm.protected_cause = raw.protected_cause.as_ref().map(|c| c.get_ref().clone());
        vm.forbidden = raw.forbidden.as_ref().is_some_and(|f| *f.get_ref());
        if let Some(rate) = &raw.fail_rate {
            if (0.0..=1.0).contains(rate.get_ref()) {
                vm.fail_rate = *rate.get_ref();
            } else {
                self.problem(rate, "fail_rate must be within 0.0..=1.0");
            }
        }
        for action in raw.fail_actions.iter().flat_map(|a| a.get_ref()) {
            match SimAction::parse(action.get_ref()) {
                Some(parsed) => vm.fail_actions.push(parsed),
                None => {
                    let hint = match did_you_mean(action.get_ref(), FAIL_ACTIONS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("expected one of: {}", FAIL_ACTIONS.join(", ")),
                    };
                    self.problem(
                        action,
                        format!(
                            "unknown action `{}` in fail_actions; {hint}",
                            action.get_ref()
                        ),
                    );
                }
            }
        }
        if let Some(d) = &raw.deallocated {
            if azure {
                vm.deallocated = *d.get_ref();
            } else {
                self.problem(d, "`deallocated` only applies to VMs in an AZURE VDC");
            }
        }
        if let Some(ips) = &raw.ips {
            let mut kept = Vec::new();
            for ip in ips.get_ref() {
                let text = ip.get_ref().trim();
                if text.parse::<std::net::IpAddr>().is_ok() {
                    kept.push(text.to_owned());
                } else {
                    self.problem(
                        ip,
                        format!("`{text}` is not an IP address (e.g. \"10.0.1.5\" or \"fd00::5\")"),
                    );
                }
            }
            vm.ips = Some(kept);
        }
        vm
    }
}

/// Hands out ids: explicit ones are kept (and must be unique); the others continue from
/// the previous entry, skipping ids taken explicitly.
struct IdAllocator {
    taken: HashMap<u64, usize>,
    last: u64,
}

impl IdAllocator {
    fn new<'a>(
        builder: &mut Builder<'_>,
        kind: &str,
        explicit: impl Iterator<Item = &'a Sp<u64>>,
    ) -> Self {
        let mut taken = HashMap::new();
        for id in explicit {
            let n = *id.get_ref();
            if n == 0 {
                builder.problem(id, format!("{kind} id must be 1 or more"));
            } else if let Some(&first) = taken.get(&n) {
                let line = builder.line_of(first);
                builder.problem(id, format!("duplicate {kind} id {n} (also {line})"));
            } else {
                taken.insert(n, id.span().start);
            }
        }
        Self { taken, last: 0 }
    }

    fn next(&mut self, explicit: Option<&Sp<u64>>) -> u64 {
        let id = match explicit {
            Some(id) => *id.get_ref(),
            None => {
                let mut id = self.last + 1;
                while self.taken.contains_key(&id) {
                    id += 1;
                }
                id
            }
        };
        self.last = id;
        id
    }
}

#[cfg(test)]
mod tests;
