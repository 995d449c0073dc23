//! A run's journal from the outside: creating it for a new run (its header), reopening it
//! for a resume (its marker), and the command that resumes it.

use crate::journal::writer::JournalWriter;
use crate::journal::{Header, JOURNAL_FORMAT, Record, Resumed, default_path, now_ms, now_rfc3339};
use crate::plan::Plan;
use crate::plan::estimate::Estimate;
use std::path::Path;

/// Where a new run's journal goes.
#[derive(Debug, Clone, Copy)]
pub enum JournalLocation<'a> {
    /// Exactly this file.
    File(&'a Path),
    /// A new file named after the runbook and the time, in this directory.
    Dir(&'a Path),
}

/// Creates the journal of a new run of `plan` (made from the runbook at `runbook_path`) and
/// writes its header (with the plan's estimate, when there is one).
pub fn create_for_run(
    location: JournalLocation<'_>,
    runbook_path: &Path,
    plan: &Plan,
    estimate: Option<Estimate>,
) -> Result<JournalWriter, String> {
    let absolute = std::path::absolute(runbook_path).unwrap_or_else(|_| runbook_path.to_owned());
    let record = Record::Header(Header {
        format: JOURNAL_FORMAT,
        powerbook: env!("CARGO_PKG_VERSION").to_owned(),
        runbook_path: absolute.display().to_string(),
        runbook_name: plan.runbook_name.clone(),
        source_hash: plan.source_hash.clone(),
        endpoint: plan.endpoint.clone(),
        started_at: now_rfc3339(),
        started_ms: now_ms(),
        estimate,
    });
    match location {
        JournalLocation::File(path) => JournalWriter::create(path, &record),
        JournalLocation::Dir(dir) => {
            // Two runs of one runbook in the same second: the loser takes the next name.
            let mut attempt = 0;
            loop {
                let path = default_path(dir, &plan.runbook_name);
                match JournalWriter::create(&path, &record) {
                    Ok(w) => break Ok(w),
                    Err(_) if attempt < 20 && path.exists() => attempt += 1,
                    Err(e) => break Err(e),
                }
            }
        }
    }
}

/// How a resume continues a run.
#[derive(Debug, Clone)]
pub struct ResumeMarker {
    /// Hash of the runbook now (differs from the header's only when forced).
    pub source_hash: String,
    pub retry_failed: bool,
    pub forced: bool,
}

/// Reopens a journal after its last valid record (`valid_len` bytes) and marks the resume.
pub fn reopen_for_resume(
    path: &Path,
    valid_len: u64,
    marker: ResumeMarker,
) -> Result<JournalWriter, String> {
    let record = Record::Resumed(Resumed {
        powerbook: env!("CARGO_PKG_VERSION").to_owned(),
        at: now_rfc3339(),
        at_ms: now_ms(),
        source_hash: marker.source_hash,
        retry_failed: marker.retry_failed,
        forced: marker.forced,
    });
    JournalWriter::append(path, valid_len, &record)
}

/// `powerbook resume PATH`, quoted for a POSIX shell where needed; a rehearsal's (its
/// simulator's world kept beside it) is resumed with `--simulate`.
pub fn resume_command(journal: &Path) -> String {
    let rehearsal = crate::sim::world_path(journal).exists();
    format!(
        "powerbook resume {}{}",
        shell_quote(&journal.display().to_string()),
        if rehearsal { " --simulate" } else { "" }
    )
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The line that ends the output of a run that stopped early.
pub fn resume_hint(journal: &Path) -> String {
    format!("Resume with: {}\n", resume_command(journal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_command_quotes_only_what_the_shell_would_split() {
        assert_eq!(
            resume_command(Path::new(".powerbook/runs/a-1.jsonl")),
            "powerbook resume .powerbook/runs/a-1.jsonl"
        );
        assert_eq!(
            resume_command(Path::new("/tmp/it's here.jsonl")),
            r"powerbook resume '/tmp/it'\''s here.jsonl'"
        );
    }

    #[test]
    fn a_rehearsals_resume_command_says_simulate() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("run.jsonl");
        std::fs::write(&journal, "").unwrap();
        assert!(!resume_command(&journal).ends_with("--simulate"));
        std::fs::write(crate::sim::world_path(&journal), "").unwrap();
        assert_eq!(
            resume_command(&journal),
            format!("powerbook resume {} --simulate", journal.display())
        );
    }
}
