//! Listings and single reads of VMs, VDCs and vApps.

use super::ids;
use super::paging::{Paging, Params, paging};
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::abiquo::model::Collection;
use crate::sim::answer::ok_json;
use crate::sim::error::ApiError;
use crate::sim::negotiate::Negotiated;
use crate::sim::shared::Shared;
use crate::sim::world::{ListFilter, Scope};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use std::sync::Arc;

/// Negotiates a listing's media type, then reads its paging parameters.
fn accept_paged(
    shared: &Shared,
    headers: &HeaderMap,
    params: Params,
    media: &str,
) -> Result<(Negotiated, Paging), Response> {
    let n = shared.accept(headers, &[media])?;
    let p = paging(shared, params, &n.version)?;
    Ok((n, p))
}

/// One page of a listing that is filtered by name (`has`, case-blind) and sorted by the
/// world's order (`asc=false` reverses it): the VDC and vApp listings.
fn named_page<T>(
    p: &Paging,
    href: &str,
    mut all: Vec<T>,
    name: impl Fn(&T) -> &str,
) -> Collection<T> {
    if let Some(h) = &p.has {
        let h = h.to_lowercase();
        all.retain(|d| name(d).to_lowercase().contains(&h));
    }
    if !p.asc {
        all.reverse();
    }
    let (range, links) = p.page(href, all.len());
    Collection {
        total_size: Some(all.len() as u64),
        links,
        collection: all.drain(range).collect(),
    }
}

async fn list_vms_in(
    shared: Arc<Shared>,
    headers: HeaderMap,
    params: Params,
    scope: Option<Scope>,
    href: String,
) -> Response {
    let (n, p) = match accept_paged(&shared, &headers, params, media::VIRTUAL_MACHINES) {
        Ok(np) => np,
        Err(r) => return r,
    };
    let Some(scope) = scope else {
        return shared.api_error(&ApiError::from(Code::Vm1), &n.version);
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

pub(super) async fn list_all_vms(
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

pub(super) async fn list_vdc_vms(
    State(shared): State<Arc<Shared>>,
    Path(vdc): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let scope = ids([vdc.as_str()]).map(|[d]| Scope::Vdc(d));
    let href = format!("/cloud/virtualdatacenters/{vdc}/action/virtualmachines");
    list_vms_in(shared, headers, params, scope, href).await
}

pub(super) async fn list_vapp_vms(
    State(shared): State<Arc<Shared>>,
    Path((vdc, vapp)): Path<(String, String)>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let scope = ids([vdc.as_str(), vapp.as_str()]).map(|[d, a]| Scope::Vapp(d, a));
    let href = format!("/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines");
    list_vms_in(shared, headers, params, scope, href).await
}

pub(super) async fn list_vdcs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let (n, p) = match accept_paged(&shared, &headers, params, media::VIRTUAL_DATACENTERS) {
        Ok(np) => np,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let href = format!("{base}/cloud/virtualdatacenters");
    let body = {
        let world = shared.world();
        let all: Vec<_> = world
            .vdc_list()
            .into_iter()
            .map(|i| world.vdc_dto(&base, i))
            .collect();
        named_page(&p, &href, all, |d| &d.name)
    };
    ok_json(&n, &body)
}

pub(super) async fn get_vdc(
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
        None => shared.api_error(&ApiError::from(Code::Vdc0), &n.version),
    }
}

pub(super) async fn list_vapps(
    State(shared): State<Arc<Shared>>,
    Path(vdc): Path<String>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    let (n, p) = match accept_paged(&shared, &headers, params, media::VIRTUAL_APPLIANCES) {
        Ok(np) => np,
        Err(r) => return r,
    };
    let base = shared.base_for(&headers);
    let href = format!("{base}/cloud/virtualdatacenters/{vdc}/virtualappliances");
    let world = shared.world();
    let vdc_idx = match ids([vdc.as_str()]).map(|[d]| world.vdc(d)) {
        Some(Ok(i)) => i,
        Some(Err(e)) => return shared.api_error(&e, &n.version),
        None => return shared.api_error(&ApiError::from(Code::Vdc0), &n.version),
    };
    let all: Vec<_> = world
        .vapp_list(vdc_idx)
        .into_iter()
        .map(|i| world.vapp_dto(&base, i))
        .collect();
    drop(world);
    ok_json(&n, &named_page(&p, &href, all, |a| &a.name))
}

pub(super) async fn get_vapp(
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
        None => shared.api_error(&ApiError::from(Code::Vdc0), &n.version),
    }
}
