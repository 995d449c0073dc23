//! `powerbook snapshot`: a live cloud's VDCs, vApps and VMs as a simulator inventory, so a
//! runbook can be rehearsed against a copy of the real cloud. Reading the cloud is GET
//! requests only ([`take`]); [`Snapshot::of`] turns what was listed into the inventory and
//! says what could not be copied as it was; [`Snapshot::render`] writes the file.
//!
//! Everything is ordered by id (VDCs, the vApps of each, the VMs of each), so the same
//! cloud always gives the same text, and a simulator serving a snapshot gives it back.

use super::config::{SimVapp, SimVdc, SimVmSpec};
use super::inventory::vdcs_toml;
use crate::abiquo::client::Client;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{ListedVm, VirtualAppliance, VirtualDatacenter, VmState};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};

/// vApp listings read at once (one per VDC).
const PARALLEL_VDCS: usize = 8;

/// What the listings of a cloud showed.
#[derive(Debug, Clone, Default)]
pub struct Listings {
    /// Each VDC with its vApps.
    pub vdcs: Vec<(VirtualDatacenter, Vec<VirtualAppliance>)>,
    pub vms: Vec<ListedVm>,
}

/// Lists the VDCs, the vApps of each and every VM (GET requests only).
pub async fn take(client: &Client) -> Result<Listings, ClientError> {
    let vdcs = client.list_vdcs().await?;
    let vdcs = futures::stream::iter(vdcs)
        .map(|vdc| async move {
            let vapps = client.list_vapps(&vdc).await?;
            Ok::<_, ClientError>((vdc, vapps))
        })
        .buffered(PARALLEL_VDCS)
        .try_collect()
        .await?;
    let vms = client.list_vms().await?;
    Ok(Listings { vdcs, vms })
}

/// An inventory of a cloud, and what could not be copied as the API showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// By id at every level.
    pub vdcs: Vec<SimVdc>,
    /// One sentence each, for stderr and for the file's header.
    pub notes: Vec<String>,
}

/// The header's explanation of what the file is and what it leaves out.
const ABOUT: &str = "\
# A simulator inventory (format: runbooks/README.md, schema: `powerbook schema --inventory`).
# Rehearse a runbook against this copy of the cloud:
#   powerbook run RUNBOOK --simulate --simulate-inventory FILE
# Read with GET requests only. Ids, names, labels, states, protection, hypervisors, NIC
# addresses (`ips`, from the VMs' nicN links) and Azure's `deallocated` are the API's.
# guest_tools is left out: the API does not say whether a VM has guest tools, so the
# simulator's default applies (installed: graceful shutdowns succeed). Set
# guest_tools = false on VMs without them to rehearse the fallback to a hard off.
# No [settings]: task durations and the API's uncertain behaviour are the simulator's
# defaults.
";

