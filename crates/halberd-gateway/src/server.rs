//! The listener loop: connection limit, header limits, a header-read timeout
//! that is really armed (hyper needs a timer for it), HTTP/1.1 and HTTP/2, and a
//! graceful shutdown that stops accepting at once and lets running exchanges,
//! streams included, finish within the grace period.
//!
//! Connections are not allowed to sit idle. hyper's header-read timeout only
//! starts once a request's first bytes arrive, so a connection that never
//! sends a byte, or a keep-alive connection between requests, would hold a
//! connection slot for ever (4,100 silent connections locked every client
//! out). Each connection therefore has a watcher: with no request in flight,
//! a connection that has served nothing is closed `header_read_timeout` after
//! it was accepted, and one that has is closed `idle_timeout` after its last
//! response ended. At the connection limit the connection idle the longest
//! gives way to the new one. Closing is hyper's graceful shutdown, which never
//! cuts a request in flight: it only stops keep-alive.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use crate::config::Limits;
use crate::wire::{Checked, HeadClock, HeadLimits};

/// Tells the watcher when a request head is being held by [`Checked`]:
/// hyper sees only complete heads, so its header-read timeout never runs,
/// and the watcher times the head instead.
struct HeadTimer {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl HeadClock for HeadTimer {
    fn head_pending(&self, pending: bool) {
        let since = if pending {
            millis_since(self.epoch).saturating_add(1)
        } else {
            0
        };
        self.conn.head_since_ms.store(since, Ordering::Release);
        // Only a new pending head brings the deadline closer; a completed
        // one is seen when the deadline comes.
        if pending {
            self.conn.changed.notify_one();
        }
    }

