//! `powerbook snapshot`: read a cloud with GET requests only and write its VDCs, vApps and
//! VMs as a simulator inventory, on stdout or to `--output FILE`.

use crate::cli::SnapshotArgs;
use crate::commands::session::{cloud_config, connect, print_stdout, verbosity};
use crate::exit::Outcome;
use crate::sim::SimConfig;
use crate::sim::snapshot::{Snapshot, source_of, take};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

pub async fn snapshot(args: SnapshotArgs) -> Outcome {
    // Refused before anything is read; the file is created exclusively below in any case.
    if let Some(path) = &args.output
        && !args.force
        && path.exists()
    {
        eprintln!(
            "error: {} exists; pass --force to overwrite it",
            path.display()
        );
        return Outcome::Usage;
    }
    let config = match cloud_config(&args.connection) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::Usage;
        }
    };
    let client = match connect(config).await {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let listings = match take(&client).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot list the cloud's VDCs, vApps and VMs: {e}");
            return Outcome::Aborted;
        }
    };
    let snap = Snapshot::of(&listings);
    let quiet = verbosity().quiet;
    if !quiet {
        for note in &snap.notes {
            eprintln!("warning: {note}");
        }
    }
    let taken = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let text = match snap.render(&source_of(client.endpoint()), &taken) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot write the inventory: {e}");
            return Outcome::SomeFailed;
        }
    };
    // What is written must load: a snapshot that the simulator refuses helps nobody.
    if let Err(e) = SimConfig::from_inventory_str("the snapshot", &text) {
        eprintln!("error: the snapshot does not read back as an inventory: {e}");
        return Outcome::SomeFailed;
    }
    let Some(path) = &args.output else {
        print_stdout(&text);
        return Outcome::Success;
    };
    if let Err(e) = write_file(path, &text, args.force) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return if e.kind() == std::io::ErrorKind::AlreadyExists {
            Outcome::Usage
        } else {
            Outcome::SomeFailed
        };
    }
    if !quiet {
        eprintln!("snapshot: {} written to {}", snap.counts(), path.display());
    }
    Outcome::Success
}

/// Writes `text` to `path`: a new file, or with `force` over an existing one.
fn write_file(path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
