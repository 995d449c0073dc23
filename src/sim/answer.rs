//! Building answers: vendor-typed JSON, `errors` bodies (marked for the refusal stats), and
//! the plain JSON of `/_sim/*`.

use super::error::ApiError;
use super::negotiate::Negotiated;
use crate::abiquo::media;
use crate::abiquo::model::ErrorsBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Marks an answer as a refusal for the stats (`"409 VM-4"`, `"503 injected"`).
#[derive(Debug, Clone)]
pub(crate) struct Rejected(pub String);

/// An `errors` answer; `rejected` overrides the stats key (default `"<status> <code>"`).
pub(crate) fn error_response(e: &ApiError, version: &str, rejected: Option<&str>) -> Response {
    let body = ErrorsBody::single(&e.code, &e.message);
    let mut resp = json_response(e.status, media::ERRORS, version, &body);
    let key = rejected.map_or_else(
        || format!("{} {}", e.status.as_u16(), e.code),
        str::to_owned,
    );
    resp.extensions_mut().insert(Rejected(key));
    resp
}

/// A JSON answer with its vendor media type and negotiated version.
pub(crate) fn json_response<T: Serialize>(
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

pub(crate) fn ok_json<T: Serialize>(n: &Negotiated, body: &T) -> Response {
    json_response(StatusCode::OK, &n.entity, &n.version, body)
}

pub(crate) fn plain_json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!("cannot serialise simulator stats: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
