//! HTTP surface: the Abiquo routes powerbook uses, plus `/_sim/*` for tests.
//!
//! Layers on `/api` routes, outermost first: request counting → fault injection →
//! authentication → handler. `/_sim/*` has none of them.

// Handlers short-circuit with a ready `Response` as the error; it is moved once per request.
#![allow(clippy::result_large_err)]

use super::config::SimConfig;
use super::faults;
use super::negotiate::{self, Negotiated};
use super::state::{ApiError, ListFilter, PowerRequest, Scope, SimVm, SortBy, VmSnapshot, World};
use super::stats::{Counters, SimStats};
use crate::abiquo::media;
use crate::abiquo::model::{
    AcceptedRequest, Collection, ErrorsBody, Link, VirtualMachineStateBody, VmState,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
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

/// Marks an answer as a refusal for the stats (`"409 VM-4"`, `"503 injected"`).
#[derive(Debug, Clone)]
pub(crate) struct Rejected(pub String);

/// The authenticated user (index into `SimConfig::users`).
#[derive(Debug, Clone, Copy)]
struct AuthUser(usize);

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

    /// Base URL of links in an answer: explicit host and port, as the real API emits them.
    fn base_for(&self, headers: &HeaderMap) -> String {
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

    fn accept(&self, headers: &HeaderMap, allowed: &[&str]) -> Result<Negotiated, Response> {
        negotiate::accept(headers, allowed, &self.cfg.accepted_versions)
            .map_err(|e| self.api_error(&e, &self.latest()))
    }

    fn latest(&self) -> String {
        self.cfg.latest_version().to_owned()
    }

    fn api_error(&self, e: &ApiError, version: &str) -> Response {
        error_response(e.status, &e.code, &e.message, version, None)
    }
}

/// An `errors` answer; `rejected` overrides the stats key (default `"<status> <code>"`).
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    version: &str,
    rejected: Option<&str>,
) -> Response {
    let body = ErrorsBody::single(code, message);
    let mut resp = json_response(status, media::ERRORS, version, &body);
    let key = rejected.map_or_else(|| format!("{} {code}", status.as_u16()), str::to_owned);
    resp.extensions_mut().insert(Rejected(key));
    resp
}

/// A JSON answer with its vendor media type and negotiated version.
fn json_response<T: Serialize>(
    status: StatusCode,
    entity: &str,
    version: &str,
    body: &T,
) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            if let Ok(ct) = HeaderValue::from_str(&media::vendor(entity, version)) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
        Err(e) => {
            tracing::error!("cannot serialise a simulator answer: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed").into_response()
        }
    }
}

fn ok_json<T: Serialize>(n: &Negotiated, body: &T) -> Response {
    json_response(StatusCode::OK, &n.entity, &n.version, body)
}

/// Builds the router for a simulator instance.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    const VM: &str =
        "/api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines/{vm}";
    let api = Router::new()
        .route("/api/login", get(login))
        .route("/api/cloud/virtualdatacenters", get(list_vdcs))
        .route("/api/cloud/virtualdatacenters/{vdc}", get(get_vdc))
        .route(
            "/api/cloud/virtualdatacenters/{vdc}/virtualappliances",
            get(list_vapps),
        )
        .route(
            "/api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}",
            get(get_vapp),
        )
        .route(
            "/api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines",
            get(list_vapp_vms),
        )
        .route(
            "/api/cloud/virtualdatacenters/{vdc}/action/virtualmachines",
            get(list_vdc_vms),
        )
        .route("/api/cloud/virtualmachines", get(list_all_vms))
        .route(VM, get(get_vm))
        .route(&format!("{VM}/state"), get(get_state).put(put_state))
        .route(&format!("{VM}/action/reset"), post(post_reset))
        .route(&format!("{VM}/tasks"), get(get_tasks))
        .route(&format!("{VM}/tasks/{{task}}"), get(get_task))
        .route(&format!("{VM}/tasks/{{task}}/action/ack"), post(post_ack))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ));
    let api = Router::new()
        .merge(api)
        .route("/api/version", get(version))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            faults::inject,
        ))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), count));
    Router::new()
        .merge(api)
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/vms", get(sim_vms))
        .fallback(not_found)
        .with_state(shared)
}

/// Counts every `/api` request by route template, and refusals by status and code.
async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    let key = format!("{} {route}", req.method());
    shared.counters().request(&key);
    let resp = next.run(req).await;
    if let Some(Rejected(key)) = resp.extensions().get::<Rejected>() {
        shared.counters().rejected(key);
    }
    resp
}

