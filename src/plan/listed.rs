//! The VMs as the plan's listing saw them, kept so the executor can act on a VM without
//! reading it again while that listing is fresh (`RunOptions::state_max_age`). Only what
//! acting needs is kept (state, and the links a request and its reconciliation follow), in
//! a compact form (a region's worth of VMs is held at once), and each VM is handed out
//! once, so memory shrinks as the run goes.

use crate::abiquo::model::{Link, VirtualMachine, VmState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

/// Link relations acting on a VM uses: its identity, the power requests, the task list a
/// lost answer is reconciled through, and the hypervisor the rules depend on.
const KEPT_RELS: [&str; 5] = ["edit", "state", "reset", "tasks", "hypervisortype"];

/// The one link whose title is read (the hypervisor's name).
const TITLED_REL: &str = "hypervisortype";

#[derive(Debug, Clone, Default)]
pub struct Listed(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    /// When the listing was asked for: every VM in it is at least this old.
    at: Instant,
    /// VMs the listing held, kept or not: what listing the cloud again costs.
    total: usize,
    /// By `edit` link.
    by_href: Mutex<HashMap<Box<str>, Kept>>,
}

/// A listed VM, in a fraction of a [`VirtualMachine`]'s memory: most of a VM's links
/// extend its `edit` link (`…/virtualmachines/7/state`), so only what they add is kept,
/// all in one string.
#[derive(Debug)]
struct Kept {
    id: u64,
    name: Box<str>,
    state: VmState,
    protected: bool,
    deallocated: Option<bool>,
    /// The kept links' hrefs, one after the other: what each adds to the `edit` link, or
    /// the whole href where it does not extend it.
    hrefs: Box<str>,
    links: Box<[KeptLink]>,
    title: Option<Box<str>>,
}

#[derive(Debug)]
struct KeptLink {
    /// Index in [`KEPT_RELS`].
    rel: u8,
    /// Where its part of `hrefs` ends.
    end: u32,
    /// Its part is what it adds to the `edit` link.
    extends_edit: bool,
}

impl Kept {
    fn of(vm: &VirtualMachine, edit: &str) -> Option<Kept> {
        let mut hrefs = String::new();
        let mut links = Vec::new();
        let mut title = None;
        for link in &vm.links {
            let Some(rel) = KEPT_RELS.iter().position(|r| *r == link.rel) else {
                continue;
            };
            if link.rel == "edit" {
                continue;
            }
            let part = link.href.strip_prefix(edit);
            hrefs.push_str(part.unwrap_or(&link.href));
            links.push(KeptLink {
                rel: u8::try_from(rel).ok()?,
                end: u32::try_from(hrefs.len()).ok()?,
                extends_edit: part.is_some(),
            });
            if link.rel == TITLED_REL {
                title = link.title.as_deref().map(Box::from);
            }
        }
        Some(Kept {
            id: vm.id,
            name: vm.name.as_str().into(),
            state: vm.state.clone(),
            protected: vm.protected,
            deallocated: vm.deallocated,
            hrefs: hrefs.into(),
            links: links.into(),
            title,
        })
    }

    fn into_vm(self, edit: &str) -> VirtualMachine {
        let mut links = Vec::with_capacity(self.links.len() + 1);
        links.push(Link::new("edit", edit));
        let mut start = 0;
        for l in self.links.iter() {
            let end = l.end as usize;
            let part = self.hrefs.get(start..end).unwrap_or_default();
            start = end;
            let rel = KEPT_RELS
                .get(usize::from(l.rel))
                .copied()
                .unwrap_or_default();
            let href = if l.extends_edit {
                format!("{edit}{part}")
            } else {
                part.to_owned()
            };
            let mut link = Link::new(rel, href);
            if rel == TITLED_REL {
                link.title = self.title.as_deref().map(str::to_owned);
            }
            links.push(link);
        }
        VirtualMachine {
            id: self.id,
            uuid: None,
            name: self.name.into(),
            label: None,
            description: None,
            state: self.state,
            id_state: None,
            cpu: None,
            ram: None,
            protected: self.protected,
            protected_cause: None,
            deallocated: self.deallocated,
            links,
        }
    }
}

impl Listed {
    /// The listed documents of the VMs for which `wanted(href)` holds, as seen at `at`.
    pub fn of(vms: &[VirtualMachine], at: Instant, wanted: impl Fn(&str) -> bool) -> Listed {
        let by_href: HashMap<Box<str>, Kept> = vms
            .iter()
            .filter_map(|vm| {
                let href = vm.href()?;
                if !wanted(href) {
                    return None;
                }
                Some((href.into(), Kept::of(vm, href)?))
            })
            .collect();
        Listed(Some(Arc::new(Inner {
            at,
            total: vms.len(),
            by_href: Mutex::new(by_href),
        })))
    }

    /// The VM at `href` as listed, and when; once (a later step gets `None` and reads it).
    pub fn take(&self, href: &str) -> Option<(VirtualMachine, Instant)> {
        let inner = self.0.as_ref()?;
        let mut by_href = inner.by_href.lock().unwrap_or_else(PoisonError::into_inner);
        let (edit, kept) = by_href.remove_entry(href)?;
        // Give back the table as the run empties it.
        if by_href.capacity() > 1024 && by_href.len() * 4 < by_href.capacity() {
            by_href.shrink_to_fit();
        }
        drop(by_href);
        Some((kept.into_vm(&edit), inner.at))
    }

    /// How many VMs the listing held (0: no listing).
    pub fn total(&self) -> usize {
        self.0.as_ref().map_or(0, |inner| inner.total)
    }

    /// VMs not handed out yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |inner| {
            inner
                .by_href
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        })
    }
}

