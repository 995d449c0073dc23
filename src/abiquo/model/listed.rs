//! A VM as a listing showed it, held in a fraction of a [`VirtualMachine`]'s memory: what
//! selecting, planning and acting on it use. A region lists a hundred thousand VMs, and a
//! real VM document carries dozens of links; names many VMs share (VDCs, vApps,
//! hypervisors) are held once, and the links acting follows are kept as what they add to
//! the VM's own link.

use super::{Link, VirtualMachine, VmState};
use std::collections::HashSet;
use std::sync::Arc;

/// Link relations acting on a VM follows besides its `edit` link: the power requests, the
/// task list a lost answer is reconciled through.
const ACTION_RELS: [&str; 3] = ["state", "reset", "tasks"];

/// A VM from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVm {
    pub id: u64,
    pub name: Arc<str>,
    pub label: Option<Arc<str>>,
    pub state: VmState,
    pub protected: bool,
    pub protected_cause: Option<Box<str>>,
    /// Azure only: the VM is deallocated.
    pub deallocated: Option<bool>,
    /// Its `edit` link (`None`: the API gave none, and nothing can be asked of it).
    pub href: Option<Arc<str>>,
    pub vdc: Place,
    pub vapp: Place,
    /// From the `hypervisortype` link (title, or last path segment).
    pub hypervisor: Option<Arc<str>>,
    /// Its NICs' IP addresses, `nic0` first.
    pub ips: Box<[Box<str>]>,
    /// The `hypervisortype` link's href, for the document acting is given.
    hypervisor_href: Option<Arc<str>>,
    /// The action links' hrefs, one after the other: what each adds to the `edit` link, or
    /// the whole href where it does not extend it.
    hrefs: Box<str>,
    links: Box<[ActionLink]>,
}

/// Where a VM lives (its VDC or vApp), from the link to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The last segment of the link, when it is a number.
    pub id: Option<u64>,
    /// The link's title.
    pub name: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ActionLink {
    /// Index in [`ACTION_RELS`].
    rel: u8,
    /// Where its part of `hrefs` ends.
    end: u32,
    /// Its part is what it adds to the `edit` link.
    extends_edit: bool,
}

/// Strings many listed VMs share, each held once.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(held) = self.0.get(name) {
            return Arc::clone(held);
        }
        let held: Arc<str> = name.into();
        self.0.insert(Arc::clone(&held));
        held
    }
}

impl From<&VirtualMachine> for ListedVm {
    fn from(vm: &VirtualMachine) -> Self {
        ListedVm::of(vm, &mut Names::default())
    }
}

impl ListedVm {
    /// What a listing keeps of `vm`, sharing the names `names` already holds.
    pub fn of(vm: &VirtualMachine, names: &mut Names) -> ListedVm {
        let place = |rel: &str, names: &mut Names| Place {
            id: vm.link_id(rel),
            name: vm.link_title(rel).map(|t| names.get(t)),
        };
        let edit = vm.href();
        let mut hrefs = String::new();
        let mut links = Vec::new();
        for link in &vm.links {
            let Some(rel) = ACTION_RELS.iter().position(|r| *r == link.rel) else {
                continue;
            };
            let part = edit.and_then(|e| link.href.strip_prefix(e));
            hrefs.push_str(part.unwrap_or(&link.href));
            let (Ok(rel), Ok(end)) = (u8::try_from(rel), u32::try_from(hrefs.len())) else {
                continue;
            };
            links.push(ActionLink {
                rel,
                end,
                extends_edit: part.is_some(),
            });
        }
        ListedVm {
            id: vm.id,
            name: vm.name.as_str().into(),
            label: vm.label.as_deref().map(Arc::from),
            state: vm.state.clone(),
            protected: vm.protected,
            protected_cause: vm.protected_cause.as_deref().map(Box::from),
            deallocated: vm.deallocated,
            href: edit.map(Arc::from),
            vdc: place("virtualdatacenter", names),
            vapp: place("virtualappliance", names),
            hypervisor: vm.hypervisor().map(|h| names.get(h)),
            ips: vm.nic_ips().into_iter().map(Box::from).collect(),
            hypervisor_href: vm.link("hypervisortype").map(|l| names.get(&l.href)),
            hrefs: hrefs.into(),
            links: links.into(),
        }
    }

    /// The VM document acting on it needs: its state, its own, action and hypervisor
    /// links.
    pub fn to_vm(&self) -> VirtualMachine {
        let edit = self.href.as_deref().unwrap_or_default();
        let mut links = Vec::with_capacity(self.links.len() + 2);
        if self.href.is_some() {
            links.push(Link::new("edit", edit));
        }
        let mut start = 0;
        for l in &self.links {
            let end = l.end as usize;
            let part = self.hrefs.get(start..end).unwrap_or_default();
            start = end;
            let rel = ACTION_RELS
                .get(usize::from(l.rel))
                .copied()
                .unwrap_or_default();
            let href = if l.extends_edit {
                format!("{edit}{part}")
            } else {
                part.to_owned()
            };
            links.push(Link::new(rel, href));
        }
        if let Some(href) = &self.hypervisor_href {
            let mut link = Link::new("hypervisortype", href.as_ref());
            link.title = self.hypervisor.as_deref().map(str::to_owned);
            links.push(link);
        }
        VirtualMachine {
            id: self.id,
            uuid: None,
            name: self.name.to_string(),
            label: self.label.as_deref().map(str::to_owned),
            description: None,
            state: self.state.clone(),
            id_state: None,
            cpu: None,
            ram: None,
            protected: self.protected,
            protected_cause: self.protected_cause.as_deref().map(str::to_owned),
            deallocated: self.deallocated,
            links,
        }
    }

