//! Inventory files (the format of `runbooks/lab.toml`) and generated inventories.

use super::SimError;
use super::config::{LockedCode, SimAction, SimConfig, SimVapp, SimVdc, SimVmSpec};
use crate::abiquo::model::VmState;
use clap::ValueEnum;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// The built-in lab, embedded so `powerbook sim` works from any directory.
const LAB_TOML: &str = include_str!("../../runbooks/lab.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    settings: Option<RawSettings>,
    #[serde(default)]
    vdc: Vec<RawVdc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    task_duration: Option<Spanned<String>>,
    task_jitter: Option<Spanned<String>>,
    #[serde(default)]
    durations: BTreeMap<String, Spanned<String>>,
    seed: Option<u64>,
    speed: Option<Spanned<f64>>,
    accepted_versions: Option<Spanned<Vec<String>>>,
    locked_code: Option<Spanned<String>>,
    resume_as_reset: Option<bool>,
    allow_paused_off: Option<bool>,
    azure_deallocate_stopped: Option<bool>,
    ack_sets_ack_error: Option<bool>,
    emit_entity: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVdc {
    id: Option<Spanned<u64>>,
    name: Spanned<String>,
    #[serde(default = "default_hypervisor")]
    hypervisor: String,
    #[serde(default)]
    vapp: Vec<RawVapp>,
}

fn default_hypervisor() -> String {
    "KVM".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVapp {
    id: Option<Spanned<u64>>,
    name: Spanned<String>,
    #[serde(default)]
    vm: Vec<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    id: Option<Spanned<u64>>,
    name: Spanned<String>,
    label: Option<String>,
    state: Option<Spanned<String>>,
    guest_tools: Option<bool>,
    protected: Option<bool>,
    protected_cause: Option<String>,
    fail_rate: Option<Spanned<f64>>,
    #[serde(default)]
    fail_actions: Vec<Spanned<String>>,
    forbidden: Option<bool>,
    deallocated: Option<Spanned<bool>>,
}

/// Turns byte offsets into `file:line:column` errors.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> SimError {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SimError::Inventory {
            file: self.name.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> SimError {
        self.error(spanned.span().start, message)
    }

    fn duration(&self, value: &Spanned<String>) -> Result<Duration, SimError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.at(
                value,
                format!(
                    "`{}` is not a duration ({e}); write e.g. \"1500ms\" or \"2s\"",
                    value.get_ref()
                ),
            )
        })
    }
}

/// Hands out ids: explicit ones are kept (and must be unique); the others continue from
/// the previous entry, skipping ids taken explicitly.
struct IdAllocator {
    taken: HashSet<u64>,
    last: u64,
}

impl IdAllocator {
    fn new<'a>(
        src: &Source<'_>,
        kind: &str,
        explicit: impl Iterator<Item = &'a Spanned<u64>>,
    ) -> Result<Self, SimError> {
        let mut taken = HashSet::new();
        for id in explicit {
            if *id.get_ref() == 0 {
                return Err(src.at(id, format!("{kind} id must be 1 or more")));
            }
            if !taken.insert(*id.get_ref()) {
                return Err(src.at(id, format!("duplicate {kind} id {}", id.get_ref())));
            }
        }
        Ok(Self { taken, last: 0 })
    }

    fn next(&mut self, explicit: Option<&Spanned<u64>>) -> u64 {
        let id = match explicit {
            Some(id) => *id.get_ref(),
            None => {
                let mut id = self.last + 1;
                while self.taken.contains(&id) {
                    id += 1;
                }
                id
            }
        };
        self.last = id;
        id
    }
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

    /// Inventory from a TOML file (format of `runbooks/lab.toml`); errors name file and line.
    pub fn from_inventory_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SimConfig::from_inventory_str(&path.display().to_string(), &text)
    }

    /// Inventory from TOML text; `name` is used in error messages.
    pub fn from_inventory_str(name: &str, toml_text: &str) -> Result<SimConfig, SimError> {
        let src = Source {
            name,
            text: toml_text,
        };
        let raw: RawInventory = toml::from_str(toml_text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            src.error(offset, e.message().trim().to_owned())
        })?;
        let mut config = SimConfig::empty(name);
        if let Some(settings) = &raw.settings {
            apply_settings(&src, settings, &mut config)?;
        }

        let mut vdc_ids =
            IdAllocator::new(&src, "VDC", raw.vdc.iter().filter_map(|d| d.id.as_ref()))?;
        let mut vapp_ids = IdAllocator::new(
            &src,
            "vApp",
            raw.vdc
                .iter()
                .flat_map(|d| d.vapp.iter().filter_map(|a| a.id.as_ref())),
        )?;
        let mut vm_ids = IdAllocator::new(
            &src,
            "VM",
            raw.vdc.iter().flat_map(|d| {
                d.vapp
                    .iter()
                    .flat_map(|a| a.vm.iter().filter_map(|v| v.id.as_ref()))
            }),
        )?;
        let mut names = HashSet::new();
        for raw_vdc in &raw.vdc {
            let azure = raw_vdc.hypervisor == "AZURE";
            let mut vdc = SimVdc {
                id: vdc_ids.next(raw_vdc.id.as_ref()),
                name: non_empty(&src, &raw_vdc.name, "VDC name")?,
                hypervisor: raw_vdc.hypervisor.clone(),
                vapps: Vec::new(),
            };
            for raw_vapp in &raw_vdc.vapp {
                let mut vapp = SimVapp {
                    id: vapp_ids.next(raw_vapp.id.as_ref()),
                    name: non_empty(&src, &raw_vapp.name, "vApp name")?,
                    vms: Vec::new(),
                };
                for raw_vm in &raw_vapp.vm {
                    let vm = parse_vm(&src, raw_vm, azure, vm_ids.next(raw_vm.id.as_ref()))?;
                    if !names.insert(vm.name.clone()) {
                        return Err(
                            src.at(&raw_vm.name, format!("duplicate VM name `{}`", vm.name))
                        );
                    }
                    vapp.vms.push(vm);
                }
                vdc.vapps.push(vapp);
            }
            config.vdcs.push(vdc);
        }
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

