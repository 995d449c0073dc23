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
    /// The clock's reading at `start`: zero, or how long ago a restored world began.
    offset_ms: u64,
    /// `http://127.0.0.1:PORT/api`.
    base: String,
    /// Bound to an unspecified address: build links from the request's `Host`.
    links_from_host: bool,
    port: u16,
    counters: Mutex<Counters>,
    /// Issued tokens: the user and when (ms since start).
    tokens: Mutex<HashMap<String, Issued>>,
    /// `SimConfig::public_url` without its trailing slash.
    public: Option<String>,
    faults_rng: Mutex<StdRng>,
    token_rng: Mutex<StdRng>,
    /// Draws each answer's added latency (a lock of its own, held only for the draw).
    latency_rng: Mutex<StdRng>,
    /// TCP connections accepted (keep-alive clients open few).
    pub connections: Arc<AtomicU64>,
}

/// A token `/login` issued.
#[derive(Debug, Clone, Copy)]
struct Issued {
    user: usize,
    at_ms: u64,
}

/// What a `Token`/`Bearer` credential names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid(usize),
    /// Issued, but older than `SimConfig::token_ttl`.
    Expired,
    Unknown,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the simulator half-updated in a way that
    // matters more than stopping answering; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(cfg: Arc<SimConfig>, base: String, links_from_host: bool, port: u16) -> Shared {
        Shared::since(cfg, base, links_from_host, port, epoch_ms())
    }

    /// A world whose clock started at `start_epoch_ms` (in the past for a restored world:
    /// its clock reads the time since then).
    pub fn since(
        cfg: Arc<SimConfig>,
        base: String,
        links_from_host: bool,
        port: u16,
        start_epoch_ms: u64,
    ) -> Shared {
        let public = cfg
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned());
        Shared {
            public,
            world: Mutex::new(World::new(Arc::clone(&cfg), start_epoch_ms)),
            faults_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0xFA17_FA17)),
            token_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0x70CE_0000)),
            latency_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0x1A7E_1A7E)),
            cfg,
            start: Instant::now(),
            offset_ms: epoch_ms().saturating_sub(start_epoch_ms),
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
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.saturating_add(elapsed)
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub fn fault_rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.faults_rng)
    }

    pub fn latency_rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.latency_rng)
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
        let base = self.public.as_ref().unwrap_or(&self.base);
        snapshots.iter().map(|s| s.sim_vm(base)).collect()
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
        let issued = Issued {
            user,
            at_ms: self.now(),
        };
        lock(&self.tokens).insert(token.clone(), issued);
        token
    }

    /// The user a token was issued to, if it has not expired.
    pub fn check_token(&self, token: &str) -> TokenCheck {
        let Some(issued) = lock(&self.tokens).get(token).copied() else {
            return TokenCheck::Unknown;
        };
        let age = self.now().saturating_sub(issued.at_ms);
        match self.cfg.token_ttl {
            Some(ttl) if u128::from(age) >= ttl.as_millis() => TokenCheck::Expired,
            _ => TokenCheck::Valid(issued.user),
        }
    }

    /// Base URL of links in an answer: the configured public URL, else explicit host and
    /// port, as the real API emits them.
    pub fn base_for(&self, headers: &HeaderMap) -> String {
        if let Some(public) = &self.public {
            return public.clone();
        }
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

#[cfg(test)]
mod tests {
    use crate::sim::testing::{
        TASK, USER, VM, VMS, admin, client, fast_lab, hrefs, put_off, send, start, vm_url,
    };
    use reqwest::StatusCode;
    use std::time::Duration;

    #[tokio::test]
    async fn public_url_is_the_base_of_every_link_while_requests_use_the_own_address() {
        const PUBLIC: &str = "https://cloud.example.com:8443/api";
        let mut cfg = fast_lab();
        cfg.public_url = Some(format!("{PUBLIC}/"));
        let sim = start(cfg).await;
        let own = sim.base_url().to_owned();
        let c = client(Duration::from_secs(10));
        let web = vm_url(&sim, "web-01");

        let (_, _, user) = send(admin(c.get(format!("{own}/login"))).header("Accept", USER)).await;
        let (_, _, list) = send(
            admin(c.get(format!("{own}/cloud/virtualmachines?limit=2"))).header("Accept", VMS),
        )
        .await;
        let (_, _, vm) = send(admin(c.get(&web)).header("Accept", VM)).await;
        let (status, _, accepted) = send(put_off(&c, &web)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let status_href = accepted["links"][0]["href"].as_str().unwrap().to_owned();
        assert!(
            status_href.starts_with(&format!("{PUBLIC}/cloud/")),
            "{status_href}"
        );
        // The link's path is routed on the simulator's own address.
        let path = status_href.strip_prefix(PUBLIC).unwrap();
        let (status, _, task) =
            send(admin(c.get(format!("{own}{path}"))).header("Accept", TASK)).await;
        assert_eq!(status, StatusCode::OK);

        let mut all = Vec::new();
        for doc in [&user, &list, &vm, &accepted, &task] {
            let found = hrefs(doc);
            assert!(!found.is_empty(), "{doc}");
            all.extend(found);
        }
        all.extend(sim.vm_states().into_iter().map(|v| v.href));
        assert!(all.iter().any(|h| h.contains("startwith=")), "a next link");
        for href in &all {
            assert!(href.starts_with(&format!("{PUBLIC}/")), "{href}");
        }
    }

    #[test]
    fn public_url_must_be_an_http_url_with_a_host() {
        for bad in [
            "ftp://h/api",
            "not a url",
            "http://h/api?x=1",
            "https://u:p@h/api",
        ] {
            let mut cfg = fast_lab();
            cfg.public_url = Some(bad.to_owned());
            assert!(cfg.validate().is_err(), "{bad}");
        }
        let mut cfg = fast_lab();
        cfg.public_url = Some("http://127.0.0.1:9/api".into());
        assert_eq!(cfg.validate(), Ok(()));
    }
}