async fn not_found(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let version = shared.error_version(req.headers());
    if req.uri().path().starts_with("/api") {
        let key = format!("{} (unmatched)", req.method());
        let mut counters = shared.counters();
        counters.request(&key);
        counters.rejected("404 404-NOT-FOUND");
    }
    error_response(
        StatusCode::NOT_FOUND,
        "404-NOT-FOUND",
        "The requested resource does not exist",
        &version,
        None,
    )
}

/// Basic (configured users), `Token` and `Bearer` (tokens issued by `/login`).
async fn authenticate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let version = shared.error_version(req.headers());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let user = match header {
        None | Some("") => {
            let mut resp = error_response(
                StatusCode::UNAUTHORIZED,
                "401-UNAUTHORIZED",
                "This request requires authentication",
                &version,
                None,
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Abiquo API\""),
            );
            return resp;
        }
        Some(value) => check_credentials(&shared, value),
    };
    match user {
        Some(user) => {
            req.extensions_mut().insert(AuthUser(user));
            next.run(req).await
        }
        None => {
            let mut resp = error_response(
                StatusCode::UNAUTHORIZED,
                "GEN-5",
                "Invalid credentials",
                &version,
                None,
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Abiquo API\""),
            );
            resp
        }
    }
}

fn check_credentials(shared: &Shared, value: &str) -> Option<usize> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            shared
                .cfg
                .users
                .iter()
                .position(|u| u.name == user && u.password == password)
        }
        "token" | "bearer" => lock(&shared.tokens).get(rest).copied(),
        _ => None,
    }
}

async fn version(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain")],
        shared.cfg.product_version.clone(),
    )
        .into_response()
}

async fn login(
    State(shared): State<Arc<Shared>>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &[media::USER]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let token = {
        let mut rng = lock(&shared.token_rng);
        super::state::uuid(&mut rng).replace('-', "")
    };
    lock(&shared.tokens).insert(token.clone(), user);
    let base = shared.base_for(&headers);
    let dto = shared.world().user_dto(&base, user);
    let mut resp = ok_json(&n, &dto);
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("X-Abiquo-Token", v);
    }
    resp
}

/// Paging parameters of listings.
struct Paging {
    startwith: usize,
    /// 0 = everything.
    limit: usize,
    by: SortBy,
    by_text: String,
    asc: bool,
    has: Option<String>,
    vmlabel: Option<String>,
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "400-BAD-REQUEST", message)
}

