//! Credentials. They come from the environment only and never appear in output or logs.

use base64::Engine;
use std::fmt;

pub const ENV_USERNAME: &str = "ABIQUO_API_USERNAME";
pub const ENV_PASSWORD: &str = "ABIQUO_API_PASSWORD";
pub const ENV_TOKEN: &str = "ABIQUO_API_TOKEN";
/// OpenID Connect access token (`Authorization: Bearer`).
pub const ENV_BEARER: &str = "ABIQUO_API_BEARER";

/// How we authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP Basic; the client trades it once for a session token via `GET /login`.
    Basic { user: String, password: String },
    /// An Abiquo token (`Authorization: Token <t>`).
    Token(String),
    /// An OpenID Connect access token (`Authorization: Bearer <t>`).
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Reads `ABIQUO_API_TOKEN`, else `ABIQUO_API_BEARER`, else
    /// `ABIQUO_API_USERNAME` + `ABIQUO_API_PASSWORD`. `Ok(None)` when none is set.
    pub fn from_env() -> Result<Option<Credentials>, String> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Same as [`Credentials::from_env`] over any variable source (testable).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Credentials>, String> {
        if let Some(t) = get(ENV_TOKEN) {
            return Ok(Some(Credentials::Token(t)));
        }
        if let Some(t) = get(ENV_BEARER) {
            return Ok(Some(Credentials::Bearer(t)));
        }
        match (get(ENV_USERNAME), get(ENV_PASSWORD)) {
            (Some(user), Some(password)) => Ok(Some(Credentials::Basic { user, password })),
            (Some(_), None) => Err(format!("{ENV_USERNAME} is set but {ENV_PASSWORD} is not")),
            (None, Some(_)) => Err(format!("{ENV_PASSWORD} is set but {ENV_USERNAME} is not")),
            (None, None) => Ok(None),
        }
    }

    /// The `Authorization` header value.
    pub(crate) fn header_value(&self) -> String {
        match self {
            Credentials::Basic { user, password } => {
                let raw = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
            Credentials::Token(t) => format!("Token {t}"),
            Credentials::Bearer(t) => format!("Bearer {t}"),
        }
    }

    /// Every secret string these credentials carry (for redaction checks).
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::Basic { password, .. } => vec![password.as_str()],
            Credentials::Token(t) | Credentials::Bearer(t) => vec![t.as_str()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn debug_never_shows_secrets() {
        let all = [
            Credentials::Basic {
                user: "admin".into(),
                password: "s3cr3t-pw".into(),
            },
            Credentials::Token("tok-123456".into()),
            Credentials::Bearer("bear-987654".into()),
        ];
        for c in all {
            let shown = format!("{c:?} {c:#?}");
            for secret in c.secrets() {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains("redacted"));
        }
    }

    #[test]
    fn token_wins_over_basic_and_half_basic_is_an_error() {
        let c = Credentials::from_lookup(env(&[
            (ENV_TOKEN, "t"),
            (ENV_USERNAME, "u"),
            (ENV_PASSWORD, "p"),
        ]));
        assert_eq!(c, Ok(Some(Credentials::Token("t".into()))));
        let c = Credentials::from_lookup(env(&[(ENV_USERNAME, "u"), (ENV_PASSWORD, "p")]));
        assert_eq!(
            c,
            Ok(Some(Credentials::Basic {
                user: "u".into(),
                password: "p".into()
            }))
        );
        assert!(Credentials::from_lookup(env(&[(ENV_USERNAME, "u")])).is_err());
        assert_eq!(Credentials::from_lookup(env(&[])), Ok(None));
        assert_eq!(
            Credentials::from_lookup(env(&[(ENV_BEARER, "b")])),
            Ok(Some(Credentials::Bearer("b".into())))
        );
    }

    #[test]
    fn basic_header_is_rfc_7617() {
        let c = Credentials::Basic {
            user: "admin".into(),
            password: "xabiquo".into(),
        };
        assert_eq!(c.header_value(), "Basic YWRtaW46eGFiaXF1bw==");
    }
}
