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

    fn start(path: &Path, file: File, first: &Record) -> Result<JournalWriter, String> {
        let mut lines = Lines::new(file, path.display().to_string())?;
        lines.put(first)?;
        lines.sync_all()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = tokio::task::spawn_blocking(move || write_loop(lines, rx));
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

/// The journal file behind a small buffer, with the length of its whole records: a record is
/// encoded straight into the file (a region's plan is tens of MB on one line, never held
/// twice), and one that cannot be encoded is cut off again.
struct Lines {
    out: std::io::BufWriter<File>,
    /// Bytes of whole records in the file, buffered ones included.
    len: u64,
    /// The file, as errors name it.
    shown: String,
}

impl Lines {
    fn new(mut file: File, shown: String) -> Result<Lines, String> {
        let len = file
            .stream_position()
            .map_err(|e| format!("cannot write the journal {shown}: {e}"))?;
        Ok(Lines {
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
            len,
            shown,
        })
    }

    fn failure(&self, e: &std::io::Error) -> String {
        format!("cannot write the journal {}: {e}", self.shown)
    }

    /// Appends `rec` as one line. A record that cannot be encoded leaves nothing of itself.
    fn put<T: serde::Serialize>(&mut self, rec: &T) -> Result<(), String> {
        let mut line = Counted {
            out: &mut self.out,
            n: 0,
        };
        let encoded = serde_json::to_writer(&mut line, rec)
            .and_then(|()| line.write_all(b"\n").map_err(serde_json::Error::io));
        let written = line.n;
        match encoded {
            Ok(()) => {
                self.len += written;
                Ok(())
            }
            Err(e) if e.is_io() => Err(self.failure(&std::io::Error::other(e))),
            Err(e) => {
                let cut = self.out.flush().and_then(|()| {
                    let file = self.out.get_mut();
                    file.set_len(self.len)?;
                    file.seek(SeekFrom::Start(self.len)).map(|_| ())
                });
                match cut {
                    Ok(()) => Err(format!("cannot encode a journal record: {e}")),
                    Err(io) => Err(self.failure(&io)),
                }
            }
        }
    }

    /// Writes out what is buffered and syncs its data.
    fn sync(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| self.failure(&e))
    }

    /// [`Self::sync`], with the file's metadata (a new file's first record).
    fn sync_all(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .map_err(|e| self.failure(&e))
    }
}

/// Counts the bytes that go through.
struct Counted<'a, W: Write> {
    out: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes batches until every sink is gone. After the first failure every later record is
/// answered with that failure (the run decides what to do).
fn write_loop(
    mut lines: Lines,
    mut rx: mpsc::Receiver<(Record, Option<Ack>)>,
) -> Result<(), String> {
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some((rec, ack)) = next.take() {
            if failed.is_none()
                && let Err(e) = lines.put(&rec)
            {
                failed = Some(e);
            }
            acks.extend(ack);
            n += 1;
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if failed.is_none()
            && let Err(e) = lines.sync()
        {
            failed = Some(e);
        }
        for ack in acks {
            let _ = ack.send(failed.clone().map_or(Ok(()), Err));
        }
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::Lines;
    use serde::ser::{Error, Serialize, SerializeMap, Serializer};

    /// Gets some way into its line, then fails.
    struct HalfWritten;

    impl Serialize for HalfWritten {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("record", &"x".repeat(100_000))?;
            Err(S::Error::custom("cannot"))
        }
    }

    #[test]
    fn a_record_that_cannot_be_encoded_leaves_nothing_of_itself_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "{\"a\":1}\n").unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).unwrap();
        let mut lines = Lines::new(file, "j.jsonl".into()).unwrap();
        lines.put(&serde_json::json!({"b": 2})).unwrap();
        let failed = lines.put(&HalfWritten).unwrap_err();
        assert!(failed.contains("cannot encode"));
        lines.put(&serde_json::json!({"c": 3})).unwrap();
        lines.sync().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
    }
}