impl Paging {
    fn parse(params: &[(String, String)]) -> Result<Paging, ApiError> {
        let mut p = Paging {
            startwith: 0,
            limit: 25,
            by: SortBy::Name,
            by_text: "name".to_owned(),
            asc: true,
            has: None,
            vmlabel: None,
        };
        for (k, v) in params {
            match k.as_str() {
                "startwith" => {
                    p.startwith = v.parse().map_err(|_| {
                        bad_request(&format!("startwith must be a number >= 0, not '{v}'"))
                    })?;
                }
                "limit" => {
                    p.limit = v.parse().map_err(|_| {
                        bad_request(&format!("limit must be a number >= 0, not '{v}'"))
                    })?;
                }
                "by" => {
                    p.by = SortBy::parse(v).ok_or_else(|| {
                        bad_request(&format!(
                            "Invalid 'by' parameter '{v}'; expected name, label, id or state"
                        ))
                    })?;
                    p.by_text = v.to_ascii_lowercase();
                }
                "asc" => {
                    p.asc = match v.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(bad_request(&format!(
                                "asc must be true or false, not '{v}'"
                            )));
                        }
                    };
                }
                "has" if !v.is_empty() => p.has = Some(v.clone()),
                "vmlabel" if !v.is_empty() => p.vmlabel = Some(v.clone()),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The page's slice of `total` items and its `first`/`next`/`last` links.
    fn page(&self, href: &str, total: usize) -> (std::ops::Range<usize>, Vec<Link>) {
        let start = self.startwith.min(total);
        let end = if self.limit == 0 {
            total
        } else {
            start.saturating_add(self.limit).min(total)
        };
        let mut extra = String::new();
        for (k, v) in [("has", &self.has), ("vmlabel", &self.vmlabel)] {
            if let Some(v) = v {
                extra.push_str(&format!("&{k}={}", percent_encode(v)));
            }
        }
        let tail = format!(
            "limit={}&by={}&asc={}{extra}",
            self.limit, self.by_text, self.asc
        );
        let at = |s: usize| format!("{href}?startwith={s}&{tail}");
        let mut links = vec![Link::new("first", format!("{href}?{tail}"))];
        if self.limit > 0 && end < total {
            links.push(Link::new("next", at(end)));
        }
        let last = if self.limit == 0 || total == 0 {
            0
        } else {
            (total - 1) / self.limit * self.limit
        };
        links.push(Link::new("last", at(last)));
        (start..end, links)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn paging(shared: &Shared, params: Params, version: &str) -> Result<Paging, Response> {
    let params = params.map_err(|e| shared.api_error(&bad_request(&e.body_text()), version))?;
    Paging::parse(&params.0).map_err(|e| shared.api_error(&e, version))
}

fn ids<const N: usize>(raw: [&str; N]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (o, r) in out.iter_mut().zip(raw) {
        *o = r.parse().ok()?;
    }
    Some(out)
}

async fn list_vms_in(
    shared: Arc<Shared>,
    headers: HeaderMap,
    params: Params,
    scope: Option<Scope>,
    href: String,
) -> Response {
    let n = match shared.accept(&headers, &[media::VIRTUAL_MACHINES]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p = match paging(&shared, params, &n.version) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(scope) = scope else {
        return shared.api_error(&ApiError::vm_missing(), &n.version);
    };
    let base = shared.base_for(&headers);
    let href = format!("{base}{href}");
    let now = shared.now();
    let (page, total, links) = {
        let mut world = shared.world();
        let filter = ListFilter {
            has: p.has.as_deref(),
            vmlabel: p.vmlabel.as_deref(),
            by: p.by,
            asc: p.asc,
        };
        let all = match world.list(now, scope, &filter) {
            Ok(all) => all,
            Err(e) => return shared.api_error(&e, &n.version),
        };
        let (range, links) = p.page(&href, all.len());
        (world.snapshots(&all[range]), all.len(), links)
    };
    // Answers are built outside the lock: a 10k-VM page must not stall other clients.
    let body = Collection {
        total_size: Some(total as u64),
        links,
        collection: page.iter().map(|vm| vm.dto(&base)).collect(),
    };
    ok_json(&n, &body)
}

async fn list_all_vms(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    list_vms_in(
        shared,
        headers,
        params,
        Some(Scope::All),
        "/cloud/virtualmachines".into(),
    )
    .await
}

async fn list_vdc_vms(
    State(shared): State<Arc<Shared>>,
    Path(vdc): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let scope = ids([vdc.as_str()]).map(|[d]| Scope::Vdc(d));
    let href = format!("/cloud/virtualdatacenters/{vdc}/action/virtualmachines");
    list_vms_in(shared, headers, params, scope, href).await
}

async fn list_vapp_vms(
    State(shared): State<Arc<Shared>>,
    Path((vdc, vapp)): Path<(String, String)>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let scope = ids([vdc.as_str(), vapp.as_str()]).map(|[d, a]| Scope::Vapp(d, a));
    let href = format!("/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines");
    list_vms_in(shared, headers, params, scope, href).await
}

async fn list_vdcs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let n = match shared.accept(&headers, &[media::VIRTUAL_DATACENTERS]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p = match paging(&shared, params, &n.version) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let href = format!("{base}/cloud/virtualdatacenters");
    let body = {
        let world = shared.world();
        let mut all: Vec<_> = world
            .vdc_list()
            .into_iter()
            .map(|i| world.vdc_dto(&base, i))
            .collect();
        if let Some(h) = &p.has {
            let h = h.to_lowercase();
            all.retain(|d| d.name.to_lowercase().contains(&h));
        }
        if !p.asc {
            all.reverse();
        }
        let (range, links) = p.page(&href, all.len());
        Collection {
            total_size: Some(all.len() as u64),
            links,
            collection: all.drain(range).collect(),
        }
    };
    ok_json(&n, &body)
}

async fn get_vdc(
    State(shared): State<Arc<Shared>>,
    Path(vdc): Path<String>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &["virtualdatacenter"]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let world = shared.world();
    match ids([vdc.as_str()]).map(|[d]| world.vdc(d)) {
        Some(Ok(i)) => ok_json(&n, &world.vdc_dto(&base, i)),
        Some(Err(e)) => shared.api_error(&e, &n.version),
        None => shared.api_error(&ApiError::vdc_missing(), &n.version),
    }
}

async fn list_vapps(
    State(shared): State<Arc<Shared>>,
    Path(vdc): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let n = match shared.accept(&headers, &[media::VIRTUAL_APPLIANCES]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let p = match paging(&shared, params, &n.version) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let href = format!("{base}/cloud/virtualdatacenters/{vdc}/virtualappliances");
    let world = shared.world();
    let vdc_idx = match ids([vdc.as_str()]).map(|[d]| world.vdc(d)) {
        Some(Ok(i)) => i,
        Some(Err(e)) => return shared.api_error(&e, &n.version),
        None => return shared.api_error(&ApiError::vdc_missing(), &n.version),
    };
    let mut all: Vec<_> = world
        .vapp_list(vdc_idx)
        .into_iter()
        .map(|i| world.vapp_dto(&base, i))
        .collect();
    drop(world);
    if let Some(h) = &p.has {
        let h = h.to_lowercase();
        all.retain(|a| a.name.to_lowercase().contains(&h));
    }
    if !p.asc {
        all.reverse();
    }
    let (range, links) = p.page(&href, all.len());
    let body = Collection {
        total_size: Some(all.len() as u64),
        links,
        collection: all.drain(range).collect(),
    };
    ok_json(&n, &body)
}

async fn get_vapp(
    State(shared): State<Arc<Shared>>,
    Path((vdc, vapp)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &["virtualappliance"]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let world = shared.world();
    match ids([vdc.as_str(), vapp.as_str()]).map(|[d, a]| world.vapp(d, a)) {
        Some(Ok(i)) => ok_json(&n, &world.vapp_dto(&base, i)),
        Some(Err(e)) => shared.api_error(&e, &n.version),
        None => shared.api_error(&ApiError::vdc_missing(), &n.version),
    }
}

/// Resolves `{vdc}/{vapp}/{vm}` to a VM index (404 VM-1 otherwise).
fn find_vm(world: &World, path: &(String, String, String)) -> Result<usize, ApiError> {
    let [d, a, v] = ids([path.0.as_str(), path.1.as_str(), path.2.as_str()])
        .ok_or_else(ApiError::vm_missing)?;
    world.vm_at(d, a, v)
}

async fn get_vm(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    read_vm(
        &shared,
        &path,
        &headers,
        media::VIRTUAL_MACHINE,
        |vm, base| vm.dto(base),
    )
}

async fn get_state(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    read_vm(
        &shared,
        &path,
        &headers,
        media::VIRTUAL_MACHINE_STATE,
        |vm, base| vm.state_dto(base),
    )
}

/// Reads one VM, settled to now, and answers it in the shape `render` gives it.
fn read_vm<T: Serialize>(
    shared: &Shared,
    path: &(String, String, String),
    headers: &HeaderMap,
    entity: &str,
    render: impl FnOnce(&VmSnapshot, &str) -> T,
) -> Response {
    let n = match shared.accept(headers, &[entity]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let base = shared.base_for(headers);
    let now = shared.now();
    let found = {
        let mut world = shared.world();
        world.settle(now);
        find_vm(&world, path).map(|i| world.snapshot(i))
    };
    match found {
        Ok(vm) => ok_json(&n, &render(&vm, &base)),
        Err(e) => shared.api_error(&e, &n.version),
    }
}

/// Answers an accepted mutation: 202 + acceptedrequest with the task's `status` link.
fn accepted(shared: &Shared, n: &Negotiated, status_href: String) -> Response {
    const TEXT: &str = "You can keep track of the progress in the link";
    let old = n.version.starts_with("3.");
    let link = Link::new("status", status_href);
    let body = if old {
        AcceptedRequest {
            message: None,
            entity: Some(TEXT.to_owned()),
            links: vec![link],
        }
    } else {
        AcceptedRequest {
            message: Some(TEXT.to_owned()),
            entity: shared.cfg.emit_entity.then(|| TEXT.to_owned()),
            links: vec![
                link.typed(&media::unversioned(media::TASK))
                    .titled("status"),
            ],
        }
    };
    json_response(StatusCode::ACCEPTED, &n.entity, &n.version, &body)
}

async fn mutate(
    shared: &Shared,
    headers: &HeaderMap,
    path: &(String, String, String),
    user: usize,
    request: Result<PowerRequest, ApiError>,
    n: &Negotiated,
) -> Response {
    let base = shared.base_for(headers);
    let now = shared.now();
    let mut world = shared.world();
    let result = find_vm(&world, path).and_then(|vm| {
        let request = request?;
        let (ti, fault) = world.mutate(now, vm, user, &request)?;
        let href = format!(
            "{}/tasks/{}",
            world.vm_href_of(&base, vm),
            world.task_id(ti)
        );
        Ok((href, fault))
    });
    drop(world);
    match result {
        Ok((href, fault)) => {
            if let Some(kind) = fault {
                shared.fault(kind);
            }
            accepted(shared, n, href)
        }
        Err(e) => shared.api_error(&e, &n.version),
    }
}

async fn put_state(
    State(shared): State<Arc<Shared>>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = match shared.accept(&headers, &[media::ACCEPTED_REQUEST]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(e) = negotiate::content_type(
        &headers,
        media::VIRTUAL_MACHINE_STATE,
        &shared.cfg.accepted_versions,
        true,
    ) {
        return shared.api_error(&e, &n.version);
    }
    let request = serde_json::from_slice::<VirtualMachineStateBody>(&body)
        .map_err(|e| bad_request(&format!("Malformed virtualmachinestate body: {e}")))
        .and_then(|b| match b.state {
            VmState::On | VmState::Off | VmState::Paused => Ok(PowerRequest::State {
                target: b.state,
                graceful: b.graceful_shutdown.unwrap_or(false),
            }),
            _ => Err(ApiError::bad_state_value()),
        });
    mutate(&shared, &headers, &path, user, request, &n).await
}

async fn post_reset(
    State(shared): State<Arc<Shared>>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &[media::ACCEPTED_REQUEST]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    mutate(&shared, &headers, &path, user, Ok(PowerRequest::Reset), &n).await
}

async fn get_tasks(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &[media::TASKS]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let now = shared.now();
    let mut world = shared.world();
    world.settle(now);
    match find_vm(&world, &path) {
        Ok(i) => ok_json(&n, &world.tasks_dto(&base, i)),
        Err(e) => shared.api_error(&e, &n.version),
    }
}

async fn get_task(
    State(shared): State<Arc<Shared>>,
    Path((vdc, vapp, vm, task)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &[media::TASK, "taskextended"]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let now = shared.now();
    let mut world = shared.world();
    world.settle(now);
    let found = find_vm(&world, &(vdc, vapp, vm)).and_then(|v| world.task_of(v, &task));
    match found {
        Ok(ti) => {
            let dto = world.task_dto(&base, ti);
            drop(world);
            shared.counters().task_get(&task);
            ok_json(&n, &dto)
        }
        Err(e) => shared.api_error(&e, &n.version),
    }
}

async fn post_ack(
    State(shared): State<Arc<Shared>>,
    Path((vdc, vapp, vm, task)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let version = shared.error_version(&headers);
    let now = shared.now();
    let mut world = shared.world();
    let result = find_vm(&world, &(vdc, vapp, vm))
        .and_then(|v| world.task_of(v, &task))
        .and_then(|ti| world.ack(now, ti));
    drop(world);
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => shared.api_error(&e, &version),
    }
}

async fn sim_stats(State(shared): State<Arc<Shared>>) -> Response {
    plain_json(&shared.stats())
}

async fn sim_vms(State(shared): State<Arc<Shared>>) -> Response {
    plain_json(&shared.vm_states())
}

fn plain_json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!("cannot serialise simulator stats: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(limit: usize, startwith: usize) -> Paging {
        Paging {
            startwith,
            limit,
            by: SortBy::Name,
            by_text: "name".into(),
            asc: true,
            has: Some("web api".into()),
            vmlabel: None,
        }
    }

    #[test]
    fn page_links_follow_the_reference_shape() {
        let (range, links) = paging(2, 0).page("http://h:1/api/x", 5);
        assert_eq!(range, 0..2);
        let hrefs: Vec<_> = links
            .iter()
            .map(|l| (l.rel.as_str(), l.href.as_str()))
            .collect();
        assert_eq!(
            hrefs,
            [
                (
                    "first",
                    "http://h:1/api/x?limit=2&by=name&asc=true&has=web%20api"
                ),
                (
                    "next",
                    "http://h:1/api/x?startwith=2&limit=2&by=name&asc=true&has=web%20api"
                ),
                (
                    "last",
                    "http://h:1/api/x?startwith=4&limit=2&by=name&asc=true&has=web%20api"
                ),
            ]
        );
        let (range, links) = paging(2, 4).page("u", 5);
        assert_eq!(range, 4..5);
        assert!(links.iter().all(|l| l.rel != "next"));
        let (range, _) = paging(0, 0).page("u", 5);
        assert_eq!(range, 0..5);
        let (range, _) = paging(25, 99).page("u", 5);
        assert_eq!(range, 5..5);
    }

    #[test]
    fn paging_parameters_are_validated() {
        let p = |k: &str, v: &str| Paging::parse(&[(k.to_owned(), v.to_owned())]);
        assert!(p("limit", "-1").is_err());
        assert!(p("by", "colour").is_err());
        assert!(p("asc", "maybe").is_err());
        assert!(p("startwith", "3").is_ok_and(|p| p.startwith == 3));
        assert!(p("asc", "false").is_ok_and(|p| !p.asc));
    }
}
