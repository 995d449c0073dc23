//! `powerbook sim`: a local simulator of the Abiquo API surface powerbook uses (same URLs,
//! media types, versions, states, errors, tasks and jobs), with fault injection and
//! counters for tests. Tests start it in-process with [`SimHandle::start`].

#[cfg(test)]
mod agreement;
mod answer;
mod config;
mod error;
mod faults;
mod inventory;
mod latency;
mod negotiate;
mod rehearsal;
mod routes;
mod shared;
pub mod snapshot;
mod stats;
#[cfg(test)]
mod testing;
mod transitions;
mod vm;
mod world;

pub use config::{
    DEFAULT_PASSWORD, DEFAULT_USER, Faults, LockedCode, SimAction, SimConfig, SimUser, SimVapp,
    SimVdc, SimVmSpec,
};
pub use inventory::{schema_json as inventory_schema_json, vdcs_toml};
pub use rehearsal::{SavedWorld, WORLD_FORMAT, WorldEvent, WorldHeader, WorldRecorder, world_path};
pub use stats::{MutationRecord, SimStats};
pub use vm::SimVm;

use crate::abiquo::model::VmState;
use faults::{KillSwitch, SimListener};
use shared::Shared;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// How long `shutdown` lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why an inventory or configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read inventory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found in an inventory file, in the order of the text (at least one).
    #[error("{}", inventory_errors(file, errors))]
    Inventory {
        file: String,
        errors: Vec<InventoryError>,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// One problem in an inventory file, where it is written (1-based; columns count
/// characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// `file:line:col: message` per error, one a line; several are announced by a count first.
fn inventory_errors(file: &str, errors: &[InventoryError]) -> String {
    let lines = errors
        .iter()
        .map(|e| format!("{file}:{}:{}: {}", e.line, e.column, e.message));
    match errors.len() {
        0 => format!("{file}: invalid inventory"),
        1 => lines.collect(),
        n => std::iter::once(format!("{file}: {n} errors in the inventory"))
            .chain(lines)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// A running simulator. Stops on [`SimHandle::shutdown`] or when dropped.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// A running simulator's world, for the code that keeps a rehearsal on disk.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl SimControl {
    /// Keeps every later change of the world in `recorder`'s file.
    pub fn record_world(&self, recorder: WorldRecorder) {
        self.shared.world().record_to(recorder);
    }

    /// Wall-clock instant of the simulator clock's zero (ms since the Unix epoch).
    pub fn started_epoch_ms(&self) -> u64 {
        self.shared.world().start_epoch_ms()
    }

    /// Power tasks not finished yet (on the simulator's clock now).
    pub fn tasks_in_flight(&self) -> u64 {
        self.shared.stats().tasks_in_flight
    }
}

impl SimHandle {
    /// Binds 127.0.0.1:0 and serves in the background (tokio task).
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        SimHandle::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Binds `addr` (any address: the CLI is the one that insists on loopback).
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        SimHandle::serve(config, addr, None).await
    }

    /// Brings a rehearsal's saved world back on `addr`: its changes replayed at their
    /// instants, its clock reading the time since it first started, so tasks that would
    /// have finished meanwhile have finished.
    pub async fn restore(
        config: SimConfig,
        addr: SocketAddr,
        saved: &SavedWorld,
    ) -> std::io::Result<SimHandle> {
        SimHandle::serve(config, addr, Some(saved)).await
    }

    async fn serve(
        config: SimConfig,
        addr: SocketAddr,
        saved: Option<&SavedWorld>,
    ) -> std::io::Result<SimHandle> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        config.validate().map_err(invalid)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let unspecified = local.ip().is_unspecified();
        // Links need an address clients can reach: loopback stands in for "any".
        let link_addr = if unspecified {
            let ip = match local.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            };
            SocketAddr::new(ip, local.port())
        } else {
            local
        };
        let base_url = format!("http://{link_addr}/api");
        let config = Arc::new(config);
        let shared = match saved {
            None => Shared::new(config, base_url.clone(), unspecified, local.port()),
            Some(saved) => {
                let shared = Shared::since(
                    config,
                    base_url.clone(),
                    unspecified,
                    local.port(),
                    saved.header.started_epoch_ms,
                );
                shared.world().replay(&saved.events).map_err(invalid)?;
                shared
            }
        };
        let shared = Arc::new(shared);
        let app =
            routes::router(Arc::clone(&shared)).into_make_service_with_connect_info::<KillSwitch>();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let listener = SimListener::new(listener, MAX_CONNECTIONS, Arc::clone(&shared.connections));
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!("simulator stopped: {e}");
            }
        });
        Ok(SimHandle {
            shared,
            addr: local,
            base_url,
            cancel,
            task: Some(task),
        })
    }

    /// What keeps a rehearsal's world: usable while the handle serves.
    pub fn control(&self) -> SimControl {
        SimControl {
            shared: Arc::clone(&self.shared),
        }
    }

    /// `http://127.0.0.1:PORT/api` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Same data as `GET /_sim/stats`.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Same data as `GET /_sim/vms`.
    pub fn vm_states(&self) -> Vec<SimVm> {
        self.shared.vm_states()
    }

    /// Changes a VM's state behind the API's back (tests); `false` if no VM has that name.
    /// A task running on the VM no longer changes its state when it ends.
    pub fn set_vm_state(&self, name: &str, state: VmState) -> bool {
        let now = self.shared.now();
        self.shared.world().set_vm_state(now, name, state)
    }

    /// Stops accepting, lets open requests finish (up to a few seconds), then returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}
