//! Run journal: an append-only JSON-lines file per run, so that a crash, a lost session or
//! Ctrl-C never loses track of what was sent. [`writer`] appends records as the executor emits
//! events (the intent is on disk before each mutation, the task link as soon as the 202
//! arrives); [`load`] reads a journal back (tolerating a torn last line) and folds it into a
//! [`RunView`]; [`resume`], [`restore`] and [`runs`] build on that.

pub mod history;
pub mod lifecycle;
pub mod restore;
pub mod resume;
pub mod runs;
pub mod writer;

use crate::exec::event::{Event, GateResult, Intent, Summary, VmOutcome, VmResult};
use crate::plan::estimate::Estimate;
use crate::plan::{Plan, VmRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the journal's record shapes. 2: intents carry the typed power request and
/// the plan is plan format 2 (typed dispositions, steps with what executing them needs).
/// A journal of another format is refused with the reason, never misread.
pub const JOURNAL_FORMAT: u32 = 2;

/// Where journals go unless `--journal` says otherwise.
pub const DEFAULT_RUNS_DIR: &str = ".powerbook/runs";

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what was run, where, when.
    Header(Header),
    /// `powerbook resume` continues the run from here.
    Resumed(Resumed),
    /// An executor event, with the wall-clock time it was recorded.
    Event { at_ms: u64, event: Event },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub powerbook: String,
    /// Absolute path of the runbook file.
    pub runbook_path: String,
    pub runbook_name: String,
    /// SHA-256 of the runbook source.
    pub source_hash: String,
    /// API root (never with credentials).
    pub endpoint: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub started_ms: u64,
    /// What the plan expected of the run when it started, so a report drawn from the
    /// journal alone can set the actual beside it. Absent in journals of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub powerbook: String,
    pub at: String,
    pub at_ms: u64,
    /// Hash of the runbook when resumed (differs from the header's only with `--force`).
    pub source_hash: String,
    pub retry_failed: bool,
    pub forced: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `RFC 3339` of now, UTC, seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `.powerbook/runs/<runbook-name>-<UTC timestamp>.jsonl` under `dir`, not yet taken.
pub fn default_path(dir: &Path, runbook_name: &str) -> PathBuf {
    let slug: String = runbook_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug = if slug.is_empty() { "run".into() } else { slug };
    // 2026-11-26T20:47:22Z → 20261126T204722Z
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut path = dir.join(format!("{slug}-{stamp}.jsonl"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{slug}-{stamp}-{n}.jsonl"));
        n += 1;
    }
    path
}

/// A journal read back from disk.
#[derive(Debug, Clone)]
pub struct Journal {
    pub path: PathBuf,
    pub header: Header,
    /// Every record after the header, in file order.
    pub records: Vec<Record>,
    /// The last line was cut short (a crash while writing); it was ignored.
    pub torn: bool,
    /// Length of the file up to the last whole record (where appending resumes).
    pub valid_len: u64,
}

/// The message for a torn last record.
pub const TORN_NOTE: &str = "journal ends with a torn record (crash while writing); ignoring it";

/// Reads a journal. A torn last line is tolerated (see [`Journal::torn`]); anything else
/// that is not a journal record is an error naming the line.
pub fn load(path: &Path) -> Result<Journal, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read journal {}: {e}", path.display()))?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Journal, String> {
    let shown = path.display();
    let mut records = Vec::new();
    let mut header = None;
    let mut torn = false;
    let mut valid_len = 0u64;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
            Some(end) => (&rest[..end], true),
            None => (rest, false),
        };
        let next = offset + line.len() + usize::from(complete);
        let is_last = next >= bytes.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            offset = next;
            if complete {
                valid_len = next as u64;
            }
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(rec) if complete => {
                match rec {
                    Record::Header(h) if header.is_none() && records.is_empty() => {
                        header = Some(h);
                    }
                    Record::Header(_) => {
                        return Err(format!("{shown}:{line_no}: a second journal header"));
                    }
                    other if header.is_none() => {
                        drop(other);
                        return Err(format!(
                            "{shown} is not a powerbook journal (no header on line 1)"
                        ));
                    }
                    other => records.push(other),
                }
                valid_len = next as u64;
            }
            // A last line without its newline, or one that does not parse, is what a crash in
            // the middle of a write leaves.
            _ if is_last => torn = true,
            Err(e) => {
                return Err(format!(
                    "{shown}:{line_no}: not a journal record ({e}); the journal is damaged"
                ));
            }
            Ok(_) => torn = true,
        }
        offset = next;
    }
    let header = header.ok_or_else(|| format!("{shown} is not a powerbook journal (empty)"))?;
    if header.format > JOURNAL_FORMAT {
        return Err(format!(
            "{shown} was written by a newer powerbook (journal format {}; this one reads {JOURNAL_FORMAT})",
            header.format
        ));
    }
    if header.format < JOURNAL_FORMAT {
        return Err(format!(
            "{shown} was written by an older powerbook (journal format {}; this one reads \
             {JOURNAL_FORMAT}): resume, restore or show it with powerbook {}, which wrote it",
            header.format, header.powerbook
        ));
    }
    Ok(Journal {
        path: path.to_owned(),
        header,
        records,
        torn,
        valid_len,
    })
}

/// What the journal says about one VM in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct VmTrack {
    pub vm: VmRef,
    /// The first intent recorded (the state before the run touched the VM in this step).
    pub first_intent: Option<(Intent, u64)>,
    /// The last intent recorded, with its time (ms since the epoch).
    pub intent: Option<(Intent, u64)>,
    /// The task accepted after the last intent, if any.
    pub task_href: Option<String>,
    /// The last result recorded.
    pub finished: Option<VmResult>,
}

