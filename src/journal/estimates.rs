//! What earlier runs tell the plan estimate: the task durations recorded in their journals.

use crate::journal::RunView;
use crate::journal::history::past_journals;
use crate::plan::estimate::History;
use std::path::Path;

/// Durations recorded by earlier runs of this runbook against this cloud (their journals);
/// `None` when there are none.
pub fn plan_history(runs_dir: &Path, endpoint: &str, runbook_name: &str) -> Option<History> {
    let journals = past_journals(runs_dir, endpoint, Some(runbook_name));
    let results: Vec<_> = journals
        .iter()
        .flat_map(|j| RunView::of(j).results())
        .collect();
    let history = History::from_results(&results);
    (!history.is_empty()).then_some(history)
}
