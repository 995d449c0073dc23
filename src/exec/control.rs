//! The run's stop and kill switches, shared by the executor and whoever drives it (the
//! signal handler, tests): stop launching, stop following, and why.

use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Why the run stopped launching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Interrupted,
    Aborted(String),
}

/// Stop/kill switches shared by the executor and whoever drives it (Ctrl-C handler, tests).
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    inner: Arc<ControlInner>,
}

#[derive(Debug, Default)]
struct ControlInner {
    /// Start nothing new.
    stop: CancellationToken,
    /// Stop following in-flight tasks too.
    kill: CancellationToken,
    /// Ctrl-C was pressed (possibly after an abort).
    interrupted: CancellationToken,
    /// The first abort reason.
    aborted: Mutex<Option<String>>,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ctrl-C: stop launching; in-flight tasks are drained (bounded by the run's
    /// `drain_timeout`). Wins over an earlier abort for the exit code.
    pub fn interrupt(&self) {
        self.inner.interrupted.cancel();
        self.inner.stop.cancel();
    }

    /// Threshold, deadline or fatal error: stop launching. The first reason is kept.
    /// Returns whether this call stopped the run.
    pub fn abort(&self, reason: String) -> bool {
        let mut slot = self
            .inner
            .aborted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() || self.inner.interrupted.is_cancelled() {
            return false;
        }
        *slot = Some(reason);
        self.inner.stop.cancel();
        true
    }

    /// Stop following in-flight tasks at once.
    pub fn kill(&self) {
        self.inner.stop.cancel();
        self.inner.kill.cancel();
    }

    /// Why the run stopped launching; an interruption wins over an abort.
    pub fn reason(&self) -> Option<StopReason> {
        if self.inner.interrupted.is_cancelled() {
            return Some(StopReason::Interrupted);
        }
        self.aborted().map(StopReason::Aborted)
    }

    /// The abort reason, if a threshold, the deadline or a fatal error stopped the run.
    pub fn aborted(&self) -> Option<String> {
        self.inner
            .aborted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    pub fn kill_token(&self) -> &CancellationToken {
        &self.inner.kill
    }

    /// Fires on Ctrl-C (or another interruption), even after an abort.
    pub(crate) fn interrupted_token(&self) -> &CancellationToken {
        &self.inner.interrupted
    }

    /// For "not started: …".
    pub(crate) fn short_reason(&self) -> String {
        match self.reason() {
            Some(StopReason::Interrupted) => "interrupted".into(),
            Some(StopReason::Aborted(_)) => "run aborted".into(),
            None => String::new(),
        }
    }
}