impl Snapshot {
    /// The inventory of what was listed. VMs are placed by their VDC and vApp links; a VM
    /// whose vApp was not listed, or that the format cannot hold, is left out with a note.
    pub fn of(listings: &Listings) -> Snapshot {
        let mut notes = Vec::new();
        let mut vdcs: BTreeMap<u64, SimVdc> = BTreeMap::new();
        // vApp id → its VDC's id.
        let mut vapp_vdc: HashMap<u64, u64> = HashMap::new();
        for (vdc, vapps) in &listings.vdcs {
            if vdc.id == 0 || vdcs.contains_key(&vdc.id) {
                notes.push(format!(
                    "VDC `{}` left out: its id {} is not a valid one or another VDC's",
                    vdc.name, vdc.id
                ));
                continue;
            }
            let mut sim_vdc = SimVdc {
                id: vdc.id,
                name: vdc.name.clone(),
                hypervisor: vdc
                    .hypervisor_type
                    .clone()
                    .filter(|h| !h.trim().is_empty())
                    .unwrap_or_default(),
                vapps: Vec::new(),
            };
            for vapp in vapps {
                if vapp.id == 0 || vapp_vdc.contains_key(&vapp.id) {
                    notes.push(format!(
                        "vApp `{}` of VDC `{}` left out: its id {} is not a valid one or \
                         another vApp's",
                        vapp.name, vdc.name, vapp.id
                    ));
                    continue;
                }
                vapp_vdc.insert(vapp.id, vdc.id);
                sim_vdc.vapps.push(SimVapp {
                    id: vapp.id,
                    name: vapp.name.clone(),
                    vms: Vec::new(),
                });
            }
            vdcs.insert(vdc.id, sim_vdc);
        }

        let mut vms: Vec<&ListedVm> = listings.vms.iter().collect();
        vms.sort_by_key(|vm| vm.id);
        // VM name → the id of the VM that holds it.
        let mut names: HashMap<&str, u64> = HashMap::new();
        // VDC id → the hypervisors its VMs named.
        let mut seen_hypervisors: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for vm in vms {
            let who = format!("VM `{}` (id {})", vm.name, vm.id);
            let placed = vm.vapp.id.and_then(|a| {
                let d = *vapp_vdc.get(&a)?;
                (vm.vdc.id.is_none_or(|v| v == d)).then_some((d, a))
            });
            let Some((vdc_id, vapp_id)) = placed else {
                notes.push(format!(
                    "{who} left out: its vApp was not in the vApp listings (it may have been \
                     created while they were read)"
                ));
                continue;
            };
            if vm.id == 0 || vm.name.trim().is_empty() {
                notes.push(format!("{who} left out: it has no id or no name"));
                continue;
            }
            if let Some(&holder) = names.get(&*vm.name) {
                notes.push(format!(
                    "{who} left out: VM id {holder} has the same name, and simulator VM names \
                     are unique"
                ));
                continue;
            }
            names.insert(&vm.name, vm.id);
            let Some(vdc) = vdcs.get_mut(&vdc_id) else {
                continue;
            };
            if let Some(h) = vm.hypervisor.as_deref() {
                seen_hypervisors.entry(vdc_id).or_default().push(h);
                // A VDC without hypervisorType takes its first VM's.
                if vdc.hypervisor.is_empty() {
                    h.clone_into(&mut vdc.hypervisor);
                }
            }
            let state = match &vm.state {
                VmState::Locked => {
                    notes.push(format!(
                        "{who} was LOCKED (a task was running on it): written LOCKED, which \
                         the simulator keeps, refusing power requests on it; edit its state \
                         to rehearse another"
                    ));
                    VmState::Locked
                }
                VmState::Other(s) => {
                    notes.push(format!(
                        "{who} was in state `{s}`, which the simulator does not know: \
                         written UNKNOWN"
                    ));
                    VmState::Unknown
                }
                known => known.clone(),
            };
            let mut spec = SimVmSpec::new(vm.id, vm.name.as_ref(), state);
            spec.label = vm.label.as_deref().map(str::to_owned);
            spec.protected = vm.protected;
            spec.protected_cause = vm.protected_cause.as_deref().map(str::to_owned);
            spec.ips = Some(vm.ips.iter().map(|ip| ip.to_string()).collect());
            if vm.deallocated == Some(true) {
                if vdc.hypervisor == "AZURE" {
                    spec.deallocated = true;
                } else {
                    notes.push(format!(
                        "{who} is deallocated but its VDC is not an AZURE one: written not \
                         deallocated"
                    ));
                }
            }
            if let Some(vapp) = vdc.vapps.iter_mut().find(|a| a.id == vapp_id) {
                vapp.vms.push(spec);
            }
        }

        for (id, vdc) in &mut vdcs {
            let seen = seen_hypervisors
                .get(id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if vdc.hypervisor.is_empty() {
                notes.push(format!(
                    "VDC `{}` (id {id}) has no hypervisorType and no VM that names one: \
                     written KVM",
                    vdc.name
                ));
                "KVM".clone_into(&mut vdc.hypervisor);
            }
            let mut others: Vec<&str> = seen
                .iter()
                .copied()
                .filter(|h| *h != vdc.hypervisor)
                .collect();
            others.sort_unstable();
            others.dedup();
            if !others.is_empty() {
                notes.push(format!(
                    "VDC `{}` (id {id}) is {} but some of its VMs name {}: the simulator \
                     gives every VM its VDC's hypervisor",
                    vdc.name,
                    vdc.hypervisor,
                    others.join(", ")
                ));
            }
            vdc.vapps.sort_by_key(|a| a.id);
        }
        Snapshot {
            vdcs: vdcs.into_values().collect(),
            notes,
        }
    }

    /// What it holds: `3 VDCs, 9 vApps, 30 VMs`.
    pub fn counts(&self) -> String {
        let vapps: usize = self.vdcs.iter().map(|d| d.vapps.len()).sum();
        let vms: usize = self
            .vdcs
            .iter()
            .flat_map(|d| &d.vapps)
            .map(|a| a.vms.len())
            .sum();
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        format!(
            "{}, {}, {}",
            n(self.vdcs.len(), "VDC", "VDCs"),
            n(vapps, "vApp", "vApps"),
            n(vms, "VM", "VMs")
        )
    }

    /// The inventory file: a header comment (where and when it was taken, what it leaves
    /// out, the notes), then the `[[vdc]]` tables. `source` is the endpoint without
    /// credentials or query ([`source_of`]), `taken` the UTC time.
    pub fn render(&self, source: &str, taken: &str) -> Result<String, toml::ser::Error> {
        let body = vdcs_toml(&self.vdcs)?;
        let mut out = format!("# powerbook snapshot: {}\n", self.counts());
        out.push_str(&format!("# source: {source}\n"));
        out.push_str(&format!("# taken: {taken}\n"));
        out.push_str(ABOUT);
        for note in &self.notes {
            out.push_str(&format!("# note: {}\n", one_line(note)));
        }
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }
}

/// A note never breaks out of its comment line, whatever a name holds.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The endpoint as the header names it: no user, password, query or fragment.
pub fn source_of(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string().trim_end_matches('/').to_owned()
        }
        // Not a URL: nothing in it can be told apart from a secret.
        Err(_) => "(an endpoint that is not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
