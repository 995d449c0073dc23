//! The VMs as the plan's listing saw them, kept so the executor can act on a VM without
//! reading it again while that listing is fresh (`RunOptions::state_max_age`). Only what
//! acting needs is kept (see `ListedVm`), and each VM is handed out once, so memory
//! shrinks as the run goes. A run that starts on the first pages adds the VMs it takes as
//! they arrive, and the rest once the listing is whole.

use crate::abiquo::model::{ListedVm, VirtualMachine};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct Listed(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    /// When the listing was asked for: every VM in it is at least this old.
    at: Instant,
    /// VMs the listing held, kept or not: what listing the cloud again costs.
    total: AtomicUsize,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// By `edit` link.
    by_href: HashMap<Arc<str>, ListedVm>,
    /// Where each kept VM stood in the listing (from 0), kept for the whole run.
    positions: HashMap<Arc<str>, u32>,
}

impl Listed {
    /// The listed VMs for which `wanted(href)` holds, as seen at `at`.
    #[cfg(test)]
    pub fn of(vms: Vec<ListedVm>, at: Instant, wanted: impl Fn(&str) -> bool) -> Listed {
        let listed = Listed::growing(at);
        listed.extend(vms, wanted);
        listed
    }

    /// A listing asked for at `at` whose VMs are added as they arrive.
    pub fn growing(at: Instant) -> Listed {
        Listed(Some(Arc::new(Inner {
            at,
            total: AtomicUsize::new(0),
            tables: Mutex::new(Tables::default()),
        })))
    }

    /// Keeps `vm`, which stood at `position` in the listing.
    pub fn add(&self, position: usize, vm: ListedVm) {
        let (Some(inner), Some(href)) = (&self.0, vm.href.clone()) else {
            return;
        };
        let mut t = inner.lock();
        if let Ok(i) = u32::try_from(position) {
            t.positions.insert(Arc::clone(&href), i);
        }
        t.by_href.insert(href, vm);
    }

    /// The whole listing: keeps the VMs for which `wanted(href)` holds, except those
    /// already kept once (added as the listing arrived: they may have been handed out).
    pub fn extend(&self, vms: Vec<ListedVm>, wanted: impl Fn(&str) -> bool) {
        let Some(inner) = &self.0 else {
            return;
        };
        inner.total.store(vms.len(), Ordering::Relaxed);
        let mut t = inner.lock();
        let new = |vm: &ListedVm, t: &Tables| {
            vm.href
                .as_deref()
                .is_some_and(|h| wanted(h) && !t.positions.contains_key(h))
        };
        // Sized once: a region's tables doubling as they fill would hold half again as
        // much at the last step.
        let kept = vms.iter().filter(|vm| new(vm, &t)).count();
        t.positions.reserve(kept);
        t.by_href.reserve(kept);
        for (i, vm) in vms.into_iter().enumerate() {
            if !new(&vm, &t) {
                continue;
            }
            let Some(href) = vm.href.clone() else {
                continue;
            };
            if let Ok(i) = u32::try_from(i) {
                t.positions.insert(Arc::clone(&href), i);
            }
            t.by_href.insert(href, vm);
        }
    }

    /// Where the VM at `href` stood in the listing (from 0), for as long as the run goes.
    pub fn position(&self, href: &str) -> Option<usize> {
        let inner = self.0.as_ref()?;
        inner.lock().positions.get(href).map(|&i| i as usize)
    }

    /// The VM at `href` as listed, and when; once (a later step gets `None` and reads it).
    pub fn take(&self, href: &str) -> Option<(VirtualMachine, Instant)> {
        let inner = self.0.as_ref()?;
        let mut t = inner.lock();
        let vm = t.by_href.remove(href)?;
        // Give back the table as the run empties it.
        if t.by_href.capacity() > 1024 && t.by_href.len() * 4 < t.by_href.capacity() {
            t.by_href.shrink_to_fit();
        }
        drop(t);
        Some((vm.to_vm(), inner.at))
    }

    /// How many VMs the listing held (0: no listing).
    pub fn total(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |inner| inner.total.load(Ordering::Relaxed))
    }

    /// VMs not handed out yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |inner| inner.lock().by_href.len())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
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
