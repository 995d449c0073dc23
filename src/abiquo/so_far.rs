//! A listing read while its pages still arrive: the listing appends each page in order, a
//! reader waits for the element it needs next. `run` starts on the first VMs this way while
//! the last pages of a region are still on their way.

use std::sync::{Mutex, PoisonError};
use tokio::sync::Notify;

pub struct ListingSoFar<T> {
    state: Mutex<SoFar<T>>,
    grown: Notify,
}

struct SoFar<T> {
    items: Vec<T>,
    /// No more will come: readers past the end get `None`.
    ended: bool,
}

impl<T> Default for ListingSoFar<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(SoFar {
                items: Vec::new(),
                ended: false,
            }),
            grown: Notify::new(),
        }
    }
}

impl<T: Clone> ListingSoFar<T> {
    /// Appends a page (its elements in listing order).
    pub fn extend(&self, page: impl IntoIterator<Item = T>) {
        {
            let mut s = self.lock();
            if s.ended {
                return;
            }
            s.items.extend(page);
        }
        self.grown.notify_waiters();
    }

    /// Room for `additional` more, asked once the first page tells how many will come.
    pub fn reserve(&self, additional: usize) {
        self.lock().items.reserve(additional);
    }

    /// How many elements have arrived.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` once it arrived; `None` once the listing ended without it.
    pub async fn get(&self, i: usize) -> Option<T> {
        loop {
            // Registered before looking, so a page appended in between still wakes us.
            let grown = self.grown.notified();
            tokio::pin!(grown);
            grown.as_mut().enable();
            {
                let s = self.lock();
                if let Some(item) = s.items.get(i) {
                    return Some(item.clone());
                }
                if s.ended {
                    return None;
                }
            }
            grown.await;
        }
    }

    /// Ends the listing and hands over what arrived: readers get `None` from now on.
    pub fn end(&self) -> Vec<T> {
        let items = {
            let mut s = self.lock();
            s.ended = true;
            std::mem::take(&mut s.items)
        };
        self.grown.notify_waiters();
        items
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SoFar<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reader_gets_each_element_as_it_arrives_and_none_after_the_end() {
        let so_far = Arc::new(ListingSoFar::default());
        let reader = {
            let so_far = Arc::clone(&so_far);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut i = 0;
                while let Some(x) = so_far.get(i).await {
                    got.push(x);
                    i += 1;
                }
                got
            })
        };
        so_far.extend([1, 2]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        so_far.extend([3]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(so_far.end(), vec![1, 2, 3]);
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![1, 2, 3]);
        // Nothing is appended after the end.
        so_far.extend([4]);
        assert!(so_far.is_empty());
    }
}
