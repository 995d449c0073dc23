//! Where credentials may go: the endpoint's own scheme, host and port, plus the origins the
//! operator names with `--allow-origin`. Every request and every redirect is checked here
//! before it leaves, so a link that points elsewhere is refused instead of followed with the
//! session token, and nothing ever steps down from https to http.

use crate::abiquo::error::ClientError;
use reqwest::Url;
use reqwest::redirect::{Action, Attempt, Policy};
use std::fmt;
use std::net::IpAddr;

/// Redirects followed within one origin before giving up (a loop or a confused proxy).
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port`, with the scheme's default port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub(crate) fn of(url: &Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `url` names this machine (plain http there never crosses a network).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The origins a client may send its credentials to.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    endpoint: Origin,
    extra: Vec<Origin>,
}

impl OriginPolicy {
    /// The endpoint's origin plus `allowed`. Plain http to another machine is refused unless
    /// `allow_http`; an allowed origin never downgrades an https endpoint.
    pub(crate) fn new(
        endpoint: &Url,
        allowed: &[String],
        allow_http: bool,
    ) -> Result<OriginPolicy, ClientError> {
        let ours = Origin::of(endpoint).ok_or_else(|| {
            ClientError::Config(format!("invalid API endpoint `{endpoint}`: no host"))
        })?;
        if !ours.is_https() && !allow_http && !is_loopback(endpoint) {
            return Err(ClientError::Config(format!(
                "refusing to send credentials in clear text to {ours}: use an https:// \
                 endpoint, or pass --allow-http if this network is trusted"
            )));
        }
        let mut extra = Vec::new();
        for text in allowed {
            let url = Url::parse(text.trim()).map_err(|e| {
                ClientError::Config(format!("invalid --allow-origin `{text}`: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ClientError::Config(format!(
                    "invalid --allow-origin `{text}`: the scheme must be http or https"
                )));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(ClientError::Config(format!(
                    "invalid --allow-origin `{}`: it must not carry credentials",
                    Origin::of(&url).map_or_else(|| "?".to_owned(), |o| o.to_string())
                )));
            }
            let origin = Origin::of(&url).ok_or_else(|| {
                ClientError::Config(format!("invalid --allow-origin `{text}`: no host"))
            })?;
            if ours.is_https() && !origin.is_https() {
                return Err(ClientError::Config(format!(
                    "--allow-origin {origin} would step down from https to http: the \
                     endpoint {ours} is https, so every origin it trusts must be too"
                )));
            }
            if !origin.is_https() && !allow_http && !is_loopback(&url) {
                return Err(ClientError::Config(format!(
                    "--allow-origin {origin} is plain http to another machine: use https, or \
                     pass --allow-http if this network is trusted"
                )));
            }
            extra.push(origin);
        }
        Ok(OriginPolicy {
            endpoint: ours,
            extra,
        })
    }

    /// `Ok` when `url` may receive the credentials; else the error naming both origins.
    pub(crate) fn check(&self, url: &Url) -> Result<(), ClientError> {
        let Some(theirs) = Origin::of(url) else {
            return Err(ClientError::Config(format!(
                "cannot send a request to `{}`: it has no host",
                url.as_str().split('?').next().unwrap_or_default()
            )));
        };
        if theirs == self.endpoint || self.extra.contains(&theirs) {
            return Ok(());
        }
        Err(ClientError::ForeignLink {
            link: theirs.to_string(),
            endpoint: self.endpoint.to_string(),
            downgrade: self.endpoint.is_https() && !theirs.is_https(),
        })
    }

    /// Redirects are followed only within the allowed origins, a few at most; any other
    /// redirect is answered to the caller as it came, without following it.
    pub(crate) fn redirect_policy(&self) -> Policy {
        let policy = self.clone();
        Policy::custom(move |attempt: Attempt<'_>| redirect(&policy, attempt))
    }
}

fn redirect(policy: &OriginPolicy, attempt: Attempt<'_>) -> Action {
    if attempt.previous().len() > MAX_REDIRECTS || policy.check(attempt.url()).is_err() {
        attempt.stop()
    } else {
        attempt.follow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn policy(endpoint: &str, allowed: &[&str]) -> Result<OriginPolicy, ClientError> {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        OriginPolicy::new(&url(endpoint), &allowed, false)
    }

    #[test]
    fn only_the_endpoints_scheme_host_and_port_are_trusted() {
        let p = policy("https://cloud.example.com/api", &[]).unwrap();
        assert!(p.check(&url("https://cloud.example.com:443/api/x")).is_ok());
        assert!(p.check(&url("https://CLOUD.example.com/api/x")).is_ok());
        for other in [
            "https://cloud.example.com:8443/api/x",
            "https://evil.example.com/api/x",
            "http://cloud.example.com/api/x",
        ] {
            assert!(p.check(&url(other)).is_err(), "{other}");
        }
    }

    #[test]
    fn a_link_to_http_from_https_is_a_downgrade() {
        let p = policy("https://cloud.example.com/api", &[]).unwrap();
        let e = p.check(&url("http://cloud.example.com/api/x")).unwrap_err();
        assert!(matches!(
            e,
            ClientError::ForeignLink {
                downgrade: true,
                ..
            }
        ));
        let text = e.to_string();
        assert!(text.contains("http://cloud.example.com:80"), "{text}");
        assert!(text.contains("https://cloud.example.com:443"), "{text}");
    }

    #[test]
    fn allowed_origins_are_trusted_but_never_a_downgrade() {
        let p = policy(
            "https://cloud.example.com/api",
            &["https://api.public.example.com"],
        )
        .unwrap();
        assert!(
            p.check(&url("https://api.public.example.com/api/x"))
                .is_ok()
        );
        assert!(policy("https://cloud.example.com/api", &["http://127.0.0.1:8080"]).is_err());
        assert!(policy("https://cloud.example.com/api", &["ftp://x"]).is_err());
        assert!(policy("https://cloud.example.com/api", &["https://u:p@x"]).is_err());
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_allowed() {
        let e = policy("http://abiquo.example.com/api", &[]).unwrap_err();
        assert!(e.to_string().contains("--allow-http"), "{e}");
        assert!(OriginPolicy::new(&url("http://abiquo.example.com/api"), &[], true).is_ok());
        for ok in [
            "http://127.0.0.1:9000/api",
            "http://127.8.9.1/api",
            "http://localhost:9000/api",
            "http://[::1]:9000/api",
        ] {
            assert!(policy(ok, &[]).is_ok(), "{ok}");
        }
        assert!(policy("http://10.0.0.1/api", &[]).is_err());
    }
}
