//! One HTTP exchange and its retries: the origin check, the auth header (session token or
//! credentials), rate limiting, bounded reads, classifying failures by whether the request
//! may have been processed, and re-login on an expired session.

use super::{Client, Session, lock};
use crate::abiquo::auth::Credentials;
use crate::abiquo::error::{ClientError, excerpt};
use crate::abiquo::retry::{RetryNotice, parse_retry_after};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// New logins one request may trigger. More than one: under a short token lifetime the token
/// another caller just renewed may expire again before this request's retry reaches the API.
pub(super) const MAX_RELOGINS: u32 = 3;

/// The shortest token lifetime the client learns from a refusal.
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(1);

/// Shortest timeout an attempt gets when the budget is almost spent.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

/// One HTTP answer, fully read.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
    /// The session token the request carried, if any (to tell a stale token on a 401).
    pub(super) token: Option<String>,
}

impl Answer {
    pub(super) fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }
}

/// Why one attempt produced no answer.
pub(super) enum NoAnswer {
    /// Retrying cannot help and nothing was processed: a malformed or foreign link, an
    /// untrusted certificate, a redirect we do not follow.
    Invalid(ClientError),
    /// The request surely never reached the server (connection refused, DNS...).
    NotSent(ClientError),
    /// The request may have been processed: timeout, or the connection dropped mid-way.
    MaybeSent(ClientError),
    /// The server answered, but more than we read: a GET gains nothing from a retry, a
    /// mutation may have been processed.
    Oversized(ClientError),
}

impl NoAnswer {
    pub(super) fn into_error(self) -> ClientError {
        match self {
            NoAnswer::Invalid(e)
            | NoAnswer::NotSent(e)
            | NoAnswer::MaybeSent(e)
            | NoAnswer::Oversized(e) => e,
        }
    }

    fn error(&self) -> &ClientError {
        match self {
            NoAnswer::Invalid(e)
            | NoAnswer::NotSent(e)
            | NoAnswer::MaybeSent(e)
            | NoAnswer::Oversized(e) => e,
        }
    }

    pub(super) fn retryable(&self) -> bool {
        matches!(self, NoAnswer::NotSent(_) | NoAnswer::MaybeSent(_))
    }

    /// Why the attempt failed, short, for the retry line on stderr.
    pub(super) fn reason(&self) -> String {
        match self.error() {
            ClientError::Timeout { secs, .. } => format!("no answer within {secs}s"),
            ClientError::Transport { detail, .. } => short_reason(detail),
            other => other.to_string(),
        }
    }
}

/// The last cause of a transport error chain, which is the one people recognise
/// ("Connection refused (os error 111)").
fn short_reason(detail: &str) -> String {
    detail
        .rsplit(": ")
        .next()
        .unwrap_or(detail)
        .trim()
        .to_owned()
}

/// Verdict on one GET attempt.
pub(super) enum Judged {
    Done(Result<Answer, ClientError>),
    Retry {
        after: Option<Duration>,
        reason: String,
        /// What to report if no retry is left.
        error: ClientError,
    },
}

/// Which credentials an attempt uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthMode {
    /// The session token if we have one, else the configured credentials.
    Session,
    /// The configured credentials (for `GET /login`).
    Configured,
}

/// The attempts of one request: how many retries so far, since when.
pub(super) struct Tries {
    started: Instant,
    pub(super) retry: u32,
}

impl Tries {
    pub(super) fn new() -> Tries {
        Tries {
            started: Instant::now(),
            retry: 0,
        }
    }
}

impl Client {
    /// Waits before the next attempt and says so; `false` when attempts or the time budget
    /// are spent (then the caller gives up).
    pub(super) async fn retry_after_failure(
        &self,
        tries: &mut Tries,
        retry_after: Option<Duration>,
        request: &str,
        reason: &str,
    ) -> bool {
        let policy = &self.inner.retry;
        if tries.retry + 1 >= policy.max_attempts {
            return false;
        }
        let delay = policy.delay(tries.retry, retry_after);
        if tries.started.elapsed() + delay >= policy.budget {
            return false;
        }
        tries.retry += 1;
        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.inner.on_retry {
            (observer.0)(&RetryNotice {
                request: request.to_owned(),
                reason: reason.to_owned(),
                retry: tries.retry,
                of: policy.max_attempts.saturating_sub(1),
                delay,
            });
        }
        tokio::time::sleep(delay).await;
        true
    }

