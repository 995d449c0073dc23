//! A rehearsal's world kept on disk, so that a `--simulate` run can crash and be resumed
//! against the same simulated cloud.
//!
//! The world is deterministic given its inventory, seed and speed and the requests that
//! changed it (each VM's random draws depend on the seed and its own mutation count), so the
//! file holds a header with those settings and then one line per accepted change, written
//! before the answer leaves the simulator: a task the journal knows of is always in the
//! file. Restoring replays the changes at their recorded instants on the recorded clock, so
//! tasks that would have finished while nothing ran have finished.

use crate::abiquo::model::{PowerRequest, VmState};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first line's `format`.
pub const WORLD_FORMAT: &str = "powerbook-sim-world/1";

/// Where the world of the rehearsal journaled at `journal` is kept: beside it, its name
/// plus `.world` (not `*.jsonl`, so run listings never take it for a journal).
pub fn world_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".world");
    PathBuf::from(name)
}

/// What the simulator was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldHeader {
    pub format: String,
    /// The inventory's name in messages (its file, or `lab.toml`).
    pub inventory_name: String,
    /// The inventory's whole text: the rehearsal does not depend on the file staying put.
    pub inventory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// The loopback port it served on: the journal's task links point there.
    pub port: u16,
    /// Wall-clock instant of its clock's zero (ms since the Unix epoch).
    pub started_epoch_ms: u64,
}

/// One accepted change, at `at_ms` on the simulator's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorldEvent {
    Power {
        at_ms: u64,
        vm: u64,
        user: usize,
        request: PowerRequest,
    },
    Ack {
        at_ms: u64,
        task: String,
    },
    /// A state set behind the API's back (tests).
    SetState {
        at_ms: u64,
        vm: String,
        state: VmState,
    },
}

/// A saved world, as read back.
#[derive(Debug, Clone)]
pub struct SavedWorld {
    pub header: WorldHeader,
    pub events: Vec<WorldEvent>,
    /// Bytes of whole lines: a line cut by a crash is dropped (its answer was never sent).
    pub valid_len: u64,
}

impl SavedWorld {
    /// Reads a world file; a cut last line is ignored, anything else unreadable is an error.
    pub fn read(path: &Path) -> Result<SavedWorld, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut header = None;
        let mut events = Vec::new();
        let mut valid_len = 0u64;
        let mut offset = 0usize;
        for (number, line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            let start = offset;
            offset += line.len();
            let Some(body) = line.strip_suffix(b"\n") else {
                // Cut by a crash while it was being written.
                break;
            };
            let at = || format!("{}:{}", path.display(), number + 1);
            if number == 0 {
                let h: WorldHeader = serde_json::from_slice(body)
                    .map_err(|e| format!("{}: not a simulator world ({e})", at()))?;
                if h.format != WORLD_FORMAT {
                    return Err(format!(
                        "{}: format `{}` is not {WORLD_FORMAT}, which this powerbook reads",
                        at(),
                        h.format
                    ));
                }
                header = Some(h);
            } else {
                events.push(
                    serde_json::from_slice(body)
                        .map_err(|e| format!("{}: unreadable change ({e})", at()))?,
                );
            }
            valid_len = u64::try_from(start + line.len()).unwrap_or(u64::MAX);
        }
        let header = header.ok_or_else(|| format!("{}: empty simulator world", path.display()))?;
        Ok(SavedWorld {
            header,
            events,
            valid_len,
        })
    }
}

/// Appends a world's changes to its file, a line per change, each written whole before the
/// simulator answers.
#[derive(Debug)]
pub struct WorldRecorder {
    file: File,
    path: PathBuf,
}

impl WorldRecorder {
    /// A new world file starting with `header`; an existing file is never overwritten.
    pub fn create(path: &Path, header: &WorldHeader) -> Result<WorldRecorder, String> {
        let fail = |e: io::Error| format!("cannot create {}: {e}", path.display());
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(fail)?;
        let mut line = serde_json::to_vec(header).map_err(|e| e.to_string())?;
        line.push(b'\n');
        file.write_all(&line).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        Ok(WorldRecorder {
            file,
            path: path.to_owned(),
        })
    }

    /// Continues the file of `saved`, first cutting a line a crash left half written.
    pub fn append(path: &Path, saved: &SavedWorld) -> Result<WorldRecorder, String> {
        let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
        let file = OpenOptions::new().write(true).open(path).map_err(fail)?;
        file.set_len(saved.valid_len).map_err(fail)?;
        let file = OpenOptions::new().append(true).open(path).map_err(fail)?;
        Ok(WorldRecorder {
            file,
            path: path.to_owned(),
        })
    }

