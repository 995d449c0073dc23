//! HTTP client for the Abiquo API (shared by plan, run and resume).
//!
//! It acts through the links the API returns; the only URLs built from the endpoint are the
//! entry points `/login`, `/version` and `/cloud/virtualmachines`. GETs are retried on
//! transient failures. A mutation whose answer was lost is reconciled against the VM's
//! `tasks` list before anything is sent again, so a power action is never applied twice.

use crate::abiquo::api::CloudApi;
pub use crate::abiquo::api::MutationAnswer;
use crate::abiquo::auth::Credentials;
use crate::abiquo::error::{ClientError, excerpt};
use crate::abiquo::media;
use crate::abiquo::model::{
    AcceptedRequest, Collection, PowerRequest, Task, User, VirtualMachine, VirtualMachineStateBody,
    VmState,
};
use crate::abiquo::retry::{RetryPolicy, parse_retry_after};
use crate::abiquo::tasks::{find_ours, task_id_of};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Header carrying the session token answered by `GET /login`.
const TOKEN_HEADER: &str = "x-abiquo-token";
/// Longest paging chain we follow before calling the listing broken.
const MAX_PAGES: usize = 100_000;

/// Everything needed to build a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API root, e.g. `https://abiquo.example.com/api` (no trailing slash needed).
    pub endpoint: String,
    /// Media-type version sent on `Accept` and `Content-Type` (`5.0`).
    pub version: String,
    pub credentials: Credentials,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Extra trusted CA certificate(s), PEM.
    pub ca_cert: Option<PathBuf>,
    /// Run-wide request rate limit, shared by every clone of the client.
    pub requests_per_second: Option<NonZeroU32>,
    pub retry: RetryPolicy,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How long reconciliation of a lost answer waits for a LOCKED VM to settle.
    pub reconcile_wait: Duration,
    /// `limit` of each page when listing.
    pub page_size: usize,
}

impl ClientConfig {
    pub fn new(endpoint: &str, version: &str, credentials: Credentials) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            version: version.to_owned(),
            credentials,
            insecure: false,
            ca_cert: None,
            requests_per_second: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            reconcile_wait: Duration::from_secs(120),
            page_size: 100,
        }
    }
}

/// Counters over the client's lifetime (all clones together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientStats {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Requests that were retries of an earlier attempt.
    pub retries: u64,
    /// Mutations whose answer was lost and had to be reconciled.
    pub reconciliations: u64,
    /// Lost answers resolved by adopting the task found in the VM's `tasks` list.
    pub adopted: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    reconciliations: AtomicU64,
    adopted: AtomicU64,
}

/// What reconciliation of a lost answer found.
enum Reconciled {
    Found(String),
    AlreadyDone(VmState),
    NotProcessed,
}

/// One HTTP answer, fully read.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }
}

/// Why one attempt produced no answer.
enum NoAnswer {
    /// The request could not even be built (e.g. a malformed link): retrying cannot help.
    Invalid(ClientError),
    /// The request surely never reached the server (connection refused, DNS...).
    NotSent(ClientError),
    /// The request may have been processed: timeout, or the connection dropped mid-way.
    MaybeSent(ClientError),
}

impl NoAnswer {
    fn into_error(self) -> ClientError {
        match self {
            NoAnswer::Invalid(e) | NoAnswer::NotSent(e) | NoAnswer::MaybeSent(e) => e,
        }
    }

    fn retryable(&self) -> bool {
        !matches!(self, NoAnswer::Invalid(_))
    }
}

/// Verdict on one GET attempt.
enum Judged {
    Done(Result<Answer, ClientError>),
    Retry(Option<Duration>),
}

/// Which credentials an attempt uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthMode {
    /// The session token if we have one, else the configured credentials.
    Session,
    /// The configured credentials (for `GET /login`).
    Configured,
}