    /// The error to return after `tries`: said to be final when it was retried.
    pub(super) fn gave_up(&self, tries: &Tries, last: ClientError) -> ClientError {
        if tries.retry == 0 {
            return last;
        }
        ClientError::Exhausted {
            attempts: tries.retry + 1,
            elapsed_ms: u64::try_from(tries.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            last: Box::new(last),
        }
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        accept: &str,
        context: &str,
    ) -> Result<T, ClientError> {
        // Malformed bodies are retried too: a GET can safely be repeated.
        let mut tries = Tries::new();
        loop {
            let answer = self.get_with_retries(url, accept).await?;
            match decode::<T>(&answer.body, context) {
                Ok(v) => return Ok(v),
                Err(last) => {
                    tracing::debug!("{context}: {last}");
                    let request = format!("GET {}", strip_query(url));
                    if !self
                        .retry_after_failure(&mut tries, None, &request, "undecodable answer")
                        .await
                    {
                        return Err(self.gave_up(&tries, last));
                    }
                }
            }
        }
    }

    /// A GET, retried on transient failures; `Ok` only for 2xx. A 401 triggers one fresh
    /// login (the session token may have expired).
    pub(super) async fn get_with_retries(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<Answer, ClientError> {
        self.get_authenticated(url, accept, AuthMode::Session).await
    }

    /// A GET with the configured credentials (login), retried on transient failures; never
    /// re-logs in, so login cannot recurse into itself.
    pub(super) async fn get_configured(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<Answer, ClientError> {
        self.get_authenticated(url, accept, AuthMode::Configured)
            .await
    }

    async fn get_authenticated(
        &self,
        url: &str,
        accept: &str,
        auth: AuthMode,
    ) -> Result<Answer, ClientError> {
        let mut tries = Tries::new();
        let mut relogins = 0;
        let request = format!("GET {}", strip_query(url));
        loop {
            let res = self
                .attempt(Method::GET, url, accept, None, auth, &tries)
                .await;
            if let Ok(a) = &res
                && a.status == 401
                && auth == AuthMode::Session
                && relogins < MAX_RELOGINS
                // Boxed: login is itself a GET through here (with the configured credentials,
                // so it never comes back to this branch).
                && Box::pin(self.refresh_session(a.token.as_deref())).await?
            {
                relogins += 1;
                continue;
            }
            match judge_get(res) {
                Judged::Done(r) => return r.map_err(|e| self.gave_up(&tries, e)),
                Judged::Retry {
                    after,
                    reason,
                    error,
                } => {
                    if !self
                        .retry_after_failure(&mut tries, after, &request, &reason)
                        .await
                    {
                        return Err(self.gave_up(&tries, error));
                    }
                }
            }
        }
    }

    /// A 401: the session token may have expired. With Basic credentials, log in again, once
    /// for all concurrent callers: whoever finds the token already replaced just retries.
    /// `used` is the token the refused request carried. `Ok(true)` = try again.
    pub(super) async fn refresh_session(&self, used: Option<&str>) -> Result<bool, ClientError> {
        if !matches!(self.inner.credentials, Credentials::Basic { .. }) {
            return Ok(false);
        }
        let Some(used) = used else {
            // The credentials themselves were refused: logging in again cannot help.
            return Ok(false);
        };
        let _guard = self.inner.relogin.lock().await;
        let current = lock(&self.inner.session).clone();
        match current {
            Some(s) if s.token == used => {
                let age = s.born.elapsed();
                // A token refused this young was revoked, not expired: no lifetime to learn
                // (renewing before every request would follow).
                if age >= MIN_TOKEN_LIFE {
                    let mut life = lock(&self.inner.token_life);
                    *life = Some(life.map_or(age, |l| l.min(age)));
                }
            }
            _ => return Ok(true),
        }
        tracing::debug!("session token refused; logging in again");
        self.login().await?;
        Ok(true)
    }

    /// Once a token was seen to expire, its successors are renewed at three quarters of
    /// that age, so a short token lifetime does not cost a refusal (and, for a power
    /// request, a reconciliation) every time. A failed renewal leaves the old token: the
    /// API's 401 then triggers the usual login.
    async fn renew_if_old(&self) {
        let Some(life) = *lock(&self.inner.token_life) else {
            return;
        };
        let due =
            |s: &Option<Session>| s.as_ref().is_some_and(|s| s.born.elapsed() >= life * 3 / 4);
        if !due(&lock(&self.inner.session)) {
            return;
        }
        let _guard = self.inner.relogin.lock().await;
        if !due(&lock(&self.inner.session)) {
            return; // renewed while we waited
        }
        if let Err(e) = self.login().await {
            tracing::debug!("renewing the session token failed: {e}");
        }
    }

    /// The `Authorization` value and the session token in it, if it is one.
    pub(super) fn authorization(&self, auth: AuthMode) -> (String, Option<String>) {
        if auth == AuthMode::Session
            && let Some(session) = lock(&self.inner.session).clone()
        {
            return (format!("Token {}", session.token), Some(session.token));
        }
        (self.inner.credentials.header_value(), None)
    }

    /// One HTTP exchange, rate limited, to an allowed origin only. Never logs the
    /// `Authorization` header. The answer's body is read up to the configured cap.
    pub(super) async fn attempt(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        body: Option<(String, Vec<u8>)>,
        auth: AuthMode,
        tries: &Tries,
    ) -> Result<Answer, NoAnswer> {
        let parsed = Url::parse(url).map_err(|e| {
            NoAnswer::Invalid(ClientError::Config(format!(
                "cannot send a request to `{}`: {e}",
                strip_query(url)
            )))
        })?;
        // Checked before the rate limiter and the auth header: a foreign link costs nothing
        // and carries nothing.
        self.inner
            .origins
            .check(&parsed)
            .map_err(NoAnswer::Invalid)?;
        if auth == AuthMode::Session {
            // Boxed: renewing is a login, itself a request through here.
            Box::pin(self.renew_if_old()).await;
        }
        if let Some(limiter) = &self.inner.limiter {
            limiter.until_ready().await;
        }
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let left = self
            .inner
            .retry
            .budget
            .saturating_sub(tries.started.elapsed());
        let timeout = self
            .inner
            .request_timeout
            .min(left)
            .max(MIN_ATTEMPT_TIMEOUT);
        let (authorization, token) = self.authorization(auth);
        let lane = match &self.inner.listings {
            Some(listings) if method == Method::GET && is_listing(parsed.path()) => listings,
            _ => &self.inner.lane,
        };
        let mut req = lane
            .http
            .request(method.clone(), parsed)
            .timeout(timeout)
            .header(ACCEPT, accept)
            .header(AUTHORIZATION, authorization);
        if let Some((content_type, bytes)) = body {
            // Exactly one Content-Type: the vendor type, set once, body given as bytes.
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        // Held until the answer is read, when its connection is free again.
        let _connection = lane.connections.acquire().await.ok();
        let started = Instant::now();
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.classify(&e, url, timeout))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if (300..400).contains(&status) {
            return Err(NoAnswer::Invalid(
                self.redirect_error(url, status, &headers),
            ));
        }
        let cap = self.inner.max_response_bytes;
        let too_large = || {
            NoAnswer::Oversized(ClientError::TooLarge {
                url: strip_query(url),
                limit: human_bytes(cap),
            })
        };
        if resp
            .content_length()
            .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > cap))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                // The server answered a status but the body never arrived whole.
                Err(e) => {
                    return Err(NoAnswer::MaybeSent(
                        self.classify(&e, url, timeout).into_error(),
                    ));
                }
            }
        }
        tracing::debug!(
            "{method} {} -> {status} in {}ms",
            strip_query(url),
            started.elapsed().as_millis()
        );
        Ok(Answer {
            status,
            headers,
            body,
            token,
        })
    }

    fn redirect_error(&self, url: &str, status: u16, headers: &HeaderMap) -> ClientError {
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let target = Url::parse(url).and_then(|base| base.join(location));
        let foreign = match &target {
            Ok(t) => self.inner.origins.check(t).is_err(),
            Err(_) => true,
        };
        ClientError::Redirected {
            url: strip_query(url),
            status,
            location: target.map_or_else(|_| location.to_owned(), |t| strip_query(t.as_str())),
            foreign,
        }
    }

    pub(super) fn classify(&self, e: &reqwest::Error, url: &str, timeout: Duration) -> NoAnswer {
        let url = strip_query(url);
        let chain = error_chain(e);
        if e.is_builder() {
            return NoAnswer::Invalid(ClientError::Config(format!(
                "cannot send a request to `{url}`: {chain}"
            )));
        }
        if let Some(tls) = tls_error(&url, &chain) {
            return NoAnswer::Invalid(tls);
        }
        if e.is_connect() {
            return NoAnswer::NotSent(ClientError::Transport { url, detail: chain });
        }
        if e.is_timeout() {
            return NoAnswer::MaybeSent(ClientError::Timeout {
                url,
                secs: timeout.as_secs_f64().ceil() as u64,
            });
        }
        NoAnswer::MaybeSent(ClientError::Transport { url, detail: chain })
    }
}

