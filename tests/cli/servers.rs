//! Scripted servers on 127.0.0.1 for the hardening tests: a proxy in front of the simulator
//! that rewrites its answers, a listener that counts who sent it credentials, a server that
//! accepts and never answers, a redirector, and a TLS front with generated certificates.
//! They run on the test's runtime, so they live as long as the test.

use crate::support::Test;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Requests a server saw, and how many carried an `Authorization` header.
#[derive(Clone, Default)]
pub struct Counter {
    requests: Arc<AtomicUsize>,
    with_credentials: Arc<AtomicUsize>,
}

impl Counter {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn with_credentials(&self) -> usize {
        self.with_credentials.load(Ordering::SeqCst)
    }

    fn saw(&self, req: &Request) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if req.headers().contains_key("authorization") {
            self.with_credentials.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Rewrites an answer: its path (for choosing), and its body as text.
pub type Tamper = Arc<dyn Fn(&str, &mut String) + Send + Sync>;

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    tamper: Tamper,
    counter: Counter,
    links_to: Arc<Mutex<String>>,
    tokens: Option<Arc<Tokens>>,
}

/// Session tokens seen in `/login` answers, refused once older than `ttl`.
pub struct Tokens {
    ttl: Duration,
    issued: Mutex<HashMap<String, Instant>>,
    refused: AtomicUsize,
}

impl Tokens {
    /// Requests answered 401 because their token had expired.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn expired(&self, req: &Request) -> bool {
        let Some(token) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Token "))
        else {
            return false;
        };
        let issued = self.issued.lock().unwrap();
        issued.get(token).is_some_and(|at| at.elapsed() > self.ttl)
    }

    fn issued(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(token) = headers.get("x-abiquo-token").and_then(|v| v.to_str().ok()) {
            self.issued
                .lock()
                .unwrap()
                .insert(token.to_owned(), Instant::now());
        }
    }
}

fn bind(t: &Test) -> (TcpListener, String) {
    let listener = t.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

/// A proxy in front of the simulator. Its answers link to itself (as an API behind a
/// reverse proxy does) unless told otherwise, then pass through a tamper function.
pub struct Proxy {
    pub origin: String,
    pub counter: Counter,
    links_to: Arc<Mutex<String>>,
}

impl Proxy {
    /// Answers link to `origin` instead (another port, another scheme...).
    pub fn link_to(&self, origin: &str) {
        *self.links_to.lock().unwrap() = origin.to_owned();
    }
}

/// A proxy to the test's simulator whose answers pass through `tamper`.
pub fn proxy(t: &Test, tamper: Tamper) -> Proxy {
    start_proxy(t, tamper, None)
}

/// A proxy whose session tokens expire `ttl` after `/login` issued them (answered 401, as
/// the API does for a stale token).
pub fn expiring_tokens(t: &Test, ttl: Duration) -> (Proxy, Arc<Tokens>) {
    let tokens = Arc::new(Tokens {
        ttl,
        issued: Mutex::default(),
        refused: AtomicUsize::new(0),
    });
    let proxy = start_proxy(t, Arc::new(|_, _| {}), Some(Arc::clone(&tokens)));
    (proxy, tokens)
}

fn start_proxy(t: &Test, tamper: Tamper, tokens: Option<Arc<Tokens>>) -> Proxy {
    let upstream = sim_origin(t);
    let (listener, origin) = bind(t);
    let counter = Counter::default();
    let links_to = Arc::new(Mutex::new(origin.clone()));
    let state = ProxyState {
        upstream,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        tamper,
        counter: counter.clone(),
        links_to: Arc::clone(&links_to),
        tokens,
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let _guard = t.runtime_guard();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Proxy {
        origin,
        counter,
        links_to,
    }
}

/// A proxy that only relinks.
pub fn passthrough(t: &Test) -> Proxy {
    proxy(t, Arc::new(|_, _| {}))
}

async fn forward(State(st): State<ProxyState>, req: Request) -> Response {
    st.counter.saw(&req);
    if let Some(tokens) = &st.tokens
        && tokens.expired(&req)
    {
        tokens.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("content-type", "application/vnd.abiquo.errors+json")
            .body(Body::from(
                r#"{"collection":[{"code":"GEN-5","message":"Token expired"}]}"#,
            ))
            .unwrap();
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let mut out = st.http.request(method, format!("{}{path}", st.upstream));
    for (name, value) in req.headers() {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let body = to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let Ok(answer) = out.body(body).send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap();
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    if let Some(tokens) = &st.tokens {
        tokens.issued(&headers);
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let links_to = st.links_to.lock().unwrap().clone();
    let mut text = String::from_utf8_lossy(&bytes)
        .into_owned()
        .replace(&st.upstream, &links_to);
    (st.tamper)(&path, &mut text);
    let mut resp = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            resp = resp.header(name, value);
        }
    }
    resp.body(Body::from(text)).unwrap()
}

/// A listener that counts requests and answers 404 to all of them.
pub fn counting(t: &Test) -> (String, Counter) {
    let (listener, origin) = bind(t);
    let counter = Counter::default();
    let seen = counter.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            seen.saw(&req);
            StatusCode::NOT_FOUND
        }
    });
    let _guard = t.runtime_guard();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, counter)
}

/// A server that answers every request with a redirect to `location`.
pub fn redirector(t: &Test, location: String) -> (String, Counter) {
    let (listener, origin) = bind(t);
    let counter = Counter::default();
    let seen = counter.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        let location = location.clone();
        async move {
            seen.saw(&req);
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", HeaderValue::from_str(&location).unwrap())
                .body(Body::empty())
                .unwrap()
        }
    });
    let _guard = t.runtime_guard();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, counter)
}

/// A server that accepts connections, reads nothing and never answers.
pub fn silent(t: &Test) -> (String, Counter) {
    let (listener, origin) = bind(t);
    let counter = Counter::default();
    let seen = counter.clone();
    let _guard = t.runtime_guard();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.requests.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (origin, counter)
}

/// A certificate and its key, PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What `openssl req -x509 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1` makes:
/// self-signed, with `CA:TRUE`, used as the server's own certificate.
pub fn self_signed() -> Pem {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A private CA and a server certificate for 127.0.0.1 it signed: (CA, server).
pub fn ca_and_server() -> (Pem, Pem) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "powerbook test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        Pem {
            cert: ca.pem(),
            key: ca_key.serialize_pem(),
        },
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
    )
}

/// TLS on 127.0.0.1 in front of `upstream` (`127.0.0.1:PORT`): decrypts and passes the bytes
/// on. Returns `https://127.0.0.1:PORT`.
pub fn tls_front(t: &Test, upstream: &str, server: &Pem) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = t.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let _guard = t.runtime_guard();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://{addr}")
}

/// The simulator's origin (`http://127.0.0.1:PORT`) of a test.
pub fn sim_origin(t: &Test) -> String {
    t.sim().base_url().trim_end_matches("/api").to_owned()
}
