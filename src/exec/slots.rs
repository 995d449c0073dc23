//! A step's concurrency slots, handed out in the order of its VMs.
//!
//! VMs are read and decided ahead of their slot, and reads finish in any order; without a
//! queue a VM listed later could take a slot first, and a sequential step would not run in
//! the order the runbook lists.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use tokio::sync::{Semaphore, SemaphorePermit, watch};

pub(crate) struct StepSlots {
    slots: Semaphore,
    /// The first position that has not had its turn: every one before it has.
    next: watch::Sender<usize>,
    /// Positions done out of order (skipped, failed before acting), waiting for those before.
    passed: Mutex<BTreeSet<usize>>,
}

impl StepSlots {
    pub(crate) fn new(concurrency: usize) -> Self {
        Self {
            slots: Semaphore::new(concurrency.max(1)),
            next: watch::Sender::new(0),
            passed: Mutex::new(BTreeSet::new()),
        }
    }

    /// A slot for the VM at `pos`, once every VM before it has taken one or needs none.
    /// `None` if the semaphore was closed.
    pub(crate) async fn acquire(&self, pos: usize) -> Option<SemaphorePermit<'_>> {
        let mut rx = self.next.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        rx.wait_for(|next| *next >= pos).await.ok()?;
        let permit = self.slots.acquire().await.ok();
        self.pass(pos);
        permit
    }

    /// The VM at `pos` takes no (more) slot: those after it need not wait for it.
    /// Idempotent.
    pub(crate) fn pass(&self, pos: usize) {
        let mut passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = *self.next.borrow();
        if pos < next {
            return;
        }
        passed.insert(pos);
        while passed.remove(&next) {
            next += 1;
        }
        self.next.send_if_modified(|n| {
            let moved = *n != next;
            *n = next;
            moved
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_go_in_list_order_whoever_asks_first() {
        let slots = Arc::new(StepSlots::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Position 2 asks first, then 1, then 0.
        for pos in [2usize, 1, 0] {
            let (slots, order) = (Arc::clone(&slots), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let permit = slots.acquire(pos).await;
                order.lock().unwrap().push(pos);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_vm_that_needs_no_slot_does_not_hold_up_the_next() {
        let slots = StepSlots::new(2);
        slots.pass(1);
        slots.pass(0);
        let permit = tokio::time::timeout(Duration::from_secs(1), slots.acquire(2)).await;
        assert!(matches!(permit, Ok(Some(_))));
        // Passing again, or passing one already behind, changes nothing.
        slots.pass(0);
        slots.pass(2);
        assert_eq!(*slots.next.borrow(), 3);
    }
}
