//! VDCs → inventory TOML, the body `powerbook snapshot` writes. Serialised with the toml
//! crate from structs that mirror the [`raw`](super::raw) ones, so that what is written is
//! what the reader reads back (a test checks it on the lab). A key whose value is the
//! reader's default is left out, except where saying it explicitly carries information:
//! every entity's `id` and `state`, and `deallocated` on every VM of an AZURE VDC.

use crate::sim::config::{SimVapp, SimVdc, SimVmSpec};
use serde::Serialize;

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(rename = "vdc", skip_serializing_if = "Vec::is_empty")]
    vdcs: Vec<Vdc<'a>>,
}

#[derive(Serialize)]
struct Vdc<'a> {
    name: &'a str,
    id: u64,
    hypervisor: &'a str,
    #[serde(rename = "vapp", skip_serializing_if = "Vec::is_empty")]
    vapps: Vec<Vapp<'a>>,
}

#[derive(Serialize)]
struct Vapp<'a> {
    name: &'a str,
    id: u64,
    #[serde(rename = "vm", skip_serializing_if = "Vec::is_empty")]
    vms: Vec<Vm<'a>>,
}

#[derive(Serialize)]
struct Vm<'a> {
    name: &'a str,
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    state: &'a str,
    /// Only when false (the default is true).
    #[serde(skip_serializing_if = "Option::is_none")]
    guest_tools: Option<bool>,
    /// Only when true.
    #[serde(skip_serializing_if = "Option::is_none")]
    protected: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protected_cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_rate: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fail_actions: Vec<&'static str>,
    /// Only when true.
    #[serde(skip_serializing_if = "Option::is_none")]
    forbidden: Option<bool>,
    /// Every VM of an AZURE VDC, none elsewhere (the reader refuses it there).
    #[serde(skip_serializing_if = "Option::is_none")]
    deallocated: Option<bool>,
    /// Only when the inventory names them (absent: derived from the id).
    #[serde(skip_serializing_if = "Option::is_none")]
    ips: Option<&'a [String]>,
}

impl<'a> Vm<'a> {
    fn of(vm: &'a SimVmSpec, azure: bool) -> Self {
        Vm {
            name: &vm.name,
            id: vm.id,
            label: vm.label.as_deref(),
            state: vm.state.as_str(),
            guest_tools: (!vm.guest_tools).then_some(false),
            protected: vm.protected.then_some(true),
            protected_cause: vm.protected_cause.as_deref(),
            fail_rate: (vm.fail_rate > 0.0).then_some(vm.fail_rate),
            fail_actions: vm.fail_actions.iter().map(|a| a.as_str()).collect(),
            forbidden: vm.forbidden.then_some(true),
            deallocated: azure.then_some(vm.deallocated),
            ips: vm.ips.as_deref(),
        }
    }
}

impl<'a> Vapp<'a> {
    fn of(vapp: &'a SimVapp, azure: bool) -> Self {
        Vapp {
            name: &vapp.name,
            id: vapp.id,
            vms: vapp.vms.iter().map(|vm| Vm::of(vm, azure)).collect(),
        }
    }
}

/// The `[[vdc]]` tables of an inventory holding `vdcs`, in the order given, each entity with
/// its id. Settings are not written: the reader's defaults apply to what it reads back.
pub fn vdcs_toml(vdcs: &[SimVdc]) -> Result<String, toml::ser::Error> {
    let doc = Doc {
        vdcs: vdcs
            .iter()
            .map(|vdc| {
                let azure = vdc.hypervisor == "AZURE";
                Vdc {
                    name: &vdc.name,
                    id: vdc.id,
                    hypervisor: &vdc.hypervisor,
                    vapps: vdc.vapps.iter().map(|a| Vapp::of(a, azure)).collect(),
                }
            })
            .collect(),
    };
    toml::to_string(&doc)
}