struct Inner {
    http: reqwest::Client,
    endpoint: String,
    version: String,
    credentials: Credentials,
    session: Mutex<Option<String>>,
    relogin: tokio::sync::Mutex<()>,
    limiter: Option<DefaultDirectRateLimiter>,
    retry: RetryPolicy,
    request_timeout: Duration,
    reconcile_wait: Duration,
    page_size: usize,
    known_tasks: Mutex<HashSet<String>>,
    counters: Counters,
}

/// The Abiquo API client. Cheap to clone: clones share the connection pool, the session
/// token, the rate limiter and the counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("version", &self.inner.version)
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CloudApi for Client {
    fn endpoint(&self) -> &str {
        Client::endpoint(self)
    }

    fn stats(&self) -> ClientStats {
        Client::stats(self)
    }

    async fn list_vms(&self) -> Result<Vec<VirtualMachine>, ClientError> {
        Client::list_vms(self).await
    }

    async fn get_vm_at(&self, href: &str) -> Result<VirtualMachine, ClientError> {
        Client::get_vm_at(self, href).await
    }

    async fn get_task(&self, href: &str) -> Result<Task, ClientError> {
        Client::get_task(self, href).await
    }

    async fn vm_tasks(&self, vm: &VirtualMachine) -> Result<Vec<Task>, ClientError> {
        Client::vm_tasks(self, vm).await
    }

    async fn power(
        &self,
        vm: &VirtualMachine,
        request: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        Client::power(self, vm, request).await
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = config.endpoint.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&endpoint)
            .map_err(|e| ClientError::Config(format!("invalid API endpoint `{endpoint}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "invalid API endpoint `{endpoint}`: the scheme must be http or https"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ClientError::Config(
                "the API endpoint must not carry credentials; use the ABIQUO_API_* \
                 environment variables"
                    .to_owned(),
            ));
        }
        if config.version.trim().is_empty() {
            return Err(ClientError::Config("empty API version".to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("powerbook/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if config.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Config(format!(
                    "cannot read CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Config(format!(
                    "{} is not a PEM certificate bundle: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "{} contains no certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        let limiter = config
            .requests_per_second
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoint,
                version: config.version.trim().to_owned(),
                credentials: config.credentials,
                session: Mutex::new(None),
                relogin: tokio::sync::Mutex::new(()),
                limiter,
                retry: config.retry,
                request_timeout: config.request_timeout,
                reconcile_wait: config.reconcile_wait,
                page_size: config.page_size.max(1),
                known_tasks: Mutex::new(HashSet::new()),
                counters: Counters::default(),
            }),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    pub fn version(&self) -> &str {
        &self.inner.version
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            reconciliations: c.reconciliations.load(Ordering::Relaxed),
            adopted: c.adopted.load(Ordering::Relaxed),
        }
    }

    fn media(&self, entity: &str) -> String {
        media::vendor(entity, &self.inner.version)
    }

    // ----------------------------------------------------------------------------------
    // Entry points
    // ----------------------------------------------------------------------------------

    /// `GET /login`: checks the credentials and, for Basic, obtains the session token that
    /// every later request uses instead of the password.
    pub async fn login(&self) -> Result<User, ClientError> {
        let url = format!("{}/login", self.inner.endpoint);
        let answer = self.get_configured(&url, &self.media(media::USER)).await?;
        if matches!(self.inner.credentials, Credentials::Basic { .. })
            && let Some(token) = answer
                .headers
                .get(TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|t| !t.is_empty())
        {
            *lock(&self.inner.session) = Some(token.to_owned());
        }
        decode(&answer.body, "GET /login")
    }

    /// `GET /version` (plain text).
    pub async fn server_version(&self) -> Result<String, ClientError> {
        let url = format!("{}/version", self.inner.endpoint);
        let answer = self.get_with_retries(&url, "text/plain").await?;
        Ok(String::from_utf8_lossy(&answer.body).trim().to_owned())
    }

    /// Every VM the user can see, via `/cloud/virtualmachines`, following `next` links.
    pub async fn list_vms(&self) -> Result<Vec<VirtualMachine>, ClientError> {
        let first = format!(
            "{}/cloud/virtualmachines?startwith=0&limit={}&by=name&asc=true",
            self.inner.endpoint, self.inner.page_size
        );
        self.list_all(&first, media::VIRTUAL_MACHINES).await
    }

    /// Follows a collection's `next` links from `first` and gathers every element.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        first: &str,
        entity: &str,
    ) -> Result<Vec<T>, ClientError> {
        let accept = self.media(entity);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(first.to_owned());
        while let Some(url) = next.take() {
            if !seen.insert(url.clone()) || seen.len() > MAX_PAGES {
                return Err(ClientError::Decode {
                    context: format!("listing {entity}"),
                    detail: format!("the `next` links loop (back to {url})"),
                });
            }
            let page: Collection<T> = self.get_json(&url, &accept, &format!("GET {url}")).await?;
            let empty = page.collection.is_empty();
            next = page.next_href().map(str::to_owned);
            out.extend(page.collection);
            if empty {
                // A `next` link after an empty page would loop forever on a broken server.
                break;
            }
        }
        Ok(out)
    }

    // ----------------------------------------------------------------------------------
    // Reads through links
    // ----------------------------------------------------------------------------------

    /// Re-reads a VM through its `edit` link.
    pub async fn get_vm(&self, vm: &VirtualMachine) -> Result<VirtualMachine, ClientError> {
        let href = vm.href().ok_or_else(|| ClientError::NoLink {
            rel: "edit".into(),
            on: format!("VM {}", vm.name),
        })?;
        self.get_vm_at(href).await
    }

    /// Reads a VM at a URL the API gave earlier (its `edit` link, e.g. from a saved plan).
    pub async fn get_vm_at(&self, href: &str) -> Result<VirtualMachine, ClientError> {
        self.get_json(
            href,
            &self.media(media::VIRTUAL_MACHINE),
            &format!("GET {href}"),
        )
        .await
    }

    /// Reads a task at its `status` (or `self`) link.
    pub async fn get_task(&self, href: &str) -> Result<Task, ClientError> {
        self.get_json(href, &self.media(media::TASK), &format!("GET {href}"))
            .await
    }

    /// The VM's tasks, newest first (`tasks` link).
    pub async fn vm_tasks(&self, vm: &VirtualMachine) -> Result<Vec<Task>, ClientError> {
        let href = vm
            .link("tasks")
            .map(|l| l.href.clone())
            .ok_or_else(|| ClientError::NoLink {
                rel: "tasks".into(),
                on: format!("VM {}", vm.name),
            })?;
        let page: Collection<Task> = self
            .get_json(&href, &self.media(media::TASKS), &format!("GET {href}"))
            .await?;
        Ok(page.collection)
    }

    // ----------------------------------------------------------------------------------
    // Mutations
    // ----------------------------------------------------------------------------------

    /// Sends `request` through the VM's `state` or `reset` link.
    pub async fn power(
        &self,
        vm: &VirtualMachine,
        request: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        let rel = match request {
            PowerRequest::State { .. } => "state",
            PowerRequest::Reset => "reset",
        };
        let href = vm
            .link(rel)
            .map(|l| l.href.clone())
            .ok_or_else(|| ClientError::NoLink {
                rel: rel.into(),
                on: format!("VM {}", vm.name),
            })?;
        match request {
            PowerRequest::State { target, graceful } => {
                let body = VirtualMachineStateBody {
                    state: target.state(),
                    graceful_shutdown: graceful.then_some(true),
                    links: Vec::new(),
                };
                let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::Decode {
                    context: "encoding the state body".into(),
                    detail: e.to_string(),
                })?;
                let ct = self.media(media::VIRTUAL_MACHINE_STATE);
                self.mutate(vm, Method::PUT, &href, Some((ct, bytes)), request)
                    .await
            }
            // Never resent blindly: a lost answer is reconciled first.
            PowerRequest::Reset => self.mutate(vm, Method::POST, &href, None, request).await,
        }
    }

    /// Acknowledges a failed task (`acknowledge` link). powerbook does not do this by
    /// default: the failed job must stay visible to operators.
    pub async fn ack(&self, task: &Task) -> Result<(), ClientError> {
        let href = task
            .link("acknowledge")
            .map(|l| l.href.clone())
            .ok_or_else(|| ClientError::NoLink {
                rel: "acknowledge".into(),
                on: format!("task {}", task.task_id),
            })?;
        // Acknowledging twice is harmless, so transient failures are retried like a GET.
        let mut retry = 0;
        loop {
            match self
                .attempt(
                    Method::POST,
                    &href,
                    "text/json,application/json",
                    None,
                    AuthMode::Session,
                )
                .await
            {
                Ok(a) if (200..300).contains(&a.status) => return Ok(()),
                Ok(a) if is_transient(a.status) && self.may_retry(retry) => {
                    self.backoff(retry, a.retry_after()).await;
                }
                Ok(a) => return Err(ClientError::from_answer(a.status, &a.body)),
                Err(e) if e.retryable() && self.may_retry(retry) => {
                    self.backoff(retry, None).await;
                }
                Err(e) => return Err(e.into_error()),
            }
            retry += 1;
        }
    }

    /// Sends a mutation; on a lost answer, finds out what happened before sending again.
    async fn mutate(
        &self,
        vm: &VirtualMachine,
        method: Method,
        href: &str,
        body: Option<(String, Vec<u8>)>,
        mutation: PowerRequest,
    ) -> Result<MutationAnswer, ClientError> {
        let accept = self.media(media::ACCEPTED_REQUEST);
        let context = format!("{mutation} on {}", vm.name);
        let mut retry = 0u32;
        let mut relogged = false;
        loop {
            let sent_at = epoch_secs();
            let lost = match self
                .attempt(
                    method.clone(),
                    href,
                    &accept,
                    body.clone(),
                    AuthMode::Session,
                )
                .await
            {
                Ok(a) if (200..300).contains(&a.status) => {
                    match serde_json::from_slice::<AcceptedRequest>(&a.body) {
                        Ok(accepted) => {
                            let task_href = accepted
                                .status_href()
                                .ok_or_else(|| ClientError::NoLink {
                                    rel: "status".into(),
                                    on: format!("the answer to {context}"),
                                })?
                                .to_owned();
                            self.remember_task(&task_href);
                            return Ok(MutationAnswer::Accepted { task_href });
                        }
                        // Processed, but the answer is unreadable: same as lost.
                        Err(e) => ClientError::Decode {
                            context: context.clone(),
                            detail: e.to_string(),
                        },
                    }
                }
                Ok(a) if a.status == 401 && !relogged && self.refresh_session().await? => {
                    relogged = true;
                    continue;
                }
                // 429 is an explicit "not processed, come back later".
                Ok(a) if a.status == 429 && self.may_retry(retry) => {
                    self.backoff(retry, a.retry_after()).await;
                    retry += 1;
                    continue;
                }
                Ok(a) if a.status >= 500 && self.may_retry(retry) => {
                    ClientError::from_answer(a.status, &a.body)
                }
                Ok(a) => return Err(ClientError::from_answer(a.status, &a.body)),
                Err(NoAnswer::NotSent(_)) if self.may_retry(retry) => {
                    self.backoff(retry, None).await;
                    retry += 1;
                    continue;
                }
                Err(NoAnswer::MaybeSent(e)) if self.may_retry(retry) => e,
                Err(e) => return Err(e.into_error()),
            };
            tracing::debug!(%lost, "reconciling {context}");
            self.inner
                .counters
                .reconciliations
                .fetch_add(1, Ordering::Relaxed);
            match self.reconcile(vm, mutation, sent_at, &context).await? {
                Reconciled::Found(task_href) => {
                    self.inner.counters.adopted.fetch_add(1, Ordering::Relaxed);
                    return Ok(MutationAnswer::Adopted { task_href });
                }
                Reconciled::AlreadyDone(state) => {
                    return Ok(MutationAnswer::AlreadyDone { state });
                }
                Reconciled::NotProcessed => {
                    self.backoff(retry, None).await;
                    retry += 1;
                }
            }
        }
    }

    /// After a lost answer: did our request create a task? Looks at the VM's tasks (newest
    /// first) for one of the right type created since the request, then at the VM itself.
    async fn reconcile(
        &self,
        vm: &VirtualMachine,
        mutation: PowerRequest,
        sent_at: i64,
        context: &str,
    ) -> Result<Reconciled, ClientError> {
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            let tasks = self.vm_tasks(vm).await?;
            let found = find_ours(&tasks, mutation, &vm.state, sent_at, |id| {
                lock(&self.inner.known_tasks).contains(id)
            });
            if let Some(task) = found {
                let href = task.link("self").map(|l| l.href.clone()).ok_or_else(|| {
                    ClientError::NoLink {
                        rel: "self".into(),
                        on: format!("task {}", task.task_id),
                    }
                })?;
                self.remember_task(&href);
                return Ok(Reconciled::Found(href));
            }
            let fresh = self.get_vm(vm).await?;
            match (&fresh.state, mutation) {
                (VmState::Locked, _) => {
                    // Busy: maybe with our task, not listed yet. Wait, bounded.
                    if started.elapsed() >= self.inner.reconcile_wait {
                        return Err(ClientError::AnswerLost {
                            context: format!(
                                "{context} (the VM stayed LOCKED without a task of ours)"
                            ),
                        });
                    }
                    self.backoff(round.min(4), None).await;
                    round += 1;
                }
                (state, PowerRequest::State { target, .. }) if *state == target.state() => {
                    return Ok(Reconciled::AlreadyDone(state.clone()));
                }
                _ => return Ok(Reconciled::NotProcessed),
            }
        }
    }

    fn remember_task(&self, href: &str) {
        lock(&self.inner.known_tasks).insert(task_id_of(href).to_owned());
    }

    // ----------------------------------------------------------------------------------
    // Plumbing
    // ----------------------------------------------------------------------------------

    fn may_retry(&self, retry: u32) -> bool {
        retry + 1 < self.inner.retry.max_attempts
    }

    async fn backoff(&self, retry: u32, retry_after: Option<Duration>) {
        self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.inner.retry.delay(retry, retry_after)).await;
    }

    async fn get_json<T: DeserializeOwned>(
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
    async fn get_with_retries(&self, url: &str, accept: &str) -> Result<Answer, ClientError> {
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
    async fn get_configured(&self, url: &str, accept: &str) -> Result<Answer, ClientError> {
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

    fn judge_get(&self, res: Result<Answer, NoAnswer>, retry: u32) -> Judged {
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
    async fn refresh_session(&self) -> Result<bool, ClientError> {
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

    fn authorization(&self, auth: AuthMode) -> String {
        if auth == AuthMode::Session
            && let Some(token) = lock(&self.inner.session).as_deref()
        {
            return format!("Token {token}");
        }
        self.inner.credentials.header_value()
    }

    /// One HTTP exchange, rate limited. Never logs the `Authorization` header.
    async fn attempt(
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

    fn classify(&self, e: &reqwest::Error, url: &str) -> NoAnswer {
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

fn is_transient(status: u16) -> bool {
    status == 429 || status >= 500
}

fn decode<T: DeserializeOwned>(body: &[u8], context: &str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        context: context.to_owned(),
        detail: format!("{e} (body starts: {})", excerpt(body)),
    })
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// `error: cause: cause` — reqwest's top-level message alone hides the useful part.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

#[cfg(test)]
mod tests;
