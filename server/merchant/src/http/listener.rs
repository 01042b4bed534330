//! The listeners' accept loop: hyper connections with a header-read
//! timeout, an idle keep-alive timeout and a cap on open connections,
//! which `axum::serve` does not offer.
//!
//! - **Connection cap** (`max_connections`): a semaphore permit is taken
//!   *before* `accept`, so a connection over the cap waits in the kernel's
//!   listen backlog and is answered as soon as a slot frees (it is not
//!   refused). Slow clients free their slot within the timeouts below.
//! - **Header-read timeout** (`header_read_timeout_secs`): a new connection
//!   must deliver its first request's headers within this time of being
//!   accepted; on a kept-alive connection, once the first byte of the next
//!   request arrives, its headers must follow within the same time.
//! - **Idle keep-alive timeout** (`keep_alive_idle_secs`): a kept-alive
//!   connection on which no next request starts within this time of the
//!   last response is closed.
//!
//! A connection that misses a deadline is dropped (the socket closed, no
//! answer). While a request is being handled no deadline runs.
//!
//! Every request also gets its unread body drained before the answer goes
//! out (`serve_connection`): a route that refuses a request before
//! reading its body (401, 403, 404, 405, 413…) would otherwise leave the
//! body in the socket, and hyper then closes the connection after the
//! answer without saying so. A body up to `max_drain` bytes that arrives
//! within the header-read timeout is read and discarded; otherwise the
//! answer carries `Connection: close`, so the client knows not to reuse
//! the connection.

use crate::metrics::metrics;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Time for a request's headers (`header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request
    /// (`keep_alive_idle_secs`).
    pub keep_alive_idle: Duration,
    /// Most connections open at once (`max_connections`).
    pub max_connections: usize,
    /// Largest unread request body drained before an early answer (the
    /// public routes' `max_body_bytes`); a larger one closes the connection.
    pub max_drain_bytes: usize,
}

/// Default `header_read_timeout_secs`.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 5;
/// Default `keep_alive_idle_secs`.
pub const DEFAULT_KEEP_ALIVE_IDLE_SECS: u64 = 15;
/// Default `max_connections`: well under the usual 1024 open-file limit,
/// leaving descriptors for the database and outgoing calls.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 512;

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            keep_alive_idle: Duration::from_secs(DEFAULT_KEEP_ALIVE_IDLE_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_drain_bytes: super::limits::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Serves `router` on `listener` (with `ConnectInfo<SocketAddr>`) until
/// `stop` is cancelled; then stops accepting, lets every connection finish
/// its request in flight and returns when all are closed. `name` labels
/// the open-connections metric (`public`, `internal`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    name: &'static str,
    stop: CancellationToken,
) {
    let max = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        // The permit first: over the cap, connections wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        // Answers are small; Nagle's algorithm meeting the client's delayed
        // ACK would add ~40 ms to requests.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let open = metrics().connection_opened(name);
            serve_connection(tcp, peer, router, settings, stop).await;
            drop(open);
            drop(permit);
        });
    }
    // Every connection holds a permit until it is closed.
    let _ = slots.acquire_many(max as u32).await;
}

/// What the deadlines of one connection depend on.
#[derive(Debug)]
struct ConnState {
    inner: Mutex<Phase>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Requests being handled.
    in_flight: usize,
    /// Requests started so far.
    started: u64,
    /// Since when the connection waits for a request (accept or the end of
    /// the last response).
    waiting_since: Instant,
    /// When the first byte arrived while waiting.
    first_byte: Option<Instant>,
}