/// Certificate and handshake failures, told apart from network trouble by rustls' wording.
fn tls_error(url: &str, chain: &str) -> Option<ClientError> {
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate") {
        // From the first mention of the certificate on: "invalid peer certificate:
        // UnknownIssuer" says why.
        let parts: Vec<&str> = chain.split(": ").collect();
        let from = parts
            .iter()
            .position(|part| part.to_ascii_lowercase().contains("certificate"))
            .unwrap_or(0);
        let detail = parts[from..].join(": ").trim().to_owned();
        return Some(ClientError::Tls {
            url: url.to_owned(),
            detail,
        });
    }
    if lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("handshake")
        || lower.contains("alert")
    {
        return Some(ClientError::TlsHandshake {
            url: url.to_owned(),
            detail: short_reason(chain),
        });
    }
    None
}

fn judge_get(res: Result<Answer, NoAnswer>) -> Judged {
    match res {
        Ok(a) if (200..300).contains(&a.status) => Judged::Done(Ok(a)),
        Ok(a) if is_transient(a.status) => Judged::Retry {
            after: a.retry_after(),
            reason: format!("HTTP {}", a.status),
            error: ClientError::from_answer(a.status, &a.body),
        },
        Ok(a) => Judged::Done(Err(ClientError::from_answer(a.status, &a.body))),
        Err(e) if e.retryable() => Judged::Retry {
            after: None,
            reason: e.reason(),
            error: e.into_error(),
        },
        Err(e) => Judged::Done(Err(e.into_error())),
    }
}

