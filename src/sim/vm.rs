//! One VM as the API shows it: the facts that never change, a snapshot of its state, and
//! the `virtualmachine`, `virtualmachinestate` and `/_sim/vms` answers built from it.

use crate::abiquo::media;
use crate::abiquo::model::{Link, VirtualMachine, VirtualMachineStateBody, VmState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A VM as `/_sim/vms` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimVm {
    pub id: u64,
    pub name: String,
    pub label: Option<String>,
    pub vdc: String,
    pub vapp: String,
    pub hypervisor: String,
    pub state: VmState,
    /// Azure VMs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deallocated: Option<bool>,
    pub protected: bool,
    /// The VM's `edit` URL.
    pub href: String,
}

/// What never changes about a VM: shared with answers built outside the world lock.
pub(crate) struct VmStatic {
    pub(super) id: u64,
    pub(super) uuid: String,
    pub(super) name: String,
    pub(super) label: Option<String>,
    pub(super) vdc_id: u64,
    pub(super) vdc_name: String,
    pub(super) vapp_id: u64,
    pub(super) vapp_name: String,
    pub(super) hypervisor: String,
    pub(super) protected: bool,
    pub(super) protected_cause: Option<String>,
    pub(super) cpu: u32,
    pub(super) ram: u64,
    /// Its NICs' addresses, `nic0` first.
    pub(super) ips: Vec<String>,
}

impl VmStatic {
    pub(super) fn href(&self, base: &str) -> String {
        format!(
            "{base}/cloud/virtualdatacenters/{}/virtualappliances/{}/virtualmachines/{}",
            self.vdc_id, self.vapp_id, self.id
        )
    }
}

/// A VM as of one instant, cheap to take under the lock (one `Arc` clone).
pub(crate) struct VmSnapshot {
    pub(super) info: Arc<VmStatic>,
    pub(super) state: VmState,
    pub(super) deallocated: Option<bool>,
}

/// Extra VM fields the real API sends that the shared model does not carry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VmDto {
    #[serde(flatten)]
    pub vm: VirtualMachine,
    #[serde(rename = "type")]
    pub vm_type: &'static str,
    pub id_type: u32,
    pub high_disponibility: bool,
    pub vdrp_enabled: bool,
    pub monitored: bool,
    pub cores_per_socket: u32,
}

/// The `user` link of answers that name a user.
pub(super) fn user_link(base: &str, user: usize, name: &str) -> Link {
    Link::new(
        "user",
        format!("{base}/admin/enterprises/1/users/{}", user + 1),
    )
    .typed(&media::unversioned(media::USER))
    .titled(name)
}

impl VmSnapshot {
    pub fn sim_vm(&self, base: &str) -> SimVm {
        let i = &self.info;
        SimVm {
            id: i.id,
            name: i.name.clone(),
            label: i.label.clone(),
            vdc: i.vdc_name.clone(),
            vapp: i.vapp_name.clone(),
            hypervisor: i.hypervisor.clone(),
            state: self.state.clone(),
            deallocated: self.deallocated,
            protected: i.protected,
            href: i.href(base),
        }
    }

    /// The `virtualmachine` answer.
    pub fn dto(&self, base: &str) -> VmDto {
        let i = &self.info;
        let href = i.href(base);
        let vdc_href = format!("{base}/cloud/virtualdatacenters/{}", i.vdc_id);
        let acc = media::unversioned(media::ACCEPTED_REQUEST);
        let mut links = vec![
            Link::new("edit", href.clone()).typed(&media::unversioned(media::VIRTUAL_MACHINE)),
            Link::new("enterprise", format!("{base}/admin/enterprises/1"))
                .typed(&media::unversioned("enterprise"))
                .titled("Abiquo"),
            user_link(base, 0, "admin"),
            Link::new(
                "virtualappliance",
                format!("{vdc_href}/virtualappliances/{}", i.vapp_id),
            )
            .typed(&media::unversioned("virtualappliance"))
            .titled(i.vapp_name.clone()),
            Link::new("virtualdatacenter", vdc_href.clone())
                .typed(&media::unversioned("virtualdatacenter"))
                .titled(i.vdc_name.clone()),
            Link::new("state", format!("{href}/state"))
                .typed(&media::unversioned(media::VIRTUAL_MACHINE_STATE))
                .titled(self.state.as_str()),
            Link::new("deploy", format!("{href}/action/deploy")).typed(&acc),
            Link::new("undeploy", format!("{href}/action/undeploy")).typed(&acc),
            Link::new("reset", format!("{href}/action/reset")).typed(&acc),
            Link::new("tasks", format!("{href}/tasks")).typed(&media::unversioned(media::TASKS)),
            Link::new(
                "hypervisortype",
                format!("{base}/config/hypervisortypes/{}", i.hypervisor),
            )
            .typed(&media::unversioned("hypervisortype"))
            .titled(i.hypervisor.clone()),
        ];
        // As the API links each NIC: `nicN` to its IP, titled with the address.
        for (n, ip) in i.ips.iter().enumerate() {
            links.push(
                Link::new(
                    &format!("nic{n}"),
                    format!(
                        "{vdc_href}/privatenetworks/1/ips/{}",
                        i.id.saturating_mul(16).saturating_add(n as u64)
                    ),
                )
                .typed(&media::unversioned("privateip"))
                .titled(ip.clone()),
            );
        }
        VmDto {
            vm: VirtualMachine {
                id: i.id,
                uuid: Some(i.uuid.clone()),
                name: i.name.clone(),
                label: i.label.clone(),
                description: None,
                state: self.state.clone(),
                id_state: Some(self.state.id()),
                cpu: Some(i.cpu),
                ram: Some(i.ram),
                protected: i.protected,
                protected_cause: i.protected_cause.clone(),
                deallocated: self.deallocated,
                links,
            },
            vm_type: "MANAGED",
            id_type: 1,
            high_disponibility: false,
            vdrp_enabled: false,
            monitored: false,
            cores_per_socket: 1,
        }
    }

    /// The `virtualmachinestate` answer.
    pub fn state_dto(&self, base: &str) -> VirtualMachineStateBody {
        let href = self.info.href(base);
        VirtualMachineStateBody {
            state: self.state.clone(),
            graceful_shutdown: None,
            links: vec![
                Link::new("parent", href.clone())
                    .typed(&media::unversioned(media::VIRTUAL_MACHINE)),
                Link::new("edit", format!("{href}/state"))
                    .typed(&media::unversioned(media::VIRTUAL_MACHINE_STATE))
                    .titled(self.state.as_str()),
            ],
        }
    }
}
