//! Authentication: Basic with the configured users, and the tokens `/login` issues
//! (`Token` / `Bearer`); plus `/version`, which needs none.

use super::AuthUser;
use crate::abiquo::codes::Code;
use crate::abiquo::media;
use crate::sim::answer::{error_response, ok_json};
use crate::sim::error::ApiError;
use crate::sim::shared::{Shared, TokenCheck};
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
        Credentials::Expired => {
            // Answered exactly as an unknown token: the real API does not say "expired".
            shared.fault(TOKEN_EXPIRED);
            refuse_credentials(&version)
        }
        Credentials::Valid(user) => {
            req.extensions_mut().insert(AuthUser(user));
            next.run(req).await
        }
        Credentials::Invalid => refuse_credentials(&version),
    }
}

/// Fault-stats kind of a request refused because its token expired.
pub(crate) const TOKEN_EXPIRED: &str = "token_expired";

/// 401 `GEN-5` with the Basic challenge, for credentials that name no valid user.
fn refuse_credentials(version: &str) -> Response {
    let mut resp = error_response(&ApiError::from(Code::Gen5), version, None);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Abiquo API\""),
    );
    resp
}

/// What an `Authorization` header amounts to.
enum Credentials {
    Valid(usize),
    /// A token `/login` issued, past `SimConfig::token_ttl`.
    Expired,
    Invalid,
}

fn check_credentials(shared: &Shared, value: &str) -> Credentials {
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Credentials::Invalid;
    };
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => basic_user(shared, rest).map_or(Credentials::Invalid, Credentials::Valid),
        "token" | "bearer" => match shared.check_token(rest) {
            TokenCheck::Valid(user) => Credentials::Valid(user),
            TokenCheck::Expired => Credentials::Expired,
            TokenCheck::Unknown => Credentials::Invalid,
        },
        _ => Credentials::Invalid,
    }
}

fn basic_user(shared: &Shared, encoded: &str) -> Option<usize> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    shared
        .cfg
        .users
        .iter()
        .position(|u| u.name == user && u.password == password)
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

#[cfg(test)]
mod tests {
    use crate::sim::testing::{USER, VMS, admin, client, fast_lab, send, start};
    use reqwest::StatusCode;
    use std::time::Duration;

    #[tokio::test]
    async fn a_token_older_than_its_ttl_is_refused_and_basic_and_login_still_work() {
        let mut cfg = fast_lab();
        cfg.token_ttl = Some(Duration::from_secs(1));
        let sim = start(cfg).await;
        let c = client(Duration::from_secs(10));
        let login = format!("{}/login", sim.base_url());
        let list = format!("{}/cloud/virtualmachines?limit=1", sim.base_url());
        let with_token = |token: &str| {
            c.get(&list)
                .header("Accept", VMS)
                .header("Authorization", format!("Token {token}"))
        };

        let (status, token, _) = send(admin(c.get(&login)).header("Accept", USER)).await;
        assert_eq!(status, StatusCode::OK);
        let token = token.unwrap();
        assert_eq!(send(with_token(&token)).await.0, StatusCode::OK);

        tokio::time::sleep(Duration::from_millis(1200)).await;
        let resp = with_token(&token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"Abiquo API\""
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["collection"][0]["code"], "GEN-5");

        // Basic keeps working, and /login issues a fresh token that is accepted.
        assert_eq!(
            send(admin(c.get(&list)).header("Accept", VMS)).await.0,
            StatusCode::OK
        );
        let (status, fresh, _) = send(admin(c.get(&login)).header("Accept", USER)).await;
        assert_eq!(status, StatusCode::OK);
        let fresh = fresh.unwrap();
        assert_ne!(fresh, token);
        assert_eq!(send(with_token(&fresh)).await.0, StatusCode::OK);

        let stats = sim.stats();
        assert_eq!(stats.faults_injected.get("token_expired"), Some(&1));
        assert_eq!(stats.rejected.get("401 GEN-5"), Some(&1));
    }

    #[tokio::test]
    async fn without_a_ttl_tokens_never_expire_and_unknown_ones_are_not_counted_as_expired() {
        let sim = start(fast_lab()).await;
        let c = client(Duration::from_secs(10));
        let (_, token, _) =
            send(admin(c.get(format!("{}/login", sim.base_url()))).header("Accept", USER)).await;
        let list = format!("{}/cloud/virtualmachines?limit=1", sim.base_url());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (token, want) in [
            (token.unwrap(), StatusCode::OK),
            ("nope".to_owned(), StatusCode::UNAUTHORIZED),
        ] {
            let r = c
                .get(&list)
                .header("Accept", VMS)
                .header("Authorization", format!("Token {token}"));
            assert_eq!(send(r).await.0, want);
        }
        assert_eq!(sim.stats().faults_injected.get("token_expired"), None);
    }
}
