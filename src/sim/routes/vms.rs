//! One VM: its `virtualmachine` and `state` reads, and the power requests (`PUT state`,
//! `POST action/reset`) answered 202 with the task's `status` link.

use super::paging::bad_request;
use super::{AuthUser, find_vm};
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::abiquo::model::{
    AcceptedRequest, Link, PowerRequest, PowerState, VirtualMachineStateBody,
};
use crate::sim::answer::{json_response, ok_json};
use crate::sim::error::ApiError;
use crate::sim::negotiate::{self, Negotiated};
use crate::sim::shared::Shared;
use crate::sim::vm::VmSnapshot;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rand::Rng;
use serde::Serialize;
use std::sync::Arc;

pub(super) async fn get_vm(
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

pub(super) async fn get_state(
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

/// Answers an accepted mutation: 202 + acceptedrequest with the task's `status` link
/// (left out by the `no_status_link` fault).
fn accepted(shared: &Shared, n: &Negotiated, status_href: String) -> Response {
    const TEXT: &str = "You can keep track of the progress in the link";
    let old = n.version.starts_with("3.");
    let link = Link::new("status", status_href);
    let mut body = if old {
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
    let rate = shared.cfg.faults.no_status_link;
    if rate > 0.0 && shared.fault_rng().random::<f64>() < rate {
        shared.fault(NO_STATUS_LINK);
        body.links.retain(|l| l.rel != "status");
    }
    json_response(StatusCode::ACCEPTED, &n.entity, &n.version, &body)
}

/// Fault-stats kind of a 202 answered without its `status` link.
const NO_STATUS_LINK: &str = "no_status_link";

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
        let (ti, fault) = world.mutate(now, vm, user, request)?;
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

pub(super) async fn put_state(
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
        .and_then(|b| match PowerState::of(&b.state) {
            Some(target) => Ok(PowerRequest::State {
                target,
                graceful: b.graceful_shutdown.unwrap_or(false),
            }),
            None => Err(Code::Vm10.into()),
        });
    mutate(&shared, &headers, &path, user, request, &n).await
}

pub(super) async fn post_reset(
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

#[cfg(test)]
mod tests {
    use crate::sim::testing::{
        TASKS, admin, client, fast_lab, post_reset, put_off, send, start, vm_url,
    };
    use reqwest::StatusCode;
    use std::time::Duration;

    #[tokio::test]
    async fn no_status_link_fault_answers_202_without_the_link_but_processes_the_request() {
        let mut cfg = fast_lab();
        cfg.faults.no_status_link = 1.0;
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(10));
        let web = vm_url(&sim, "web-01");
        let (status, _, body) = send(put_off(&c, &web)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(
            body["message"],
            "You can keep track of the progress in the link"
        );
        assert_eq!(body["links"], serde_json::json!([]), "{body}");
        let api = vm_url(&sim, "api-01");
        let (status, _, body) = send(post_reset(&c, &api)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["links"], serde_json::json!([]), "{body}");

        let stats = sim.stats();
        assert_eq!(stats.faults_injected.get("no_status_link"), Some(&2));
        // The task exists: the VM's tasks list shows it.
        let task_id = &stats.mutations["web-01"][0].task_id;
        let (status, _, tasks) =
            send(admin(c.get(format!("{web}/tasks"))).header("Accept", TASKS)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(tasks["collection"][0]["taskId"], task_id.as_str());
        assert_eq!(stats.mutations["api-01"].len(), 1);
    }
}
