//! Where the executor's events go. The executor only emits; a journal, reporters or a test
//! each implement [`EventSink`] and are handed to it as a list.

use crate::exec::event::Event;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// A consumer of executor events.
pub trait EventSink: Send + Sync {
    /// Takes an event, best effort: a sink that cannot keep it must not stop the run.
    fn record<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()>;

    /// Takes an event and returns once it is safely stored. The executor uses it for the
    /// intent before a mutation and the task link after the 202, and stops the run on an
    /// error: acting without a record would break resume. Sinks that store nothing are done
    /// once [`Self::record`] is.
    fn record_durable<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.record(event).await;
            Ok(())
        })
    }
}

/// A channel to a consumer task (the reporters). Waits for room, so a slow consumer slows
/// the run rather than losing events; a consumer that went away is ignored.
impl EventSink for mpsc::Sender<Event> {
    fn record<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.send(event.clone()).await;
        })
    }
}
