//! Earlier runs as evidence: how long tasks took on a cloud. Plan estimates and adaptive
//! polling both start from this instead of guessing.

use crate::journal::{Journal, load};
use std::path::{Path, PathBuf};

/// How many of the newest journals are read: enough for a stable mean, cheap at start-up.
pub const MAX_JOURNALS: usize = 20;

/// The newest journals in `dir` of runs against `endpoint` (and of the runbook named
/// `runbook_name`, when given), newest first. Unreadable files are passed over: history only
/// sharpens guesses, it never blocks a run.
pub fn past_journals(dir: &Path, endpoint: &str, runbook_name: Option<&str>) -> Vec<Journal> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("jsonl"))
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files
        .into_iter()
        .filter_map(|(_, p)| load(&p).ok())
        .filter(|j| j.header.endpoint == endpoint)
        .filter(|j| runbook_name.is_none_or(|n| j.header.runbook_name == n))
        .take(MAX_JOURNALS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Header, JOURNAL_FORMAT, Record};

    fn write_journal(dir: &Path, file: &str, endpoint: &str, runbook: &str) {
        let header = Record::Header(Header {
            format: JOURNAL_FORMAT,
            powerbook: "test".into(),
            runbook_path: "/x.toml".into(),
            runbook_name: runbook.into(),
            source_hash: "h".into(),
            endpoint: endpoint.into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            started_ms: 0,
        });
        let line = serde_json::to_string(&header).unwrap();
        std::fs::write(dir.join(file), format!("{line}\n")).unwrap();
    }

    #[test]
    fn only_journals_of_the_same_cloud_and_runbook_count() {
        let dir = tempfile::tempdir().unwrap();
        write_journal(dir.path(), "a.jsonl", "http://a/api", "web");
        write_journal(dir.path(), "b.jsonl", "http://b/api", "web");
        write_journal(dir.path(), "c.jsonl", "http://a/api", "db");
        std::fs::write(dir.path().join("junk.jsonl"), "not json\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();

        assert_eq!(past_journals(dir.path(), "http://a/api", None).len(), 2);
        let web = past_journals(dir.path(), "http://a/api", Some("web"));
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].header.runbook_name, "web");
        assert!(past_journals(&dir.path().join("missing"), "http://a/api", None).is_empty());
    }
}
