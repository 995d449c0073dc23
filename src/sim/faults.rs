//! Fault injection: HTTP 503/429, slow answers, malformed JSON, and connections closed
//! without an answer (before or after processing the request). A 202 without its `status`
//! link is decided by the power handlers (`routes::vms`), which build that body.
//!
//! Closing without answering needs a hook below HTTP: every connection's stream carries a
//! [`KillSwitch`]; a handler that flips it makes every later write fail, so hyper drops the
//! connection without sending a byte of the response.

use super::answer::error_response;
use super::error::ApiError;
use super::shared::Shared;
use crate::abiquo::codes::Code;
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use rand::Rng;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest body the malformed-JSON fault rewrites.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Per-connection switch: once flipped, the connection dies without answering.
#[derive(Debug, Clone, Default)]
pub(crate) struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    pub fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A TCP stream that fails every write after its [`KillSwitch`] flips, and holds one slot
/// of the connection limit.
pub(crate) struct SimStream {
    inner: TcpStream,
    kill: KillSwitch,
    _slot: OwnedSemaphorePermit,
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.kill.killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.kill.killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// TCP listener with a bound on open connections (no unbounded spawning).
pub(crate) struct SimListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    accepted: Arc<AtomicU64>,
}

impl SimListener {
    /// `accepted` counts the connections accepted.
    pub fn new(inner: TcpListener, max_connections: usize, accepted: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_connections)),
            accepted,
        }
    }
}

impl Listener for SimListener {
    type Io = SimStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = match Arc::clone(&self.slots).acquire_owned().await {
            Ok(slot) => slot,
            // The semaphore is never closed; if it were, stop accepting.
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.inner.accept().await {
                Ok((inner, addr)) => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = inner.set_nodelay(true);
                    let stream = SimStream {
                        inner,
                        kill: KillSwitch::default(),
                        _slot: slot,
                    };
                    return (stream, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("simulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, SimListener>> for KillSwitch {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.io().kill.clone()
    }
}

fn is_mutation(req: &Request) -> bool {
    let path = req.uri().path();
    (req.method() == Method::PUT && path.ends_with("/state"))
        || (req.method() == Method::POST && path.ends_with("/action/reset"))
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// Middleware on every `/api` route (never `/_sim`): rolls each fault once per request.
pub(crate) async fn inject(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let faults = &shared.cfg.faults;
    let rates = [
        faults.drop_connection,
        faults.http_503,
        faults.http_429,
        faults.slow,
        faults.lose_answer,
        faults.malformed_json,
    ];
    if rates.iter().all(|r| *r <= 0.0) {
        return next.run(req).await;
    }
    let rolls: [f64; 6] = {
        let mut rng = shared.fault_rng();
        std::array::from_fn(|_| rng.random())
    };
    let [drop, r503, r429, slow, lose, malformed] = rolls;
    let kill = req
        .extensions()
        .get::<ConnectInfo<KillSwitch>>()
        .map(|c| c.0.clone());
    let version = shared.error_version(req.headers());

    if drop < faults.drop_connection
        && let Some(kill) = &kill
    {
        kill.kill();
        shared.fault("drop");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if r503 < faults.http_503 {
        shared.fault("503");
        return error_response(
            &Code::ServiceUnavailable.into(),
            &version,
            Some("503 injected"),
        );
    }
    if r429 < faults.http_429 {
        shared.fault("429");
        let mut resp = error_response(
            &ApiError::from(Code::TooManyRequests),
            &version,
            Some("429 injected"),
        );
        let secs = faults.retry_after.as_secs_f64().ceil().max(0.0) as u64;
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let mutation = is_mutation(&req);
    let resp = next.run(req).await;
    // Slow answers are held back after processing: a client that times out on a slow
    // mutation has lost the answer of a committed request, as with `lose_answer`.
    if slow < faults.slow {
        shared.fault("slow");
        tokio::time::sleep(faults.slow_delay).await;
    }
    if mutation
        && resp.status() == StatusCode::ACCEPTED
        && lose < faults.lose_answer
        && let Some(kill) = &kill
    {
        kill.kill();
        shared.fault("lose_answer");
        return resp;
    }
    if malformed < faults.malformed_json && resp.status().is_success() && is_json(&resp) {
        shared.fault("malformed");
        let (mut parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot read a body to malform it: {e}");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        let cut = bytes.slice(..bytes.len() / 2);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(cut));
    }
    resp
}

#[cfg(test)]
mod tests {
    use crate::sim::testing::{VMS, admin, client, fast_lab, put_off, start, vm_url};
    use std::time::Duration;

    #[tokio::test]
    async fn slow_answers_outlast_a_client_timeout_and_a_slow_mutation_is_committed_first() {
        let mut cfg = fast_lab();
        cfg.faults.slow = 1.0;
        cfg.faults.slow_delay = Duration::from_millis(600);
        let sim = start(cfg).await;
        let c = client(Duration::from_millis(200));
        let web = vm_url(&sim, "web-01");

        let e = put_off(&c, &web).send().await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        // Processed before the delay: the task exists although the client saw no answer.
        let stats = sim.stats();
        assert_eq!(stats.mutations["web-01"].len(), 1);
        assert_eq!(stats.faults_injected.get("slow"), Some(&1));

        let list = format!("{}/cloud/virtualmachines", sim.base_url());
        let e = admin(c.get(&list))
            .header("Accept", VMS)
            .send()
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert_eq!(sim.stats().faults_injected.get("slow"), Some(&2));
    }
}
