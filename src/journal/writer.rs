//! The journal writer: one blocking thread appends records as JSON lines and syncs them.
//! Records that arrive together share one `sync_data` (group commit); the executor waits
//! for the sync only where it matters (the intent before a mutation, the task link after).

use crate::exec::event::Event;
use crate::exec::sink::EventSink;
use crate::journal::{Record, now_ms};
use futures::future::BoxFuture;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

/// Records waiting for the writer; back-pressure beyond this.
const QUEUE: usize = 4096;
/// Most records written before one sync.
const BATCH: usize = 512;

type Ack = oneshot::Sender<Result<(), String>>;

/// Where the executor sends events to be journaled. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JournalSink {
    tx: mpsc::Sender<(Record, Option<Ack>)>,
}

impl JournalSink {
    /// Queues an event; it is written and synced shortly, without waiting for it.
    pub async fn record(&self, event: &Event) {
        let rec = Record::Event {
            at_ms: now_ms(),
            event: event.clone(),
        };
        let _ = self.tx.send((rec, None)).await;
    }

    /// Writes an event and returns once it is on disk (`sync_data` done).
    pub async fn record_durable(&self, event: &Event) -> Result<(), String> {
        let rec = Record::Event {
            at_ms: now_ms(),
            event: event.clone(),
        };
        let (ack, done) = oneshot::channel();
        self.tx
            .send((rec, Some(ack)))
            .await
            .map_err(|_| "the journal writer has stopped".to_owned())?;
        done.await
            .map_err(|_| "the journal writer has stopped".to_owned())?
    }
}

/// The journal as one of the executor's sinks: every event is journaled, the durable ones
/// synced before the executor goes on.
impl EventSink for JournalSink {
    fn record<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(JournalSink::record(self, event))
    }

    fn record_durable<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(JournalSink::record_durable(self, event))
    }
}

/// An open journal and its writer thread.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    sink: JournalSink,
    thread: tokio::task::JoinHandle<Result<(), String>>,
}

impl JournalWriter {
    /// Creates a new journal (never overwrites one) and writes `first` (the header), synced.
    pub fn create(path: &Path, first: &Record) -> Result<JournalWriter, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("cannot create the journal {}: {e}", path.display()))?;
        lock(path, &file)?;
        let writer = Self::start(path, file, first)?;
        // The new file's directory entry must survive a crash too (best effort: not every
        // platform can sync a directory).
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Ok(d) = File::open(dir.unwrap_or(Path::new("."))) {
            let _ = d.sync_all();
        }
        Ok(writer)
    }

    /// Reopens a journal to append to it, first cutting a torn last record (at `valid_len`).
    pub fn append(path: &Path, valid_len: u64, first: &Record) -> Result<JournalWriter, String> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open the journal {}: {e}", path.display()))?;
        lock(path, &file)?;
        file.set_len(valid_len)
            .and_then(|()| file.seek(SeekFrom::End(0)).map(|_| ()))
            .map_err(|e| format!("cannot prepare the journal {}: {e}", path.display()))?;
        Self::start(path, file, first)
    }

    fn start(path: &Path, mut file: File, first: &Record) -> Result<JournalWriter, String> {
        let context =
            |e: std::io::Error| format!("cannot write the journal {}: {e}", path.display());
        let mut line = encode(first)?;
        line.push(b'\n');
        file.write_all(&line).map_err(context)?;
        file.sync_all().map_err(context)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let shown = path.display().to_string();
        let thread = tokio::task::spawn_blocking(move || write_loop(file, rx, &shown));
        Ok(JournalWriter {
            path: path.to_owned(),
            sink: JournalSink { tx },
            thread,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sink(&self) -> JournalSink {
        self.sink.clone()
    }

    /// Waits for every queued record to be written (all sinks must be dropped first).
    pub async fn close(self) -> Result<(), String> {
        drop(self.sink);
        match self.thread.await {
            Ok(r) => r,
            Err(e) => Err(format!("the journal writer stopped: {e}")),
        }
    }
}

/// One writer per journal: a resume while the run is still going must not interleave or cut
/// its records. The lock goes with the process, even on SIGKILL.
fn lock(path: &Path, file: &File) -> Result<(), String> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "the journal {} is being written by another powerbook process (is the run still \
             going?)",
            path.display()
        )),
        // A file system without locks: go on unprotected.
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!("cannot lock the journal {}: {e}", path.display());
            Ok(())
        }
    }
}

fn encode(rec: &Record) -> Result<Vec<u8>, String> {
    serde_json::to_vec(rec).map_err(|e| format!("cannot encode a journal record: {e}"))
}

/// Writes batches until every sink is gone. After the first failure every later record is
/// answered with that failure (the run decides what to do).
fn write_loop(
    mut file: File,
    mut rx: mpsc::Receiver<(Record, Option<Ack>)>,
    path: &str,
) -> Result<(), String> {
    let mut failed: Option<String> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        let mut acks = Vec::new();
        buf.clear();
        let mut next = Some(first);
        let mut n = 0;
        while let Some((rec, ack)) = next.take() {
            match encode(&rec) {
                Ok(line) => {
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
            acks.extend(ack);
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if failed.is_none()
            && let Err(e) = file
                .write_all(&buf)
                .and_then(|()| file.flush())
                .and_then(|()| file.sync_data())
        {
            failed = Some(format!("cannot write the journal {path}: {e}"));
        }
        for ack in acks {
            let _ = ack.send(failed.clone().map_or(Ok(()), Err));
        }
    }
    failed.map_or(Ok(()), Err)
}
