//! The VMs as the plan's listing saw them, kept so the executor can act on a VM without
//! reading it again while that listing is fresh (`RunOptions::state_max_age`). Only what
//! acting needs is kept (see `ListedVm`), and each VM is handed out once, so memory
//! shrinks as the run goes.

use crate::abiquo::model::{ListedVm, VirtualMachine};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct Listed(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    /// When the listing was asked for: every VM in it is at least this old.
    at: Instant,
    /// VMs the listing held, kept or not: what listing the cloud again costs.
    total: usize,
    /// By `edit` link.
    by_href: Mutex<HashMap<Arc<str>, ListedVm>>,
    /// Where each kept VM stood in the listing (from 0), kept for the whole run.
    positions: HashMap<Arc<str>, u32>,
}

impl Listed {
    /// The listed VMs for which `wanted(href)` holds, as seen at `at`.
    pub fn of(vms: Vec<ListedVm>, at: Instant, wanted: impl Fn(&str) -> bool) -> Listed {
        let total = vms.len();
        // Sized once: a region's tables doubling as they fill would hold half again as
        // much at the last step.
        let kept = vms
            .iter()
            .filter(|vm| vm.href.as_deref().is_some_and(&wanted))
            .count();
        let mut positions = HashMap::with_capacity(kept);
        let mut by_href = HashMap::with_capacity(kept);
        for (i, vm) in vms.into_iter().enumerate() {
            let Some(href) = vm.href.clone().filter(|h| wanted(h)) else {
                continue;
            };
            if let Ok(i) = u32::try_from(i) {
                positions.insert(Arc::clone(&href), i);
            }
            by_href.insert(href, vm);
        }
        Listed(Some(Arc::new(Inner {
            at,
            total,
            by_href: Mutex::new(by_href),
            positions,
        })))
    }

    /// Where the VM at `href` stood in the listing (from 0), for as long as the run goes.
    pub fn position(&self, href: &str) -> Option<usize> {
        let inner = self.0.as_ref()?;
        inner.positions.get(href).map(|&i| i as usize)
    }

    /// The VM at `href` as listed, and when; once (a later step gets `None` and reads it).
    pub fn take(&self, href: &str) -> Option<(VirtualMachine, Instant)> {
        let inner = self.0.as_ref()?;
        let mut by_href = inner.by_href.lock().unwrap_or_else(PoisonError::into_inner);
        let vm = by_href.remove(href)?;
        // Give back the table as the run empties it.
        if by_href.capacity() > 1024 && by_href.len() * 4 < by_href.capacity() {
            by_href.shrink_to_fit();
        }
        drop(by_href);
        Some((vm.to_vm(), inner.at))
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

    fn vm(id: u64, state: VmState) -> ListedVm {
        let href = format!("http://127.0.0.1/api/vm/{id}");
        ListedVm::from(&VirtualMachine {
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
        })
    }

    #[test]
    fn a_listed_vm_is_handed_out_once_with_only_what_acting_needs() {
        let at = Instant::now();
        let vms = vec![vm(1, VmState::On), vm(2, VmState::Off)];
        let listed = Listed::of(vms, at, |href| href.ends_with("/1"));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed.total(), 2);
        let (got, seen) = listed.take("http://127.0.0.1/api/vm/1").unwrap();
        assert_eq!(seen, at);
        assert_eq!(got.state, VmState::On);
        assert!(got.link("state").is_some() && got.link("tasks").is_some());
        assert!(got.link("virtualmachinetemplate").is_none() && got.description.is_none());
        assert!(listed.take("http://127.0.0.1/api/vm/1").is_none());
        assert!(listed.take("http://127.0.0.1/api/vm/2").is_none());
        // Its place in the listing outlives the hand-out; only kept VMs have one.
        assert_eq!(listed.position("http://127.0.0.1/api/vm/1"), Some(0));
        assert_eq!(listed.position("http://127.0.0.1/api/vm/2"), None);
        assert!(
            Listed::default()
                .take("http://127.0.0.1/api/vm/1")
                .is_none()
        );
    }
}