    pub(super) fn record(&mut self, event: &WorldEvent) {
        let written = serde_json::to_vec(event)
            .map_err(io::Error::other)
            .and_then(|mut line| {
                line.push(b'\n');
                // One write per line: a crash cuts at most the last one.
                self.file.write_all(&line)
            });
        if let Err(e) = written {
            tracing::error!(
                "cannot save the simulator's world to {}: {e}; resuming this rehearsal \
                 will not see this change",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::PowerState;

    fn header() -> WorldHeader {
        WorldHeader {
            format: WORLD_FORMAT.to_owned(),
            inventory_name: "lab.toml".to_owned(),
            inventory: "[[vdc]]\nname = \"x\"\n".to_owned(),
            seed: Some(3),
            speed: None,
            port: 4000,
            started_epoch_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_world_file_reads_back_what_was_recorded_and_drops_a_line_cut_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = world_path(&dir.path().join("run.jsonl"));
        assert!(path.ends_with("run.jsonl.world"));
        let power = WorldEvent::Power {
            at_ms: 12,
            vm: 7,
            user: 0,
            request: PowerRequest::State {
                target: PowerState::Off,
                graceful: true,
            },
        };
        let mut rec = WorldRecorder::create(&path, &header()).unwrap();
        rec.record(&power);
        drop(rec);
        let whole = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"kind\":\"ack\",\"at_")
            .unwrap();

        let saved = SavedWorld::read(&path).unwrap();
        assert_eq!(saved.header, header());
        assert_eq!(saved.events, vec![power.clone()]);
        assert_eq!(saved.valid_len, whole);

        let ack = WorldEvent::Ack {
            at_ms: 30,
            task: "t".into(),
        };
        let mut rec = WorldRecorder::append(&path, &saved).unwrap();
        rec.record(&ack);
        drop(rec);
        assert_eq!(SavedWorld::read(&path).unwrap().events, vec![power, ack]);
    }

    /// A world restored from its file answers as the one that wrote it would have: the same
    /// tasks at the same links, those that finished while it was down finished.
    #[tokio::test]
    async fn a_restored_world_serves_the_tasks_of_the_one_that_wrote_it_caught_up_in_time() {
        use crate::sim::SimHandle;
        use crate::sim::testing::{TASK, admin, client, fast_lab, put_off, send, start, vm_url};
        use std::net::{Ipv4Addr, SocketAddr};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl.world");
        let mut cfg = fast_lab();
        cfg.task_duration = Duration::from_millis(300);
        cfg.task_jitter = Duration::ZERO;
        let sim = start(cfg.clone()).await;
        let control = sim.control();
        let mut head = header();
        head.port = sim.addr().port();
        head.started_epoch_ms = control.started_epoch_ms();
        control.record_world(WorldRecorder::create(&path, &head).unwrap());
        let c = client(Duration::from_secs(10));
        let mut tasks = Vec::new();
        for name in ["web-01", "web-02"] {
            let (_, _, accepted) = send(put_off(&c, &vm_url(&sim, name))).await;
            let href = accepted["links"][0]["href"].as_str().unwrap().to_owned();
            tasks.push(href.strip_prefix(sim.base_url()).unwrap().to_owned());
        }
        let before = sim.stats().mutations;
        sim.shutdown().await;
        tokio::time::sleep(Duration::from_millis(400)).await;

        let saved = SavedWorld::read(&path).unwrap();
        assert_eq!(saved.events.len(), 2);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let back = SimHandle::restore(cfg, addr, &saved).await.unwrap();
        for task in &tasks {
            let url = format!("{}{task}", back.base_url());
            let (status, _, body) = send(admin(c.get(&url)).header("Accept", TASK)).await;
            assert_eq!(status, reqwest::StatusCode::OK, "{url}");
            assert_eq!(body["state"], "FINISHED_SUCCESSFULLY", "{body}");
        }
        let after = back.stats().mutations;
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
        for (vm, records) in &after {
            assert_eq!(records[0].task_id, before[vm][0].task_id, "{vm}");
        }
        assert_eq!(back.control().tasks_in_flight(), 0);
    }

    #[test]
    fn a_world_file_is_never_overwritten_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.world");
        std::fs::write(&path, "{\"format\":\"other/1\"}\n").unwrap();
        assert!(WorldRecorder::create(&path, &header()).is_err());
        let err = SavedWorld::read(&path).unwrap_err();
        assert!(err.contains("w.world:1"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert!(SavedWorld::read(&path).unwrap_err().contains("empty"));
    }
}
