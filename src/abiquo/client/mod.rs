//! HTTP client for the Abiquo API (shared by plan, run and resume).
//!
//! It acts through the links the API returns; the only URLs built from the endpoint are the
//! entry points `/login`, `/version`, `/cloud/virtualmachines` and
//! `/cloud/virtualdatacenters`. GETs are retried on
//! transient failures. A mutation whose answer was lost is reconciled against the VM's
//! `tasks` list before anything is sent again, so a power action is never applied twice.

use crate::abiquo::api::CloudApi;
pub use crate::abiquo::api::MutationAnswer;
use crate::abiquo::auth::Credentials;
use crate::abiquo::error::ClientError;
use crate::abiquo::media;
use crate::abiquo::model::{
    Collection, Link, ListedVm, PowerRequest, Task, User, VirtualMachine, VmSeen,
};
use crate::abiquo::retry::{RetryObserver, RetryPolicy};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
pub(crate) use listing::PARALLEL_PAGES;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Header carrying the session token answered by `GET /login`.
const TOKEN_HEADER: &str = "x-abiquo-token";
/// Default cap on one answer's body: a page of 100 VMs is a few hundred KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Requests in flight at once by default: each holds a connection to the API.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

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
    /// Extra trusted CA certificate(s), PEM; a self-signed server certificate in it is
    /// pinned.
    pub ca_cert: Option<PathBuf>,
    /// Origins besides the endpoint's that may receive the credentials (`--allow-origin`).
    pub allowed_origins: Vec<String>,
    /// Allow plain http with credentials to a host that is not this machine.
    pub allow_http: bool,
    /// Run-wide request rate limit, shared by every clone of the client.
    pub requests_per_second: Option<NonZeroU32>,
    pub retry: RetryPolicy,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Timeout of opening a connection (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// Largest answer body read; a larger one is an error.
    pub max_response_bytes: usize,
    /// Told about every retry (progress for the operator).
    pub on_retry: Option<RetryObserver>,
    /// How long reconciliation of a lost answer waits for a LOCKED VM to settle.
    pub reconcile_wait: Duration,
    /// `limit` of each page when listing.
    pub page_size: usize,
    /// Requests in flight at once (each holds one connection): a run of a thousand tasks
    /// polled together must not open a thousand connections to one API server. Listings
    /// get a quarter of them (at most 32) on a pool of their own.
    pub max_connections: usize,
}

