//! The accept loop: header-read and idle timeouts on every connection, a cap on concurrent
//! connections, and an overflow that keeps `/healthz` answering at the cap.
//!
//! `axum::serve` has none of these knobs, so connections are served here with hyper's HTTP/1
//! builder (the same stack `axum::serve` uses, without HTTP/2, which `serve` never spoke):
//!
//! - **Header-read timeout** (hyper's): a request head must arrive complete within it,
//!   counted from when the connection opens or the previous response ended. A slow-loris
//!   client that trickles a head is closed.
//! - **Idle timeout**: a connection on which no byte moves for that long is closed (a client
//!   that stopped reading, or a kept-alive connection with nothing to ask). Event streams are
//!   never idle: they send a keep-alive comment well within it.
//! - **Connection cap**: at most `max_connections` are served normally. Past the cap up to
//!   [`overflow_connections`] more are accepted and answer only `/healthz` (everything else
//!   is `503 busy` with `Retry-After`), with a short header timeout and no keep-alive, so a
//!   load balancer's health check still gets its answer while slow clients hold every slot.
//!   Past that, a connection is closed at once. The first refusal of a saturation episode is
//!   logged at `warn`, and the counts are in `/metrics`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::state::AppState;

/// The header-read timeout of overflow connections (or the configured one, if shorter).
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How many connections past `max_connections` are still accepted to answer `/healthz`
/// only: an eighth of the cap, at least 8.
pub fn overflow_connections(max_connections: usize) -> usize {
    (max_connections / 8).max(8)
}

/// The connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serve `listener` until `shutdown` resolves, then stop accepting, let every connection
/// finish its in-flight request (hyper's graceful shutdown) and return when all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    busy: Router,
    state: AppState,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let overflow = Arc::new(Semaphore::new(overflow_connections(limits.max_connections)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut saturated = false;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    // Errors of one half-open connection (reset before accept) are harmless.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::error!(error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (service, permit, header_timeout, keep_alive) = if let Ok(p) =
            slots.clone().try_acquire_owned()
        {
            if saturated {
                saturated = false;
                tracing::info!(
                    max_connections = limits.max_connections,
                    "below the connection cap again"
                );
            }
            (app.clone(), p, limits.header_read_timeout, true)
        } else {
            state.count_over_cap();
            if !saturated {
                saturated = true;
                tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections answer /healthz only (503 busy elsewhere) until some close; raise --max-connections if this is normal load"
                    );
            }
            match overflow.clone().try_acquire_owned() {
                Ok(p) => (
                    busy.clone(),
                    p,
                    limits.header_read_timeout.min(OVERFLOW_HEADER_TIMEOUT),
                    false,
                ),
                Err(_) => {
                    tracing::debug!("connection cap and overflow full: connection closed");
                    drop(stream);
                    continue;
                }
            }
        };
        conns.spawn(connection(
            stream,
            service,
            permit,
            header_timeout,
            limits.idle_timeout,
            keep_alive,
            drain_rx.clone(),
            state.clone(),
        ));
    }
    drop(listener);
    let _ = drain_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// Serve one connection until it ends, idles out or the server drains.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    app: Router,
    _permit: OwnedSemaphorePermit,
    header_timeout: Duration,
    idle_timeout: Duration,
    keep_alive: bool,
    mut drain: watch::Receiver<bool>,
    state: AppState,
) {
    let _open = state.connection_opened();
    let activity = Activity::new();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(keep_alive);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.last() + idle_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.wait_for(|d| *d), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if activity.last() + idle_timeout <= Instant::now() {
                    tracing::debug!(idle_s = idle_timeout.as_secs(), "idle connection closed");
                    return;
                }
            }
        }
    }
}

/// When a byte last moved on a connection (as an offset from its start, tokio's clock).
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            offset_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when bytes move through it.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
