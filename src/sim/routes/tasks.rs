//! A VM's tasks: the `tasks` collection, one `task`, and `action/ack`.

use super::find_vm;
use crate::abiquo::media;
use crate::sim::answer::ok_json;
use crate::sim::shared::Shared;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn get_tasks(
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

pub(super) async fn get_task(
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

pub(super) async fn post_ack(
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
