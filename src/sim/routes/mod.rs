//! HTTP surface: the Abiquo routes powerbook uses, plus `/_sim/*` for tests.
//!
//! Layers on `/api` routes, outermost first: added latency (half before, half after the
//! rest) → request counting → fault injection → authentication → handler. `/_sim/*` has
//! none of them.

// Handlers short-circuit with a ready `Response` as the error; it is moved once per request.
#![allow(clippy::result_large_err)]

mod auth;
mod listings;
mod paging;
mod tasks;
mod vms;

use auth::{authenticate, login, version};
use listings::{
    get_vapp, get_vdc, list_all_vms, list_vapp_vms, list_vapps, list_vdc_vms, list_vdcs,
};
use tasks::{get_task, get_tasks, post_ack};
use vms::{get_state, get_vm, post_reset, put_state};

use super::answer::{Rejected, error_response, plain_json};
use super::error::ApiError;
use super::faults;
use super::shared::Shared;
use super::world::World;
use crate::abiquo::codes::Code;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use std::sync::Arc;

/// The authenticated user (index into `SimConfig::users`).
#[derive(Debug, Clone, Copy)]
struct AuthUser(usize);

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
        // On the whole router so unmatched `/api` paths are delayed too; `/_sim` is not.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            super::latency::delay,
        ))
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
    error_response(&Code::NotFound.into(), &version, None)
}

fn ids<const N: usize>(raw: [&str; N]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    for (o, r) in out.iter_mut().zip(raw) {
        *o = r.parse().ok()?;
    }
    Some(out)
}

/// Resolves `{vdc}/{vapp}/{vm}` to a VM index (404 VM-1 otherwise).
fn find_vm(world: &World, path: &(String, String, String)) -> Result<usize, ApiError> {
    let [d, a, v] = ids([path.0.as_str(), path.1.as_str(), path.2.as_str()])
        .ok_or_else(|| ApiError::from(Code::Vm1))?;
    world.vm_at(d, a, v)
}

async fn sim_stats(State(shared): State<Arc<Shared>>) -> Response {
    plain_json(&shared.stats())
}

async fn sim_vms(State(shared): State<Arc<Shared>>) -> Response {
    plain_json(&shared.vm_states())
}
