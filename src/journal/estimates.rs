//! What earlier runs tell the plan estimate: the task durations recorded in their journals.

use crate::journal::history::TaskDurations;
use std::path::Path;

/// Durations recorded by earlier runs of this runbook against this cloud (their journals).
pub fn plan_history(runs_dir: &Path, endpoint: &str, runbook_name: &str) -> Option<TaskDurations> {
    Some(TaskDurations::read(runs_dir, endpoint, runbook_name))
}
