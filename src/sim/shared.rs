//! What every request shares: configuration, the world behind its lock, counters, tokens,
//! the clock, and the per-request helpers (links' base URL, negotiation, error answers).

use super::answer::error_response;
use super::config::SimConfig;
use super::error::ApiError;
use super::negotiate::{self, Negotiated};
use super::stats::{Counters, SimStats};
use super::vm::SimVm;
use super::world::{World, uuid};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// State shared by every request.
pub(crate) struct Shared {
    pub cfg: Arc<SimConfig>,
    world: Mutex<World>,
    start: Instant,
    /// `http://127.0.0.1:PORT/api`.
    base: String,
    /// Bound to an unspecified address: build links from the request's `Host`.
    links_from_host: bool,
    port: u16,
    counters: Mutex<Counters>,
    tokens: Mutex<HashMap<String, usize>>,
    faults_rng: Mutex<StdRng>,
    token_rng: Mutex<StdRng>,
    /// TCP connections accepted (keep-alive clients open few).
    pub connections: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the simulator half-updated in a way that
    // matters more than stopping answering; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(cfg: Arc<SimConfig>, base: String, links_from_host: bool, port: u16) -> Shared {
        let start_epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Shared {
            world: Mutex::new(World::new(Arc::clone(&cfg), start_epoch_ms)),
            faults_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0xFA17_FA17)),
            token_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0x70CE_0000)),
            cfg,
            start: Instant::now(),
            base,
            links_from_host,
            port,
            counters: Mutex::new(Counters::default()),
            tokens: Mutex::new(HashMap::new()),
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Milliseconds since start (the simulator's clock).
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub fn fault_rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.faults_rng)
    }

    /// Request counters: a lock of their own, so counting never waits for the world.
    pub fn counters(&self) -> MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    pub fn fault(&self, kind: &str) {
        self.counters().fault(kind);
    }

    /// Same data as `GET /_sim/stats`.
    pub fn stats(&self) -> SimStats {
        let now = self.now();
        let mut world = self.world();
        let counters = self.counters();
        let mut stats = world.stats(now, &counters);
        stats.connections = self.connections.load(Ordering::Relaxed);
        stats
    }

    /// Same data as `GET /_sim/vms`.
    pub fn vm_states(&self) -> Vec<SimVm> {
        let now = self.now();
        let snapshots = self.world().all_snapshots(now);
        snapshots.iter().map(|s| s.sim_vm(&self.base)).collect()
    }

    pub fn error_version(&self, headers: &HeaderMap) -> String {
        negotiate::error_version(headers, &self.cfg.accepted_versions)
    }

    /// A new token for `user` (`/login`); `Token` and `Bearer` credentials name it.
    pub fn issue_token(&self, user: usize) -> String {
        let token = {
            let mut rng = lock(&self.token_rng);
            uuid(&mut rng).replace('-', "")
        };
        lock(&self.tokens).insert(token.clone(), user);
        token
    }

    /// The user a token was issued to.
    pub fn token_user(&self, token: &str) -> Option<usize> {
        lock(&self.tokens).get(token).copied()
    }

    /// Base URL of links in an answer: explicit host and port, as the real API emits them.
    pub fn base_for(&self, headers: &HeaderMap) -> String {
        if !self.links_from_host {
            return self.base.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            });
        match host {
            Some(h) if h.ends_with(']') || !h.contains(':') => {
                format!("http://{h}:{}/api", self.port)
            }
            Some(h) => format!("http://{h}/api"),
            None => self.base.clone(),
        }
    }

    // The error is a ready answer, moved once per request.
    #[allow(clippy::result_large_err)]
    pub fn accept(&self, headers: &HeaderMap, allowed: &[&str]) -> Result<Negotiated, Response> {
        negotiate::accept(headers, allowed, &self.cfg.accepted_versions)
            .map_err(|e| self.api_error(&e, &self.latest()))
    }

    fn latest(&self) -> String {
        self.cfg.latest_version().to_owned()
    }

    pub fn api_error(&self, e: &ApiError, version: &str) -> Response {
        error_response(e, version, None)
    }
}
