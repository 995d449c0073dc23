//! One HTTP exchange and its retries: the auth header (session token or credentials), rate
//! limiting, classifying failures by whether the request may have been processed, and
//! re-login on an expired session.

use super::{Client, lock};
use crate::abiquo::auth::Credentials;
use crate::abiquo::error::{ClientError, excerpt};
use crate::abiquo::retry::parse_retry_after;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One HTTP answer, fully read.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
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
    /// The request could not even be built (e.g. a malformed link): retrying cannot help.
    Invalid(ClientError),
    /// The request surely never reached the server (connection refused, DNS...).
    NotSent(ClientError),
    /// The request may have been processed: timeout, or the connection dropped mid-way.
    MaybeSent(ClientError),
}

impl NoAnswer {
    pub(super) fn into_error(self) -> ClientError {
        match self {
            NoAnswer::Invalid(e) | NoAnswer::NotSent(e) | NoAnswer::MaybeSent(e) => e,
        }
    }

    pub(super) fn retryable(&self) -> bool {
        !matches!(self, NoAnswer::Invalid(_))
    }
}

/// Verdict on one GET attempt.
pub(super) enum Judged {
    Done(Result<Answer, ClientError>),
    Retry(Option<Duration>),
}

/// Which credentials an attempt uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthMode {
    /// The session token if we have one, else the configured credentials.
    Session,
    /// The configured credentials (for `GET /login`).
    Configured,
}

impl Client {
    pub(super) fn may_retry(&self, retry: u32) -> bool {
        retry + 1 < self.inner.retry.max_attempts
    }

    pub(super) async fn backoff(&self, retry: u32, retry_after: Option<Duration>) {
        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.inner.retry.delay(retry, retry_after)).await;
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        accept: &str,
        context: &str,
    ) -> Result<T, ClientError> {
        // Malformed bodies are retried too: a GET can safely be repeated.
        let mut retry = 0;
        loop {
            let answer = self.get_with_retries(url, accept).await?;
            match serde_json::from_slice::<T>(&answer.body) {
                Ok(v) => return Ok(v),
                Err(e) if self.may_retry(retry) => {
                    tracing::debug!("{context}: undecodable answer ({e}); retrying");
                    self.backoff(retry, None).await;
                    retry += 1;
                }
                Err(e) => {
                    return Err(ClientError::Decode {
                        context: context.to_owned(),
                        detail: format!("{e} (body starts: {})", excerpt(&answer.body)),
                    });
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
        let mut retry = 0;
        let mut relogged = false;
        loop {
            let res = self
                .attempt(Method::GET, url, accept, None, AuthMode::Session)
                .await;
            match self.judge_get(res, retry) {
                Judged::Done(r) => {
                    if let Err(ClientError::Unauthorized { .. }) = &r
                        && !relogged
                        && self.refresh_session().await?
                    {
                        relogged = true;
                        continue;
                    }
                    return r;
                }
                Judged::Retry(after) => self.backoff(retry, after).await,
            }
            retry += 1;
        }
    }

    /// A GET with the configured credentials (login), retried on transient failures. Kept
    /// apart from [`Self::get_with_retries`] so that login never recurses into itself.
    pub(super) async fn get_configured(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<Answer, ClientError> {
        let mut retry = 0;
        loop {
            let res = self
                .attempt(Method::GET, url, accept, None, AuthMode::Configured)
                .await;
            match self.judge_get(res, retry) {
                Judged::Done(r) => return r,
                Judged::Retry(after) => self.backoff(retry, after).await,
            }
            retry += 1;
        }
    }

    pub(super) fn judge_get(&self, res: Result<Answer, NoAnswer>, retry: u32) -> Judged {
        match res {
            Ok(a) if (200..300).contains(&a.status) => Judged::Done(Ok(a)),
            Ok(a) if is_transient(a.status) && self.may_retry(retry) => {
                Judged::Retry(a.retry_after())
            }
            Ok(a) => Judged::Done(Err(ClientError::from_answer(a.status, &a.body))),
            Err(e) if e.retryable() && self.may_retry(retry) => Judged::Retry(None),
            Err(e) => Judged::Done(Err(e.into_error())),
        }
    }

    /// A 401 with a session token: the token may have expired. With Basic credentials,
    /// log in again (once for all concurrent callers). `Ok(true)` = try again.
    pub(super) async fn refresh_session(&self) -> Result<bool, ClientError> {
        if !matches!(self.inner.credentials, Credentials::Basic { .. }) {
            return Ok(false);
        }
        let stale = lock(&self.inner.session).clone();
        let Some(stale) = stale else {
            return Ok(false);
        };
        let _guard = self.inner.relogin.lock().await;
        if lock(&self.inner.session).as_deref() != Some(stale.as_str()) {
            return Ok(true); // someone else refreshed it meanwhile
        }
        *lock(&self.inner.session) = None;
        self.login().await?;
        Ok(true)
    }

    pub(super) fn authorization(&self, auth: AuthMode) -> String {
        if auth == AuthMode::Session
            && let Some(token) = lock(&self.inner.session).as_deref()
        {
            return format!("Token {token}");
        }
        self.inner.credentials.header_value()
    }

    /// One HTTP exchange, rate limited. Never logs the `Authorization` header.
    pub(super) async fn attempt(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        body: Option<(String, Vec<u8>)>,
        auth: AuthMode,
    ) -> Result<Answer, NoAnswer> {
        if let Some(limiter) = &self.inner.limiter {
            limiter.until_ready().await;
        }
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .header(ACCEPT, accept)
            .header(AUTHORIZATION, self.authorization(auth));
        if let Some((content_type, bytes)) = body {
            // Exactly one Content-Type: the vendor type, set once, body given as bytes.
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| self.classify(&e, url))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            // The server answered a status but the body never arrived whole.
            NoAnswer::MaybeSent(self.classify(&e, url).into_error())
        })?;
        tracing::debug!(
            "{method} {url} -> {status} in {}ms",
            started.elapsed().as_millis()
        );
        Ok(Answer {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    pub(super) fn classify(&self, e: &reqwest::Error, url: &str) -> NoAnswer {
        let url = strip_query(url);
        if e.is_builder() {
            return NoAnswer::Invalid(ClientError::Config(format!(
                "cannot send a request to `{url}`: {}",
                error_chain(e)
            )));
        }
        if e.is_connect() {
            return NoAnswer::NotSent(ClientError::Transport {
                url,
                detail: error_chain(e),
            });
        }
        if e.is_timeout() {
            return NoAnswer::MaybeSent(ClientError::Timeout {
                url,
                secs: self.inner.request_timeout.as_secs(),
            });
        }
        NoAnswer::MaybeSent(ClientError::Transport {
            url,
            detail: error_chain(e),
        })
    }
}

pub(super) fn is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

pub(super) fn decode<T: DeserializeOwned>(body: &[u8], context: &str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        context: context.to_owned(),
        detail: format!("{e} (body starts: {})", excerpt(body)),
    })
}

pub(super) fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// `error: cause: cause` — reqwest's top-level message alone hides the useful part.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