pub(super) fn is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

/// A collection the API pages (VMs, vApps, VDCs): large answers.
fn is_listing(path: &str) -> bool {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    matches!(
        last,
        "virtualmachines" | "virtualappliances" | "virtualdatacenters"
    )
}

pub(super) fn decode<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    context: &str,
) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        context: context.to_owned(),
        detail: format!("{e} (body starts: {})", excerpt(body)),
    })
}

pub(super) fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// `8 MiB`, `512 KiB`, `100 bytes`.
fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// `cause: cause` — reqwest's top-level message alone hides the useful part, and its
/// wrappers ("error sending request for url (…)", "client error (Connect)") only repeat
/// what the message around it says.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let wrapper =
            text.starts_with("error sending request for url") || text.starts_with("client error (");
        if !wrapper && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::is_listing;

    #[test]
    fn only_collections_the_api_pages_go_on_the_listing_connections() {
        assert!(is_listing("/api/cloud/virtualmachines"));
        assert!(is_listing(
            "/api/cloud/virtualdatacenters/2/virtualappliances/7/virtualmachines/"
        ));
        assert!(is_listing("/api/cloud/virtualdatacenters"));
        assert!(is_listing(
            "/api/cloud/virtualdatacenters/2/virtualappliances"
        ));
        assert!(!is_listing(
            "/api/cloud/virtualdatacenters/2/virtualappliances/7/virtualmachines/41"
        ));
        assert!(!is_listing(
            "/api/cloud/virtualdatacenters/2/virtualappliances/7/virtualmachines/41/tasks/t-1"
        ));
        assert!(!is_listing("/api/login"));
    }
}