impl ConnState {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Phase {
                in_flight: 0,
                started: 0,
                waiting_since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.first_byte.is_none() {
            p.first_byte = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        {
            let mut p = self.phase();
            p.in_flight += 1;
            p.started += 1;
            p.first_byte = None;
        }
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    /// When the connection is dropped unless something happens first, and
    /// why; `None` while a request is being handled.
    fn deadline(&self, s: &ConnectionSettings) -> Option<(Instant, &'static str)> {
        let p = *self.phase();
        if p.in_flight > 0 {
            return None;
        }
        Some(match p.first_byte {
            Some(t) => (t + s.header_read_timeout, "header_timeout"),
            None if p.started == 0 => (p.waiting_since + s.header_read_timeout, "header_timeout"),
            None => (p.waiting_since + s.keep_alive_idle, "idle_timeout"),
        })
    }

    /// Resolves when a deadline has passed (with its reason).
    async fn expired(&self, s: &ConnectionSettings) -> &'static str {
        loop {
            let changed = self.changed.notified();
            match self.deadline(s) {
                None => changed.await,
                Some((at, why)) => {
                    if Instant::now() >= at {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
            }
        }
    }
}

/// Held while a request is handled (its future, then its response body).
#[derive(Debug)]
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        {
            let mut p = self.0.phase();
            p.in_flight = p.in_flight.saturating_sub(1);
            p.waiting_since = Instant::now();
            p.first_byte = None;
        }
        self.0.changed.notify_one();
    }
}

/// The socket, telling the connection state when bytes arrive.
struct TrackedIo {
    tcp: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves one connection until it closes, misses a deadline, or (after
/// `stop`) finishes its request in flight.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    settings: ConnectionSettings,
    stop: CancellationToken,
) {
    let state = ConnState::new();
    let io = TokioIo::new(TrackedIo {
        tcp,
        state: state.clone(),
    });
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = svc_state.request_started();
        let router = router.clone();
        async move {
            let resp = handle(router, req, peer, &settings).await;
            // The request counts as handled until its answer is written.
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(Guarded {
                    body: b,
                    _guard: guard,
                })
            }))
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        why = state.expired(&settings) => {
            metrics().connection_dropped(why);
            tracing::debug!(reason = why, "slow or idle connection dropped");
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                // A connection that sends nothing is not waited for.
                _ = state.expired(&settings) => {}
            }
        }
    }
}

/// Runs `router` on `req`, then drains what the handler left unread of the
/// body (bounded), or marks the answer `Connection: close`.
async fn handle(
    router: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
    settings: &ConnectionSettings,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    if body.is_end_stream() {
        let req = Request::from_parts(parts, Body::new(body));
        return router.oneshot(req).await.unwrap_or_else(|n| match n {});
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let shared = Arc::new(Mutex::new(SharedState {
        body,
        read: 0,
        failed: false,
    }));
    let req = Request::from_parts(parts, Body::new(SharedBody(shared.clone())));
    let mut resp = router.oneshot(req).await.unwrap_or_else(|n| match n {});
    let fits = declared.is_none_or(|n| n <= settings.max_drain_bytes as u64);
    let drained = fits
        && tokio::time::timeout(
            settings.header_read_timeout,
            drain(&shared, settings.max_drain_bytes as u64),
        )
        .await
        .unwrap_or(false);
    if !drained {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads the rest of the body; false when it fails or exceeds `max`.
async fn drain(shared: &Arc<Mutex<SharedState>>, max: u64) -> bool {
    std::future::poll_fn(|cx| {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if s.failed || s.read > max {
                return Poll::Ready(false);
            }
            if s.body.is_end_stream() {
                return Poll::Ready(true);
            }
            match s.poll_frame(cx) {
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

struct SharedState {
    body: Incoming,
    read: u64,
    failed: bool,
}

impl SharedState {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.read += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.failed = true,
            _ => {}
        }
        r
    }
}

/// The request body as the handler sees it; the connection keeps the
/// underlying body to drain it afterwards.
struct SharedBody(Arc<Mutex<SharedState>>);

impl HttpBody for SharedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .body
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .body
            .size_hint()
    }
}

/// A response body holding its request's guard until written.
struct Guarded {
    body: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
