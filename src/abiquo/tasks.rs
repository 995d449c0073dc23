//! Finding the task a power request of ours created, in a VM's `tasks` list. One rule for the
//! client's reconciliation of a lost answer and for resume's check of an unanswered intent.

use crate::abiquo::model::{PowerRequest, Task, VmState};

/// Tasks created up to this long before the request was sent still count as ours: the API's
/// clock may be behind ours. Generous on purpose, since the two mistakes are not alike:
/// missing our own task means acting twice, while adopting an older task of the same type
/// only means following a task that already finished.
pub const CLOCK_SKEW_SECS: i64 = 120;

/// The newest task in `tasks` (newest first, as the API lists them) that `request`, sent to
/// a VM that was `from` at `sent_at_secs` (epoch seconds), may have created: of a type the
/// request yields, created since the request (less [`CLOCK_SKEW_SECS`]), and not `known`
/// (by task id) as someone else's or one already followed.
pub fn find_ours<'a>(
    tasks: &'a [Task],
    request: PowerRequest,
    from: &VmState,
    sent_at_secs: i64,
    known: impl Fn(&str) -> bool,
) -> Option<&'a Task> {
    let types = request.task_types(from);
    let since = sent_at_secs.saturating_sub(CLOCK_SKEW_SECS);
    tasks.iter().find(|t| {
        types.contains(&t.task_type)
            && t.creation_timestamp.is_some_and(|c| c >= since)
            && !known(&t.task_id)
    })
}

/// Task id of a task URL (its last path segment).
pub fn task_id_of(href: &str) -> &str {
    href.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(href)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::{PowerState, TaskType};

    fn task(id: &str, task_type: &str, created: i64) -> Task {
        serde_json::from_value(serde_json::json!({
            "taskId": id, "type": task_type, "state": "STARTED", "creationTimestamp": created,
        }))
        .unwrap()
    }

    const SENT: i64 = 1_000_000;
    const OFF: PowerRequest = PowerRequest::HARD_OFF;

    #[test]
    fn a_task_of_the_right_type_inside_the_skew_window_is_ours() {
        let tasks = [task("t1", "POWER_OFF", SENT - CLOCK_SKEW_SECS)];
        let found = find_ours(&tasks, OFF, &VmState::On, SENT, |_| false);
        assert_eq!(found.map(|t| t.task_id.as_str()), Some("t1"));
        let later = [task("t2", "POWER_OFF", SENT + 3)];
        assert!(find_ours(&later, OFF, &VmState::On, SENT, |_| false).is_some());
    }

    #[test]
    fn a_task_older_than_the_window_is_not_ours() {
        let tasks = [task("t1", "POWER_OFF", SENT - CLOCK_SKEW_SECS - 1)];
        assert!(find_ours(&tasks, OFF, &VmState::On, SENT, |_| false).is_none());
        let undated: Task = serde_json::from_value(serde_json::json!({
            "taskId": "t3", "type": "POWER_OFF", "state": "STARTED",
        }))
        .unwrap();
        assert!(find_ours(&[undated], OFF, &VmState::On, SENT, |_| false).is_none());
    }

    #[test]
    fn a_task_of_another_type_is_not_ours() {
        let tasks = [task("t1", "SHUTDOWN", SENT), task("t2", "POWER_ON", SENT)];
        assert!(find_ours(&tasks, OFF, &VmState::On, SENT, |_| false).is_none());
        let graceful = PowerRequest::State {
            target: PowerState::Off,
            graceful: true,
        };
        let found = find_ours(&tasks, graceful, &VmState::On, SENT, |_| false);
        assert_eq!(found.map(|t| t.task_type.clone()), Some(TaskType::Shutdown));
        // 2.0 records a resume as RESET.
        let resume = [task("t4", "RESET", SENT)];
        let on = PowerRequest::State {
            target: PowerState::On,
            graceful: false,
        };
        assert!(find_ours(&resume, on, &VmState::Paused, SENT, |_| false).is_some());
        assert!(find_ours(&resume, on, &VmState::Off, SENT, |_| false).is_none());
    }

    #[test]
    fn a_known_task_is_passed_over_for_the_next_one() {
        let tasks = [task("t1", "POWER_OFF", SENT), task("t0", "POWER_OFF", SENT)];
        let found = find_ours(&tasks, OFF, &VmState::On, SENT, |id| id == "t1");
        assert_eq!(found.map(|t| t.task_id.as_str()), Some("t0"));
        assert!(find_ours(&tasks, OFF, &VmState::On, SENT, |_| true).is_none());
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let tasks = [task("t1", "POWER_OFF", i64::MIN)];
        assert!(find_ours(&tasks, OFF, &VmState::On, i64::MIN, |_| false).is_some());
    }

    #[test]
    fn task_ids_are_the_last_path_segment() {
        assert_eq!(task_id_of("http://h/api/vms/1/tasks/abc/"), "abc");
        assert_eq!(task_id_of("abc"), "abc");
    }
}
