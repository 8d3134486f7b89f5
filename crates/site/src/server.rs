//! The site's HTTP/1.1 server: hyper under the axum router, with the limits a server open to
//! a network needs ([`ServerLimits`]):
//!
//! - request headers: a new connection, and one that has begun sending its next request,
//!   must finish the request's headers within `header_timeout`;
//! - idle keep-alive: a connection with no request in flight and nothing sent is closed
//!   after `idle_timeout`;
//! - request bodies: a body that sends nothing for `body_timeout` fails (each piece that
//!   arrives starts the time again, so slow but steady uploads go through);
//! - connections: at most `max_connections` are served at once; more wait in the listen
//!   backlog until one closes. A connection upgraded to a websocket (the proxy to Jupyter)
//!   counts until it closes, and the time-outs above no longer apply to it.
//!
//! While a request is being handled (a session starting, a proxied response streaming) no
//! time-out runs: they are about clients that hold a connection and do nothing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time-outs and the connection cap of the site's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers (from its connection, or from the
    /// first byte of its next request).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may sit with no request.
    pub idle_timeout: Duration,
    /// Time a request body may send nothing.
    pub body_timeout: Duration,
    /// Connections served at once; more wait until one closes.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serve `router` on `listener` with `limits` until the task is dropped. Errors accepting a
/// connection (out of file descriptors, a connection reset before it was accepted) are
/// logged and waited out, never fatal.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: ServerLimits) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            // The semaphore is never closed.
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: give connections time to close.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, router.clone(), limits.clone(), permit));
    }
}

/// What a connection is doing, for its time-outs.
#[derive(Debug)]
struct Activity {
    /// Requests whose responses are not yet fully sent.
    in_flight: usize,
    /// When the connection last became idle (no request in flight).
    idle_since: Instant,
    /// When the headers of the next request began (or the connection opened), while they
    /// are not complete.
    head_since: Option<Instant>,
}

type Shared = Arc<Mutex<Activity>>;

fn lock(a: &Shared) -> std::sync::MutexGuard<'_, Activity> {
    // A panic while holding this lock leaves plain numbers behind: keep going.
    a.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Headers,
    Idle,
}

fn expired(a: &Shared, limits: &ServerLimits, now: Instant) -> Option<Expired> {
    let a = lock(a);
    if a.in_flight > 0 {
        return None;
    }
    match a.head_since {
        Some(t) if now.duration_since(t) >= limits.header_timeout => Some(Expired::Headers),
        Some(_) => None,
        None if now.duration_since(a.idle_since) >= limits.idle_timeout => Some(Expired::Idle),
        None => None,
    }
}

async fn connection(
    stream: TcpStream,
    router: axum::Router,
    limits: Arc<ServerLimits>,
    permit: OwnedSemaphorePermit,
) {
    let now = Instant::now();
    let activity: Shared = Arc::new(Mutex::new(Activity {
        in_flight: 0,
        idle_since: now,
        head_since: Some(now),
    }));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        _permit: permit,
    });
    let router = TowerToHyperService::new(router);
    let service = {
        let activity = activity.clone();
        let body_timeout = limits.body_timeout;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::begin(activity.clone());
            let req = req.map(|b| Body::new(BodyTimeout::new(b, body_timeout)));
            let response = router.call(req);
            async move {
                let response = match response.await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|b| {
                    Body::new(Guarded {
                        inner: b,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let shortest = limits.header_timeout.min(limits.idle_timeout);
    let every = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = tick.tick() => {
                if let Some(why) = expired(&activity, &limits, Instant::now()) {
                    tracing::debug!("closing a connection: {why:?} time-out");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// The socket, noting when a request's first bytes arrive; it holds the connection's slot
/// (also after an upgrade, as long as the websocket lives).
struct Watched {
    inner: TcpStream,
    activity: Shared,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut a = lock(&self.activity);
            if a.in_flight == 0 && a.head_since.is_none() {
                a.head_since = Some(Instant::now());
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One request in flight, from its complete headers to the end (or drop) of its response.
struct InFlight(Shared);

impl InFlight {
    fn begin(activity: Shared) -> Self {
        {
            let mut a = lock(&activity);
            a.in_flight += 1;
            a.head_since = None;
        }
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = lock(&self.0);
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.in_flight == 0 {
            a.idle_since = Instant::now();
        }
    }
}

/// A response body that ends the request's time in flight when hyper is done with it.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body time-out: an error when nothing arrives for `timeout`.
struct BodyTimeout {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BodyTimeout {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        BodyTimeout {
            inner,
            timeout,
            sleep: None,
        }
    }
}

/// The error a request body gets when it sends nothing for the body time-out.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyTimedOut(pub Duration);

impl hyper::body::Body for BodyTimeout {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_outs_apply_only_without_a_request_in_flight() {
        let limits = ServerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(100),
            ..ServerLimits::default()
        };
        let t0 = Instant::now();
        let a: Shared = Arc::new(Mutex::new(Activity {
            in_flight: 0,
            idle_since: t0,
            head_since: Some(t0),
        }));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(expired(&a, &limits, at(9)), None);
        assert_eq!(expired(&a, &limits, at(10)), Some(Expired::Headers));
        let guard = InFlight::begin(a.clone());
        assert_eq!(expired(&a, &limits, at(1000)), None);
        drop(guard);
        let idle = lock(&a).idle_since;
        assert_eq!(expired(&a, &limits, idle + Duration::from_secs(99)), None);
        assert_eq!(
            expired(&a, &limits, idle + Duration::from_secs(100)),
            Some(Expired::Idle)
        );
    }
}