    fn head_passed(&self) {
        // A request that hyper has not yet handed to the router (a busy
        // worker, a slow first use) is not an idle connection to close.
        self.conn
            .idle_since_ms
            .store(millis_since(self.epoch), Ordering::Release);
    }
}

/// What the watcher and the accept loop know of one connection.
#[derive(Debug)]
struct Conn {
    /// Requests whose response has not finished (body included).
    in_flight: AtomicUsize,
    /// Requests served so far.
    served: AtomicU64,
    /// When the first bytes of a head not yet complete arrived, in
    /// milliseconds since the server's epoch plus one; 0 when none is.
    head_since_ms: AtomicU64,
    /// When the connection was accepted or last finished a response, in
    /// milliseconds since the server's epoch.
    idle_since_ms: AtomicU64,
    /// Asks the connection to close once idle.
    close: Notify,
    /// A head is pending, or the first response ended: the watcher
    /// recomputes its deadline.
    changed: Notify,
}

/// How long a connection must have been idle before it is closed to make
/// room at the connection limit. A connection just accepted may have its
/// first request in the socket's buffer, unread; closing it would lose it.
const EVICT_AFTER: Duration = Duration::from_secs(1);

/// Live connections, for choosing which gives way at the limit.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    /// Asks the connection idle the longest (and at least [`EVICT_AFTER`]) to
    /// close; false if none is.
    fn evict_idlest(&self, now_ms: u64) -> bool {
        let Ok(conns) = self.conns.lock() else {
            return false;
        };
        let idle_enough = u64::try_from(EVICT_AFTER.as_millis()).unwrap_or(u64::MAX);
        let idlest = conns
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|c| (c.idle_since_ms.load(Ordering::Acquire), c))
            .filter(|(since, _)| now_ms.saturating_sub(*since) >= idle_enough)
            .min_by_key(|(since, _)| *since)
            .map(|(_, c)| c);
        match idlest {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses heads over its own limits with an empty 400/431. On
        // HTTP/1 [`Checked`] refuses heads over ours before hyper sees them,
        // and on HTTP/2 [`Tracked`] does; hyper's, twice ours, is a backstop.
        .max_buf_size(limits.max_header_bytes.saturating_mul(2))
        .max_headers(limits.max_headers.saturating_mul(2));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        );
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        // Take a connection slot before accepting. At the limit, the
        // connection idle the longest is asked to close and its slot is
        // awaited; with none idle, new connections wait in the kernel's
        // backlog instead of being served badly.
        let permit = loop {
            if let Ok(p) = permits.clone().try_acquire_owned() {
                break Some(p);
            }
            registry.evict_idlest(millis_since(epoch));
            tokio::select! {
                p = permits.clone().acquire_owned() => break p.ok(),
                // Look again for a connection that has become idle enough.
                () = tokio::time::sleep(EVICT_AFTER / 4) => {}
                () = &mut shutdown => break None,
            }
        };
        let Some(permit) = permit else { break };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn_state = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(millis_since(epoch)),
            close: Notify::new(),
            changed: Notify::new(),
        });
        next_id += 1;
        let id = next_id;
        if let Ok(mut conns) = registry.conns.lock() {
            conns.insert(id, conn_state.clone());
        }
        let service = TowerToHyperService::new(Tracked {
            router: router.clone(),
            conn: conn_state.clone(),
            epoch,
            head_limits: HeadTooLarge {
                bytes: limits.max_header_bytes,
                fields: limits.max_headers,
            },
        });
        let stream = Checked::new(
            stream,
            HeadTimer {
                conn: conn_state.clone(),
                epoch,
            },
            HeadLimits {
                bytes: limits.max_header_bytes,
                fields: limits.max_headers,
            },
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let registry = registry.clone();
        let mut stop = stop_rx.clone();
        let timeouts = (limits.header_read_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            watch_connection(conn, &conn_state, &mut stop, timeouts, epoch).await;
            if let Ok(mut conns) = registry.conns.lock() {
                conns.remove(&id);
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

type Connection = auto::UpgradeableConnection<
    'static,
    TokioIo<Checked<tokio::net::TcpStream, HeadTimer>>,
    TowerToHyperService<Tracked>,
    TokioExecutor,
>;

/// Runs one connection to its end, closing it (gracefully: never in the
/// middle of a request) when it has been idle too long, when the accept loop
/// needs its slot, or when the server stops.
async fn watch_connection(
    conn: Connection,
    state: &Conn,
    stop: &mut watch::Receiver<bool>,
    (first_request, idle): (Duration, Duration),
    epoch: Instant,
) {
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let limit = if state.served.load(Ordering::Acquire) == 0 {
            first_request
        } else {
            idle
        };
        let idle_since = epoch + Duration::from_millis(state.idle_since_ms.load(Ordering::Acquire));
        // Requests end without waking the watcher (a wake-up per request
        // cost more than this): while one is in flight the watcher looks
        // again every `limit` (at most a second), so that an idle connection
        // is still closed `limit` after its last response; it must not spin
        // on a deadline already past while a long stream runs.
        let mut deadline = if state.in_flight.load(Ordering::Acquire) > 0 {
            Instant::now() + limit.min(Duration::from_secs(1))
        } else {
            idle_since + limit
        };
        // A head under way must be complete within the header-read timeout
        // of its first bytes, however long the connection may stay idle.
        let head_since = state.head_since_ms.load(Ordering::Acquire);
        if head_since > 0 {
            deadline = deadline.min(epoch + Duration::from_millis(head_since - 1) + first_request);
        }
        tokio::select! {
            _ = conn.as_mut() => return,
            () = state.changed.notified() => {}
            () = state.close.notified(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(deadline), if !closing => {
                // A response may have ended (moving `idle_since`), a head
                // completed, or a request be under way meanwhile: close only
                // what is still over its time now.
                let since = Duration::from_millis(state.idle_since_ms.load(Ordering::Acquire));
                let limit = if state.served.load(Ordering::Acquire) == 0 {
                    first_request
                } else {
                    idle
                };
                let head = state.head_since_ms.load(Ordering::Acquire);
                let now = Instant::now();
                let head_late = head > 0
                    && now >= epoch + Duration::from_millis(head - 1) + first_request;
                if state.in_flight.load(Ordering::Acquire) == 0
                    && (now >= epoch + since + limit || head_late)
                {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The router, counting the requests in flight on one connection: a request
/// is in flight from its head until its response body has been sent (or
/// dropped), so a long stream is never taken for an idle connection.
#[derive(Clone)]
struct Tracked {
    router: Router,
    conn: Arc<Conn>,
    epoch: Instant,
    head_limits: HeadTooLarge,
}

/// Marks a request whose head is over `[server] max_header_bytes` or
/// `max_headers` (the limits it carries); the edge refuses it with 431 in the
/// caller's error shape.
#[derive(Clone, Copy, Debug)]
pub struct HeadTooLarge {
    pub bytes: usize,
    pub fields: usize,
}

impl HeadTooLarge {
    /// The head's size as it came on the wire (HTTP/1.1 framing), near enough:
    /// request line and one `name: value\r\n` per field.
    fn exceeded_by<B>(self, req: &http::Request<B>) -> bool {
        let line = req.method().as_str().len()
            + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
            + 12;
        let fields: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        req.headers().len() > self.fields || line + fields + 2 > self.bytes
    }
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let refused_as_large = req.headers().get(crate::wire::MARKER).is_some_and(|v| {
            crate::wire::Fault::from_marker(v.as_bytes()) == crate::wire::Fault::TooLarge
        });
        // HTTP/1 heads were measured exactly by `Checked`; only HTTP/2 ones
        // (which it passes through) are measured here.
        let h2_over = req.version() == http::Version::HTTP_2 && self.head_limits.exceeded_by(&req);
        if refused_as_large || h2_over {
            req.extensions_mut().insert(self.head_limits);
        }
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight {
            conn: self.conn.clone(),
            epoch: self.epoch,
        };
        let call = tower::ServiceExt::oneshot(self.router.clone(), req);
        Box::pin(async move {
            let resp = call.await?;
            Ok(resp.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// One request in flight; its end makes the connection idle from now.
struct InFlight {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let served_before = self.conn.served.fetch_add(1, Ordering::AcqRel);
        self.conn
            .idle_since_ms
            .store(millis_since(self.epoch), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        // The first response switches the watcher from the first-request
        // limit to the idle one, which may be sooner: it must recompute now.
        // Later ones need no wake-up (see `watch_connection`).
        if served_before == 0 {
            self.conn.changed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until dropped.
    struct GuardedBody {
        #[pin]
        inner: Body,
        _guard: InFlight,
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}
