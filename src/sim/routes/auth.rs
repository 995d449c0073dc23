//! Authentication: Basic with the configured users, and the tokens `/login` issues
//! (`Token` / `Bearer`); plus `/version`, which needs none.

use super::AuthUser;
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::sim::answer::{error_response, ok_json};
use crate::sim::error::ApiError;
use crate::sim::shared::Shared;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::sync::Arc;

/// Basic (configured users), `Token` and `Bearer` (tokens issued by `/login`).
pub(super) async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let version = shared.error_version(req.headers());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let user = match header {
        None | Some("") => {
            let mut resp = error_response(&Code::Unauthorized.into(), &version, None);
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
            let mut resp = error_response(&ApiError::from(Code::Gen5), &version, None);
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
        "token" | "bearer" => shared.token_user(rest),
        _ => None,
    }
}

pub(super) async fn version(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain")],
        shared.cfg.product_version.clone(),
    )
        .into_response()
}

pub(super) async fn login(
    State(shared): State<Arc<Shared>>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    headers: HeaderMap,
) -> Response {
    let n = match shared.accept(&headers, &[media::USER]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let token = shared.issue_token(user);
    let base = shared.base_for(&headers);
    let dto = shared.world().user_dto(&base, user);
    let mut resp = ok_json(&n, &dto);
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("X-Abiquo-Token", v);
    }
    resp
}
