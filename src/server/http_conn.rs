//! One HTTP connection of the HTTP server, with the limits a browser-facing port needs:
//! HTTP/2 told from HTTP/1.1 by the first bytes (read within the header timeout, then
//! replayed), request bodies that must be complete within the same timeout, a connection
//! with no request in flight for that long closed (HTTP/1.1 keep-alive and idle HTTP/2
//! alike), a connection whose peer stops reading (writes blocked for that long) dropped,
//! at most 32 concurrent HTTP/2 streams, and the peer's address passed on to the gRPC
//! service (for GetStatus's subscriber list).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

/// Most concurrent requests (streams) one HTTP/2 connection may carry.
const MAX_H2_STREAMS: u32 = 32;

/// The HTTP/2 connection preface a plain-text HTTP/2 client starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read from a connection before hyper gets it (to tell HTTP/2 from HTTP/1.1):
/// hyper reads them first.
#[derive(Debug, Default)]
pub struct FirstBytes {
    buf: [u8; 24],
    pos: usize,
    len: usize,
}

/// Reads a plain-text connection's first bytes (at most the HTTP/2 preface's 24) within
/// `limit`: whether it speaks HTTP/2, and the bytes read. None when the peer sends
/// nothing in time or leaves.
pub async fn sniff_http2(sock: &mut tokio::net::TcpStream, limit: Duration) -> Option<(bool, FirstBytes)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut first = FirstBytes::default();
    while first.len < first.buf.len() {
        let got = tokio::time::timeout_at(deadline, sock.read(&mut first.buf[first.len..])).await.ok()?.ok()?;
        if got == 0 {
            return None;
        }
        first.len += got;
        if first.buf[..first.len] != H2_PREFACE[..first.len] {
            return Some((false, first));
        }
    }
    Some((true, first))
}

/// Requests in flight on one connection, since when it has had none, and since when its
/// writes have been blocked (the peer not reading).
struct Activity {
    opened: Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished.
    idle_since_ms: AtomicU64,
    /// 1 + milliseconds after `opened` when a write first found the socket full; 0 while
    /// writes go through.
    blocked_since_ms: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
    fn write_result<T>(&self, res: Poll<T>) -> Poll<T> {
        if res.is_pending() {
            let now = self.opened.elapsed().as_millis() as u64 + 1;
            let _ = self.blocked_since_ms.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        } else {
            self.blocked_since_ms.store(0, Ordering::Release);
        }
        res
    }
    fn blocked_for(&self) -> Option<Duration> {
        let since = self.blocked_since_ms.load(Ordering::Acquire);
        (since > 0).then(|| self.opened.elapsed().saturating_sub(Duration::from_millis(since - 1)))
    }
    fn idle_for(&self) -> Option<Duration> {
        (self.inflight.load(Ordering::Acquire) == 0).then(|| {
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
            self.opened.elapsed().saturating_sub(since)
        })
    }
}

/// The connection's socket as hyper sees it: the first bytes again, then the socket;
/// writes that block are noted in [`Activity`].
struct ConnIo<S> {
    first: FirstBytes,
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let f = &mut self.first;
        if f.pos < f.len {
            let n = buf.remaining().min(f.len - f.pos);
            buf.put_slice(&f.buf[f.pos..f.pos + n]);
            f.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_result(res)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_result(res)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_result(res)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One request in flight: ends when its response body is dropped (sent or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since_ms.store(self.0.opened.elapsed().as_millis() as u64, Ordering::Release);
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    inner: Body,
    _inflight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must be complete by a deadline (a client trickling a body one byte
/// at a time would otherwise hold its connection, and a slot, for ever).
struct Deadlined {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadlined {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BoxError::from))),
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err("the request body did not arrive within http.header_timeout_s".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection until the peer leaves, it has been idle for `timeout` (no
/// request in flight), or an error.
pub async fn serve_connection<S>(
    io: S,
    first: FirstBytes,
    h2: bool,
    app: axum::Router,
    timeout: Duration,
    peer: TcpConnectInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        inflight: AtomicUsize::new(0),
        idle_since_ms: 0.into(),
        blocked_since_ms: 0.into(),
    });
    let tracker = activity.clone();
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let inflight = tracker.begin();
        let mut req = req.map(|b| Body::new(Deadlined { inner: b, deadline: Box::pin(tokio::time::sleep(timeout)) }));
        req.extensions_mut().insert(peer.clone());
        let app = app.clone();
        async move {
            let resp: Response<Body> = app.oneshot(req).await?;
            Ok::<_, Infallible>(resp.map(|b| Body::new(Tracked { inner: b, _inflight: inflight })))
        }
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = TokioIo::new(ConnIo { first, inner: io, activity: activity.clone() });
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_H2_STREAMS)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20))
            .serve_connection(io, service);
        until_idle(conn, &activity, timeout, |c| c.graceful_shutdown()).await;
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(io, service);
        until_idle(conn, &activity, timeout, |c| c.graceful_shutdown()).await;
    }
}

/// Drives `conn`; once no request has been in flight for `timeout`, shuts it down
/// gracefully (HTTP/2: GOAWAY), and drops it if the peer has not let it close within
/// `timeout` more (a peer that does not answer HTTP/2's closing PING). A connection whose
/// writes have been blocked for `timeout` (a peer that stopped reading, e.g. a stalled
/// Subscribe) is dropped at once: its slot is worth more than its stream.
async fn until_idle<C>(conn: C, activity: &Activity, timeout: Duration, shutdown: impl Fn(Pin<&mut C>))
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let ended = |res: Result<(), hyper::Error>| {
        if let Err(e) = res {
            tracing::debug!("HTTP connection: {e}");
        }
    };
    loop {
        tokio::select! {
            res = conn.as_mut() => return ended(res),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if activity.blocked_for().is_some_and(|blocked| blocked >= timeout) {
                    tracing::debug!("HTTP connection: the peer stopped reading; dropped");
                    return;
                }
                if activity.idle_for().is_some_and(|idle| idle >= timeout) {
                    break;
                }
            }
        }
    }
    shutdown(conn.as_mut());
    match tokio::time::timeout(timeout, conn).await {
        Ok(res) => ended(res),
        Err(_) => tracing::debug!("HTTP connection: idle and not closing; dropped"),
    }
}