impl ClientConfig {
    pub fn new(endpoint: &str, version: &str, credentials: Credentials) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            version: version.to_owned(),
            credentials,
            insecure: false,
            ca_cert: None,
            allowed_origins: Vec::new(),
            allow_http: false,
            requests_per_second: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            on_retry: None,
            reconcile_wait: Duration::from_secs(120),
            page_size: 100,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Counters over the client's lifetime (all clones together).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
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

/// A pool of connections and the bound on requests in flight through it: each request
/// holds one connection, so the bound is also the most connections the pool opens.
struct Lane {
    http: reqwest::Client,
    connections: tokio::sync::Semaphore,
}

/// Most connections listings get of their own, out of `max_connections`: as many as the
/// plan's pages read at once and the executor's page looks need.
const LISTING_CONNECTIONS_MAX: usize = 32;

/// Connections set aside for listings out of `max`: a quarter, none when there is only one
/// (then one pool serves everything), so both pools together never exceed `max`.
fn listing_share(max: usize) -> usize {
    if max < 2 {
        0
    } else {
        (max / 4).clamp(1, LISTING_CONNECTIONS_MAX)
    }
}

struct Inner {
    lane: Lane,
    /// Listings, on connections of their own: a page of VMs grows the read buffer of the
    /// connection it comes on, and kept in one pool with the small answers, every pooled
    /// connection would end up holding one that size. `None` below two connections.
    listings: Option<Lane>,
    endpoint: String,
    version: String,
    credentials: Credentials,
    session: Mutex<Option<Session>>,
    /// The shortest age at which the API refused one of our session tokens: its lifetime,
    /// as far as we can tell. Tokens are renewed before they reach it.
    token_life: Mutex<Option<Duration>>,
    relogin: tokio::sync::Mutex<()>,
    limiter: Option<DefaultDirectRateLimiter>,
    retry: RetryPolicy,
    request_timeout: Duration,
    reconcile_wait: Duration,
    page_size: usize,
    origins: origin::OriginPolicy,
    max_response_bytes: usize,
    on_retry: Option<RetryObserver>,
    known_tasks: Mutex<HashSet<String>>,
    counters: Counters,
}

/// The session token `GET /login` gave, and when.
#[derive(Clone)]
struct Session {
    token: String,
    born: Instant,
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

/// The href of a link we must follow; its absence is an error naming what lacked it.
fn link_href(
    link: Option<&Link>,
    rel: &str,
    on: impl FnOnce() -> String,
) -> Result<String, ClientError> {
    link.map(|l| l.href.clone())
        .ok_or_else(|| ClientError::NoLink {
            rel: rel.into(),
            on: on(),
        })
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

    async fn list_vms(&self) -> Result<Vec<ListedVm>, ClientError> {
        Client::list_vms(self).await
    }

    async fn list_vms_feeding(
        &self,
        so_far: &crate::abiquo::so_far::ListingSoFar<ListedVm>,
    ) -> Result<Vec<ListedVm>, ClientError> {
        Client::list_vms_feeding(self, so_far).await
    }

    async fn list_vm_states(&self) -> Result<Vec<VmSeen>, ClientError> {
        Client::list_vm_states(self).await
    }

    fn page_size(&self) -> usize {
        self.inner.page_size
    }

    async fn list_vm_states_range(
        &self,
        startwith: usize,
        limit: usize,
    ) -> Result<Vec<VmSeen>, ClientError> {
        Client::list_vm_states_range(self, startwith, limit).await
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

impl ClientConfig {
    /// The API root as the client, its reports and journals name it.
    pub fn api_root(&self) -> String {
        self.endpoint.trim().trim_end_matches('/').to_owned()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let endpoint = config.api_root();
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
        let origins =
            origin::OriginPolicy::new(&parsed, &config.allowed_origins, config.allow_http)?;
        let build = || -> Result<reqwest::Client, ClientError> {
            let mut builder = reqwest::Client::builder()
                .user_agent(concat!("powerbook/", env!("CARGO_PKG_VERSION")))
                .timeout(config.request_timeout)
                .connect_timeout(config.connect_timeout.min(config.request_timeout))
                .pool_idle_timeout(Duration::from_secs(60))
                .redirect(origins.redirect_policy())
                .tcp_nodelay(true);
            if config.insecure {
                builder = builder.tls_danger_accept_invalid_certs(true);
            } else if let Some(path) = &config.ca_cert {
                builder = builder.tls_backend_preconfigured(tls::pinned_config(path)?);
            }
            builder
                .build()
                .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))
        };
        let max = config.max_connections.max(1);
        let listed = listing_share(max);
        let lane = Lane {
            http: build()?,
            connections: tokio::sync::Semaphore::new(max - listed),
        };
        let listings = match listed {
            0 => None,
            n => Some(Lane {
                http: build()?,
                connections: tokio::sync::Semaphore::new(n),
            }),
        };
        let limiter = config
            .requests_per_second
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        Ok(Client {
            inner: Arc::new(Inner {
                lane,
                listings,
                endpoint,
                version: config.version.trim().to_owned(),
                credentials: config.credentials,
                session: Mutex::new(None),
                token_life: Mutex::new(None),
                relogin: tokio::sync::Mutex::new(()),
                limiter,
                retry: config.retry,
                request_timeout: config.request_timeout,
                reconcile_wait: config.reconcile_wait,
                page_size: config.page_size.max(1),
                origins,
                max_response_bytes: config.max_response_bytes.max(1024),
                on_retry: config.on_retry,
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
            *lock(&self.inner.session) = Some(Session {
                token: token.to_owned(),
                born: Instant::now(),
            });
        }
        decode(&answer.body, "GET /login")
    }

    /// `GET /version` (plain text).
    pub async fn server_version(&self) -> Result<String, ClientError> {
        let url = format!("{}/version", self.inner.endpoint);
        let answer = self.get_with_retries(&url, "text/plain").await?;
        Ok(String::from_utf8_lossy(&answer.body).trim().to_owned())
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
        let href = link_href(vm.link("tasks"), "tasks", || format!("VM {}", vm.name))?;
        let page: Collection<Task> = self
            .get_json(&href, &self.media(media::TASKS), &format!("GET {href}"))
            .await?;
        Ok(page.collection)
    }
}

mod listing;
mod mutate;
mod origin;
mod tls;
mod transport;

use transport::decode;

#[cfg(test)]
mod tests;