fn non_empty(src: &Source<'_>, value: &Spanned<String>, what: &str) -> Result<String, SimError> {
    if value.get_ref().trim().is_empty() {
        return Err(src.at(value, format!("{what} must not be empty")));
    }
    Ok(value.get_ref().clone())
}

fn apply_settings(
    src: &Source<'_>,
    s: &RawSettings,
    config: &mut SimConfig,
) -> Result<(), SimError> {
    if let Some(d) = &s.task_duration {
        config.task_duration = src.duration(d)?;
    }
    if let Some(j) = &s.task_jitter {
        config.task_jitter = src.duration(j)?;
    }
    for (action, value) in &s.durations {
        if SimAction::ALL.iter().all(|a| a.as_str() != action) {
            return Err(src.at(
                value,
                format!("unknown action `{action}` in durations (expected on, off, shutdown, pause, resume or reset)"),
            ));
        }
        config
            .durations
            .insert(action.clone(), src.duration(value)?);
    }
    if let Some(seed) = s.seed {
        config.seed = seed;
    }
    if let Some(speed) = &s.speed {
        if !(speed.get_ref().is_finite() && *speed.get_ref() > 0.0) {
            return Err(src.at(speed, "speed must be a number > 0"));
        }
        config.speed = *speed.get_ref();
    }
    if let Some(versions) = &s.accepted_versions {
        if versions.get_ref().is_empty() {
            return Err(src.at(versions, "accepted_versions must name at least one version"));
        }
        config.accepted_versions = versions.get_ref().clone();
    }
    if let Some(code) = &s.locked_code {
        let text = code.get_ref().as_str();
        // The code as the API spells it, or all in lower case.
        let named = |c: &LockedCode| {
            let api = c.code().code();
            text == api || text == api.to_ascii_lowercase()
        };
        config.locked_code = match LockedCode::value_variants().iter().copied().find(named) {
            Some(c) => c,
            None => {
                return Err(src.at(
                    code,
                    format!("unknown locked_code `{text}` (expected VM-11, VM-2 or ASYNC-TASK-2)"),
                ));
            }
        };
    }
    let flags = [
        (s.resume_as_reset, &mut config.resume_as_reset),
        (s.allow_paused_off, &mut config.allow_paused_off),
        (
            s.azure_deallocate_stopped,
            &mut config.azure_deallocate_stopped,
        ),
        (s.ack_sets_ack_error, &mut config.ack_sets_ack_error),
        (s.emit_entity, &mut config.emit_entity),
    ];
    for (value, field) in flags {
        if let Some(v) = value {
            *field = v;
        }
    }
    Ok(())
}

fn parse_vm(src: &Source<'_>, raw: &RawVm, azure: bool, id: u64) -> Result<SimVmSpec, SimError> {
    let name = non_empty(src, &raw.name, "VM name")?;
    let state = match &raw.state {
        None => VmState::On,
        Some(s) => VmState::parse_known(s.get_ref()).ok_or_else(|| {
            src.at(
                s,
                format!(
                    "unknown VM state `{}` (expected one of {})",
                    s.get_ref(),
                    VmState::KNOWN
                        .iter()
                        .map(VmState::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
    };
    let mut vm = SimVmSpec::new(id, name, state);
    vm.label = raw.label.clone();
    vm.guest_tools = raw.guest_tools.unwrap_or(true);
    vm.protected = raw.protected.unwrap_or(false);
    vm.protected_cause = raw.protected_cause.clone();
    vm.forbidden = raw.forbidden.unwrap_or(false);
    if let Some(rate) = &raw.fail_rate {
        if !(0.0..=1.0).contains(rate.get_ref()) {
            return Err(src.at(rate, "fail_rate must be within 0.0..=1.0"));
        }
        vm.fail_rate = *rate.get_ref();
    }
    for action in &raw.fail_actions {
        let parsed = SimAction::parse(action.get_ref()).ok_or_else(|| {
            src.at(
                action,
                format!(
                    "unknown action `{}` in fail_actions (expected on, off, shutdown, pause, resume, reset or deallocate)",
                    action.get_ref()
                ),
            )
        })?;
        vm.fail_actions.push(parsed);
    }
    if let Some(d) = &raw.deallocated {
        if !azure {
            return Err(src.at(d, "`deallocated` only applies to VMs in an AZURE VDC"));
        }
        vm.deallocated = *d.get_ref();
    }
    Ok(vm)
}

#[cfg(test)]
mod tests;