    pub fn href(&self) -> Option<&str> {
        self.href.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_vm_keeps_its_nic_addresses_in_nic_order_whatever_the_link_order() {
        let mut doc = vm(3);
        let nic = |n: u32, ip: &str| {
            Link::new(&format!("nic{n}"), format!("http://127.0.0.1/api/ips/{n}"))
                .typed("application/vnd.abiquo.privateip+json")
                .titled(ip)
        };
        // As a captured 3.x answer has them: nic1 before nic0.
        doc.links.push(nic(1, "192.168.18.2"));
        doc.links.push(nic(0, "192.168.0.2"));
        doc.links
            .push(Link::new("nics", "http://127.0.0.1/api/nics"));
        let listed = ListedVm::of(&doc, &mut Names::default());
        let ips: Vec<&str> = listed.ips.iter().map(|ip| ip.as_ref()).collect();
        assert_eq!(ips, ["192.168.0.2", "192.168.18.2"]);
        assert!(ListedVm::of(&vm(4), &mut Names::default()).ips.is_empty());
    }

    fn vm(id: u64) -> VirtualMachine {
        let href = format!(
            "http://127.0.0.1/api/cloud/virtualdatacenters/1/virtualappliances/2/virtualmachines/{id}"
        );
        VirtualMachine {
            id,
            uuid: Some("u".into()),
            name: format!("vm-{id}"),
            label: Some("web".into()),
            description: Some("a long description nobody acts on".into()),
            state: VmState::Paused,
            id_state: None,
            cpu: Some(2),
            ram: Some(1024),
            protected: true,
            protected_cause: Some("SAN".into()),
            deallocated: Some(false),
            links: vec![
                Link::new("edit", href.clone()),
                Link::new(
                    "virtualdatacenter",
                    "http://127.0.0.1/api/cloud/virtualdatacenters/1",
                )
                .titled("prod"),
                Link::new(
                    "virtualappliance",
                    "http://127.0.0.1/api/cloud/virtualdatacenters/1/virtualappliances/2",
                )
                .titled("web"),
                Link::new("state", format!("{href}/state")),
                Link::new("virtualmachinetemplate", format!("{href}/template")),
                Link::new("reset", format!("{href}/action/reset")),
                // Not under the edit link: kept whole.
                Link::new("tasks", "http://127.0.0.1/api/tasks/of/7"),
                Link::new(
                    "hypervisortype",
                    "http://127.0.0.1/api/config/hypervisortypes/KVM",
                )
                .titled("KVM"),
            ],
        }
    }

    #[test]
    fn a_listed_vm_keeps_what_selecting_planning_and_acting_use() {
        let full = vm(7);
        let listed = ListedVm::from(&full);
        assert_eq!((listed.id, &*listed.name), (7, "vm-7"));
        assert_eq!(listed.label.as_deref(), Some("web"));
        assert_eq!(
            (listed.state.clone(), listed.protected),
            (VmState::Paused, true)
        );
        assert_eq!(listed.protected_cause.as_deref(), Some("SAN"));
        assert_eq!(listed.deallocated, Some(false));
        assert_eq!(
            listed.vdc,
            Place {
                id: Some(1),
                name: Some("prod".into())
            }
        );
        assert_eq!(
            listed.vapp,
            Place {
                id: Some(2),
                name: Some("web".into())
            }
        );
        assert_eq!(listed.hypervisor.as_deref(), Some("KVM"));
        assert_eq!(listed.href(), full.href());
    }

    #[test]
    fn the_document_acting_gets_has_the_listed_links_hrefs_intact() {
        let full = vm(7);
        let got = ListedVm::from(&full).to_vm();
        let rels = |vm: &VirtualMachine, keep: &[&str]| -> Vec<(String, String, Option<String>)> {
            let mut v: Vec<_> = vm
                .links
                .iter()
                .filter(|l| keep.contains(&l.rel.as_str()))
                .map(|l| (l.rel.clone(), l.href.clone(), l.title.clone()))
                .collect();
            v.sort();
            v
        };
        let acting = ["edit", "state", "reset", "tasks", "hypervisortype"];
        assert_eq!(rels(&got, &acting), rels(&full, &acting));
        assert_eq!(got.links.len(), acting.len());
        assert_eq!(got.hypervisor(), Some("KVM"));
        assert_eq!((got.state, got.protected), (VmState::Paused, true));
    }

    #[test]
    fn names_many_vms_share_are_held_once() {
        let mut names = Names::default();
        let a = ListedVm::of(&vm(1), &mut names);
        let b = ListedVm::of(&vm(2), &mut names);
        assert!(Arc::ptr_eq(
            a.vdc.name.as_ref().unwrap(),
            b.vdc.name.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            a.hypervisor.as_ref().unwrap(),
            b.hypervisor.as_ref().unwrap()
        ));
    }
}
