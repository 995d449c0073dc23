//! Priors for adaptive polling: the task durations of earlier runs' journals.

use crate::exec::durations::TaskDurations;
use crate::journal::Record;
use std::path::Path;

/// Priors from the newest journals in `dir` of runs against `endpoint` (read with the
/// journal's own reader, so torn or foreign files are passed over). A missing or
/// unreadable directory just means starting cold. Reads off the runtime.
pub async fn from_journals(dir: &Path, endpoint: &str) -> TaskDurations {
    let durations = TaskDurations::new();
    let (dir, endpoint, learner) = (dir.to_owned(), endpoint.to_owned(), durations.clone());
    let read = tokio::task::spawn_blocking(move || {
        crate::journal::history::past_journals(&dir, &endpoint, None)
            .iter()
            .take(JOURNALS)
            .map(|journal| {
                let events = journal.records.iter().filter_map(|r| match r {
                    Record::Event { event, .. } => Some(event),
                    _ => None,
                });
                learner.learn_from_events(events, &endpoint)
            })
            .sum::<usize>()
    });
    match read.await {
        Ok(n) if n > 0 => tracing::debug!("learned {n} task durations from earlier runs"),
        _ => {}
    }
    durations
}

/// Earlier runs' journals read for priors.
const JOURNALS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::model::Action;
    use std::time::Duration;

    fn window(lo: u64, hi: u64) -> Option<crate::exec::durations::Window> {
        Some(crate::exec::durations::Window {
            lo: Duration::from_millis(lo),
            hi: Duration::from_millis(hi),
        })
    }

    #[tokio::test]
    async fn the_newest_journals_of_the_same_cloud_seed_the_durations() {
        let dir = tempfile::tempdir().unwrap();
        let line = |endpoint: &str, step_action: &str, ms: u64| {
            format!(
                "{{\"event\":\"run_started\",\"started_at\":\"\",\"plan\":{{\"format\":1,\
                 \"runbook_name\":\"r\",\"source_hash\":\"\",\"endpoint\":\"{endpoint}\",\
                 \"created_at\":\"\",\"concurrency\":1,\"steps\":[{{\"index\":0,\"name\":\"s\",\
                 \"action\":\"{step_action}\",\"order\":\"parallel\",\"after\":[],\"concurrency\":1,\
                 \"waves\":[],\"wave_pause_ms\":0,\"fallback_after_ms\":null,\"targets\":[]}}]}}}}\n\
                 {{\"event\":\"task_finished\",\"step\":0,\"target\":0,\"vm\":\"v\",\"task_href\":\"h\",\
                 \"state\":\"FINISHED_SUCCESSFULLY\",\"polls\":2,\"elapsed_ms\":{ms}}}\n"
            )
        };
        // As the journal writes them: each event wrapped in a record, after a header.
        let records: String = line("http://x/api", "off", 7000)
            .lines()
            .map(|l| format!("{{\"record\":\"event\",\"at_ms\":1,\"event\":{l}}}\n"))
            .collect();
        let header = |endpoint: &str| {
            let h = Record::Header(crate::journal::Header {
                format: crate::journal::JOURNAL_FORMAT,
                powerbook: "test".into(),
                runbook_path: "/r.toml".into(),
                runbook_name: "r".into(),
                source_hash: String::new(),
                endpoint: endpoint.into(),
                started_at: String::new(),
                started_ms: 0,
            });
            serde_json::to_string(&h).unwrap()
        };
        let journal = format!("{}\n{records}", header("http://x/api"));
        std::fs::write(dir.path().join("a-1.jsonl"), journal).unwrap();
        let records: String = line("http://y/api", "on", 9000)
            .lines()
            .map(|l| format!("{{\"record\":\"event\",\"at_ms\":1,\"event\":{l}}}\n"))
            .collect();
        let other_cloud = format!("{}\n{records}", header("http://y/api"));
        std::fs::write(dir.path().join("a-2.jsonl"), other_cloud).unwrap();
        std::fs::write(dir.path().join("notes.txt"), line("http://x/api", "on", 1)).unwrap();
        let d = from_journals(dir.path(), "http://x/api").await;
        assert_eq!(d.window(Action::Off), window(6300, 7700));
        assert_eq!(d.window(Action::On), None);
        let none = from_journals(&dir.path().join("missing"), "x").await;
        assert_eq!(none.window(Action::Off), None);
    }
}