/// A listing is not part of what a plan says: two plans are equal whatever they hold.
impl PartialEq for Listed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::{Link, VmState};

    fn vm(id: u64, state: VmState) -> VirtualMachine {
        let href = format!("http://127.0.0.1/api/vm/{id}");
        VirtualMachine {
            id,
            uuid: Some("u".into()),
            name: format!("vm-{id}"),
            label: None,
            description: Some("a long description nobody acts on".into()),
            state,
            id_state: None,
            cpu: Some(2),
            ram: Some(1024),
            protected: false,
            protected_cause: None,
            deallocated: None,
            links: vec![
                Link::new("edit", href.clone()),
                Link::new("state", format!("{href}/state")),
                Link::new("tasks", format!("{href}/tasks")),
                Link::new("virtualmachinetemplate", format!("{href}/template")),
            ],
        }
    }

    #[test]
    fn a_listed_vm_is_handed_out_once_with_only_what_acting_needs() {
        let at = Instant::now();
        let vms = [vm(1, VmState::On), vm(2, VmState::Off)];
        let listed = Listed::of(&vms, at, |href| href.ends_with("/1"));
        assert_eq!(listed.len(), 1);
        let (got, seen) = listed.take("http://127.0.0.1/api/vm/1").unwrap();
        assert_eq!(seen, at);
        assert_eq!(got.state, VmState::On);
        assert!(got.link("state").is_some() && got.link("tasks").is_some());
        assert!(got.link("virtualmachinetemplate").is_none() && got.description.is_none());
        assert!(listed.take("http://127.0.0.1/api/vm/1").is_none());
        assert!(listed.take("http://127.0.0.1/api/vm/2").is_none());
        assert!(
            Listed::default()
                .take("http://127.0.0.1/api/vm/1")
                .is_none()
        );
    }

    #[test]
    fn a_listed_vm_comes_back_with_its_links_hrefs_and_hypervisor_title_intact() {
        let mut listed_vm = vm(7, VmState::Paused);
        listed_vm.protected = true;
        listed_vm.deallocated = Some(false);
        listed_vm
            .links
            .push(Link::new("reset", "http://127.0.0.1/api/vm/7/action/reset"));
        // Not under the edit link: kept whole.
        listed_vm.links.push(
            Link::new(
                "hypervisortype",
                "http://127.0.0.1/api/config/hypervisortypes/KVM",
            )
            .titled("KVM"),
        );
        let listed = Listed::of(std::slice::from_ref(&listed_vm), Instant::now(), |_| true);
        let (got, _) = listed.take("http://127.0.0.1/api/vm/7").unwrap();
        assert_eq!((got.id, got.name.as_str()), (7, "vm-7"));
        assert_eq!(got.state, VmState::Paused);
        assert!(got.protected);
        assert_eq!(got.deallocated, Some(false));
        assert_eq!(got.hypervisor(), Some("KVM"));
        let kept: Vec<(&str, &str)> = got
            .links
            .iter()
            .map(|l| (l.rel.as_str(), l.href.as_str()))
            .collect();
        let expected: Vec<(&str, &str)> = listed_vm
            .links
            .iter()
            .filter(|l| KEPT_RELS.contains(&l.rel.as_str()))
            .map(|l| (l.rel.as_str(), l.href.as_str()))
            .collect();
        assert_eq!(kept, expected);
    }
}