/// A journal folded into the run's state: plan, per-VM progress, results.
#[derive(Debug, Clone)]
pub struct RunView {
    pub header: Header,
    pub plan: Option<Plan>,
    /// The run started before its listing ended and stopped before the plan was whole:
    /// `plan` holds only the VMs of its first step that were handed out.
    pub plan_partial: bool,
    /// Keyed by (step index, target index).
    pub vms: BTreeMap<(usize, usize), VmTrack>,
    /// Task hrefs recorded per VM href (every step), oldest first.
    pub tasks_by_vm: BTreeMap<String, Vec<String>>,
    /// The summary of the last segment, if that segment finished.
    pub summary: Option<Summary>,
    /// Number of `resume`s.
    pub resumes: usize,
    /// Time of the last record (ms since the epoch).
    pub last_ms: u64,
    /// Abort reason or interruption seen in the last segment.
    pub aborted: Option<String>,
    pub interrupted: bool,
    /// Every gate checked, over every segment.
    pub gates: Vec<GateResult>,
}

impl RunView {
    pub fn of(journal: &Journal) -> RunView {
        let mut v = RunView {
            header: journal.header.clone(),
            plan: None,
            plan_partial: false,
            vms: BTreeMap::new(),
            tasks_by_vm: BTreeMap::new(),
            summary: None,
            resumes: 0,
            last_ms: journal.header.started_ms,
            aborted: None,
            interrupted: false,
            gates: Vec::new(),
        };
        for rec in &journal.records {
            match rec {
                Record::Header(_) => {}
                Record::Resumed(r) => {
                    v.resumes += 1;
                    v.summary = None;
                    v.aborted = None;
                    v.interrupted = false;
                    v.last_ms = v.last_ms.max(r.at_ms);
                }
                Record::Event { at_ms, event } => {
                    v.last_ms = v.last_ms.max(*at_ms);
                    v.apply(*at_ms, event);
                }
            }
        }
        v
    }

    fn track(&mut self, step: usize, target: usize, vm: &VmRef) -> &mut VmTrack {
        self.vms.entry((step, target)).or_insert_with(|| VmTrack {
            vm: vm.clone(),
            first_intent: None,
            intent: None,
            task_href: None,
            finished: None,
        })
    }

    fn vm_of(&self, step: usize, target: usize) -> Option<VmRef> {
        self.plan
            .as_ref()
            .and_then(|p| p.steps.iter().find(|s| s.index == step))
            .and_then(|s| s.targets.get(target))
            .map(|t| t.vm.clone())
    }

    fn apply(&mut self, at_ms: u64, event: &Event) {
        match event {
            Event::RunStarted { plan, partial, .. } if self.plan.is_none() => {
                self.plan = Some((**plan).clone());
                self.plan_partial = *partial;
            }
            Event::TargetListed {
                step,
                target,
                planned,
                pos,
            } if self.plan_partial => {
                if let Some(plan) = self.plan.as_mut() {
                    crate::plan::head::add_handed(plan, *step, *target, planned, pos.is_some());
                }
            }
            Event::Planned { plan, estimate } => {
                self.plan = Some((**plan).clone());
                self.plan_partial = false;
                if self.header.estimate.is_none() {
                    self.header.estimate = estimate.as_deref().cloned();
                }
            }
            Event::VmActing {
                step,
                target,
                vm,
                intent,
            } => {
                let t = self.track(*step, *target, vm);
                t.first_intent
                    .get_or_insert_with(|| (intent.clone(), at_ms));
                t.intent = Some((intent.clone(), at_ms));
                t.task_href = None;
                t.finished = None;
            }
            Event::TaskAccepted {
                step,
                target,
                task_href,
                ..
            } => {
                if let Some(vm) = self.vm_of(*step, *target) {
                    let known = self.tasks_by_vm.entry(vm.href.to_string()).or_default();
                    if !known.contains(task_href) {
                        known.push(task_href.clone());
                    }
                    self.track(*step, *target, &vm).task_href = Some(task_href.clone());
                }
            }
            Event::VmFinished { result } => {
                self.track(result.step, result.target, &result.vm).finished =
                    Some((**result).clone());
            }
            Event::RunAborted { reason } => self.aborted = Some(reason.clone()),
            Event::RunInterrupted { .. } => self.interrupted = true,
            Event::RunFinished { summary } => self.summary = Some(summary.clone()),
            Event::GateChecked(gate) => self.gates.push(gate.clone()),
            _ => {}
        }
    }

    /// Results of every VM, in step then target order (the latest record of each).
    pub fn results(&self) -> Vec<VmResult> {
        let mut out: Vec<VmResult> = self
            .vms
            .values()
            .filter_map(|t| t.finished.clone())
            .collect();
        out.sort_by_key(|r| (r.step, r.target));
        out
    }

    /// Whether the run (or its last resume) got to its end.
    pub fn finished(&self) -> bool {
        self.summary.is_some()
    }

    /// VMs the journal knows were finished for good (ok or skipped).
    pub fn settled(&self, key: (usize, usize)) -> bool {
        self.vms.get(&key).is_some_and(|t| {
            matches!(
                t.finished.as_ref().map(|r| &r.outcome),
                Some(VmOutcome::Ok | VmOutcome::Skipped { .. })
            )
        })
    }
}

#[cfg(test)]
mod tests;
