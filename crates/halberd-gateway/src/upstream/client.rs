//! The HTTP/1.1 client for network providers: a pool of connections per
//! provider, each driven by the task that uses it.
//!
//! A pooled client with connection tasks of its own (reqwest, hyper-util's
//! client) hands a response body from the connection's task to the reader
//! through a channel of one chunk: a streamed answer then costs a task
//! wake-up (often across threads) and a write to the client per event, and
//! the request head a hand-over each way. Here the exchange's own task polls
//! the connection (`Conn::drive`) while it waits for the head and while it
//! reads the body, so reading the socket, decoding, inspecting and writing to
//! the client happen on one task, and every event already read from the
//! socket is handed on at once, gathered into one chunk ([`DrivenBody`]).
//! Nothing is held back that has arrived: gathering takes only what is
//! already in memory.
//!
//! HTTP/1.1 only, over TLS too (ALPN offers `http/1.1` alone): one connection
//! per exchange in flight, as the providers' own SDKs use by default. TLS is
//! rustls with the platform's verifier (the system's trust store), plus a
//! provider's own `ca_file` for a self-hosted server behind a private CA.
//!
//! A connection goes back to the pool only after its response was read to
//! the end; a body dropped halfway (the client went away, a timeout) drops the
//! connection with it, which is how the upstream request is cancelled. A
//! pooled connection is checked before reuse (polled once: a provider that
//! closed it is noticed), and a request that a pooled connection turns out
//! unable to take (closed before anything was written) is sent once more on a
//! new connection; a request already written is never sent twice. Without
//! traffic, a task looks at the idle connections every [`REAP_EVERY`] and
//! closes those the provider closed or that idled past [`IDLE_TIMEOUT`].

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::BodyError;

/// Idle connections older than this are closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections kept per provider.
const MAX_IDLE: usize = 512;
/// How often idle connections are looked at while no exchange comes to
/// reuse them: those the provider closed, or idle past [`IDLE_TIMEOUT`], are
/// closed on our side too instead of holding their sockets until traffic
/// returns.
pub const REAP_EVERY: Duration = Duration::from_secs(15);
/// The most bytes gathered into one chunk before it is handed on.
const MAX_GATHER: usize = 256 * 1024;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
}

/// Where a provider is and how to reach it, prepared once.
pub struct Client {
    host: Host,
    port: u16,
    proxy: Option<Proxy>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

/// An HTTP proxy that providers are reached through, by `CONNECT` tunnels.
/// Its `Debug` shows the credentials as `Sensitive`.
#[derive(Debug, Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` from the proxy URL's user and password.
    authorization: Option<HeaderValue>,
}

impl Proxy {
    /// From `http://[user:password@]host:port`; the message never repeats
    /// the password.
    pub fn parse(text: &str) -> Result<Proxy, String> {
        let url = url::Url::parse(text).map_err(|_| "is not a valid URL".to_owned())?;
        if url.scheme() != "http" {
            return Err("must be an http:// proxy URL (the tunnel to the provider is TLS)".into());
        }
        if url.path() != "/" || url.query().is_some() {
            return Err("must be http://[user:password@]host:port, without a path".into());
        }
        let host = url.host_str().ok_or("has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            use base64::Engine as _;
            // Userinfo is percent-encoded, not form-encoded: a `+` stays a `+`.
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(url.username());
            let password = decode(url.password().unwrap_or_default());
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| "has credentials that cannot be sent".to_owned())?;
            v.set_sensitive(true);
            Some(v)
        };
        Ok(Proxy {
            host,
            port,
            authorization,
        })
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Not expired and still open: one poll reads what the provider did
    /// meanwhile (a close, or stray bytes, an error, ends the connection).
    fn alive(&mut self) -> bool {
        if self.since.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        self.conn
            .drive(&mut Context::from_waker(std::task::Waker::noop()));
        self.conn.is_open()
    }
}

impl Client {
    /// A client for `url`'s origin (http or https). `tls` is required for
    /// https.
    pub fn new(
        url: &url::Url,
        tls: Option<Arc<rustls::ClientConfig>>,
        proxy: Option<Proxy>,
        connect_timeout: Duration,
    ) -> Result<Client, String> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => Host::Name(d.to_owned()),
            Some(url::Host::Ipv4(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => Host::Ip(ip.into()),
            None => return Err("the URL has no host".into()),
        };
        let port = url
            .port_or_known_default()
            .ok_or("the URL has no port and its scheme no default")?;
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => {
                let name = match &host {
                    Host::Name(d) => ServerName::try_from(d.clone())
                        .map_err(|_| format!("{d:?} is not a TLS server name"))?,
                    Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                };
                Some((TlsConnector::from(config), name))
            }
            ("https", None) => return Err("an https URL needs a TLS configuration".into()),
            (other, _) => return Err(format!("scheme {other:?} is not http or https")),
        };
        if proxy.is_some() && tls.is_none() {
            return Err("a proxy applies to an https:// base_url only".into());
        }
        Ok(Client {
            host,
            port,
            proxy,
            tls,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` (origin-form URI, `Host` set) and waits for the response
    /// head, driving the connection meanwhile. The connection comes back with
    /// the response: it must be driven while the body is read, and is
    /// returned to the pool by [`DrivenBody`] when the body ends.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        loop {
            let (mut conn, pooled) = match self.checkout() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            let result = std::future::poll_fn(|cx| {
                conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => return Ok((resp, conn)),
                // A pooled connection closed before it took the request:
                // nothing was written, a new connection takes it.
                Err(mut e) if pooled => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Http(e.into_error())),
                },
                Err(e) => return Err(SendError::Http(e.into_error())),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = match (&self.proxy, &self.host) {
            (Some(proxy), _) => {
                tokio::time::timeout_at(
                    deadline,
                    TcpStream::connect((proxy.host.as_str(), proxy.port)),
                )
                .await
            }
            (None, Host::Name(name)) => {
                tokio::time::timeout_at(deadline, TcpStream::connect((name.as_str(), self.port)))
                    .await
            }
            (None, Host::Ip(ip)) => {
                tokio::time::timeout_at(deadline, TcpStream::connect((*ip, self.port))).await
            }
        }
        .map_err(|_| SendError::ConnectTimeout)?
        .map_err(SendError::Connect)?;
        let tcp = match &self.proxy {
            None => tcp,
            Some(proxy) => tokio::time::timeout_at(deadline, self.tunnel(tcp, proxy))
                .await
                .map_err(|_| SendError::ConnectTimeout)??,
        };
        // Requests and events are small writes that must go out at once.
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| SendError::ConnectTimeout)?
                    .map_err(SendError::Tls)?;
                Io::Tls(Box::new(tls))
            }
        };
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Conn {
            sender,
            driver: Some(driver),
        })
    }

    /// Asks the proxy for a tunnel to the provider (`CONNECT host:port`).
    async fn tunnel(&self, mut tcp: TcpStream, proxy: &Proxy) -> Result<TcpStream, SendError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let authority = match &self.host {
            Host::Name(n) => format!("{n}:{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            Host::Ip(ip) => format!("{ip}:{}", self.port),
        };
        let mut head =
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
        if let Some(auth) = &proxy.authorization {
            head.extend_from_slice(b"Proxy-Authorization: ");
            head.extend_from_slice(auth.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        tcp.write_all(&head).await.map_err(SendError::Connect)?;
        // The answer's head, byte by byte: nothing after it may be consumed,
        // it belongs to the TLS handshake.
        let mut answer = Vec::with_capacity(128);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= 8192 {
                return Err(SendError::Proxy("its answer to CONNECT is too long".into()));
            }
            let byte = tcp.read_u8().await.map_err(|_| {
                SendError::Proxy("it closed the connection before answering CONNECT".into())
            })?;
            answer.push(byte);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&answer) {
            Ok(httparse::Status::Complete(_)) => match response.code {
                Some(200..=299) => Ok(tcp),
                Some(code) => Err(SendError::Proxy(format!(
                    "it refused the tunnel with status {code}"
                ))),
                None => Err(SendError::Proxy(
                    "its answer to CONNECT has no status".into(),
                )),
            },
            _ => Err(SendError::Proxy("its answer to CONNECT is not HTTP".into())),
        }
    }

    /// Starts the task that closes dead and expired idle connections every
    /// `every`; it ends when the client is dropped. Without a runtime (a
    /// config check) there is nothing to start.
    pub fn reap_idle(self: &Arc<Self>, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(client) = client.upgrade() else {
                    return;
                };
                client.prune();
            }
        });
    }

    /// Closes the idle connections that expired or that the provider
    /// closed (one poll each reads the close); how many are left.
    fn prune(&self) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(Idle::alive);
        idle.len()
    }

    /// The most recently used idle connection that is still open and ready.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut i) = idle.pop() {
            if i.alive() && i.conn.sender.is_ready() {
                return Some(i.conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        if !conn.is_open() || !conn.sender.is_ready() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest go first: they are the likeliest to be closed by the
        // provider, and the newest are reused first.
        idle.retain(|i| i.since.elapsed() <= IDLE_TIMEOUT);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// One HTTP/1.1 connection: the handle that sends requests and the state
/// machine that does its I/O, which whoever waits on it must poll.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended.
    driver: Option<http1::Connection<TokioIo<Io>, Full<Bytes>>>,
}

impl Conn {
    /// Does the connection's pending I/O (writes the request, reads and
    /// decodes what has arrived). A connection that has ended is dropped at
    /// once: a request still queued on it then fails (and comes back, to be
    /// sent elsewhere) instead of waiting for a connection nobody drives.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && Pin::new(driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    fn is_open(&self) -> bool {
        self.driver.is_some()
    }
}

/// A response body read on the reader's task, its connection driven as it
/// is read, and every chunk already decoded handed on together.
pub struct DrivenBody {
    body: Incoming,
    conn: Option<Conn>,
    client: Arc<Client>,
    /// The body failed after some bytes were gathered: those go first.
    failed: bool,
    ended: bool,
}

impl DrivenBody {
    pub fn new(body: Incoming, conn: Conn, client: Arc<Client>) -> DrivenBody {
        DrivenBody {
            body,
            conn: Some(conn),
            client,
            failed: false,
            ended: false,
        }
    }
}

impl Stream for DrivenBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            this.failed = false;
            this.ended = true;
            return Poll::Ready(Some(Err(BodyError::Read)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let mut gathered = Gathered::default();
        loop {
            if let Some(conn) = &mut this.conn {
                conn.drive(cx);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        gathered.push(data);
                    }
                    if gathered.len() >= MAX_GATHER {
                        return Poll::Ready(Some(Ok(gathered.take())));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    this.conn = None;
                    if gathered.is_empty() {
                        this.ended = true;
                        return Poll::Ready(Some(Err(BodyError::Read)));
                    }
                    this.failed = true;
                    return Poll::Ready(Some(Ok(gathered.take())));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Some(mut conn) = this.conn.take() {
                        // Lets the connection see the end of its exchange
                        // and become ready for the next.
                        conn.drive(cx);
                        this.client.checkin(conn);
                    }
                    return Poll::Ready((!gathered.is_empty()).then(|| Ok(gathered.take())));
                }
                Poll::Pending if gathered.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Some(Ok(gathered.take()))),
            }
        }
    }
}

/// Chunks joined without a copy when there is only one.
#[derive(Default)]
struct Gathered {
    first: Option<Bytes>,
    more: BytesMut,
}

impl Gathered {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &self.first {
            None => self.first = Some(data),
            Some(first) => {
                if self.more.is_empty() {
                    self.more.reserve(first.len() + data.len());
                    self.more.extend_from_slice(first);
                }
                self.more.extend_from_slice(&data);
            }
        }
    }

    fn len(&self) -> usize {
        match &self.first {
            None => 0,
            Some(_) if !self.more.is_empty() => self.more.len(),
            Some(first) => first.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn take(&mut self) -> Bytes {
        let first = self.first.take().unwrap_or_default();
        if self.more.is_empty() {
            first
        } else {
            std::mem::take(&mut self.more).freeze()
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS configuration for providers: the platform's verifier (the
/// system's trust store) and, for a provider with a `ca_file`, its roots
/// besides. HTTP/1.1 is the only protocol offered.
pub fn tls_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| format!("cannot set up TLS verification: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `Host` header for `url`: its host, with the port when not the
/// scheme's default.
pub fn host_header(url: &url::Url) -> Result<HeaderValue, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let value = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&value).map_err(|_| format!("{value:?} cannot be a Host header"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request on a connection with `events`
    /// SSE events, each its own HTTP chunk, all in one write.
    async fn chunked_server(events: usize) -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        // Each request of these tests fits one read.
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let mut out =
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                        for i in 0..events {
                            let event = format!("data: {{\"n\":{i}}}\n\n");
                            out.extend_from_slice(
                                format!("{:x}\r\n{event}\r\n", event.len()).as_bytes(),
                            );
                        }
                        out.extend_from_slice(b"0\r\n\r\n");
                        tcp.write_all(&out).await.unwrap();
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// The proxy's credentials are percent-decoded (a `+` stays a `+`)
    /// and never shown by `Debug`.
    #[test]
    fn proxy_credentials_are_percent_decoded_and_hidden() {
        use base64::Engine as _;
        let proxy = Proxy::parse("http://ops:a+b%20c%40d@proxy.internal:3128").unwrap();
        let auth = proxy.authorization.as_ref().unwrap();
        let token = auth.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        assert_eq!(decoded, b"ops:a+b c@d");
        assert!(!format!("{proxy:?}").contains(token));
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.internal", 3128));
    }

    /// A server that answers one request per connection (keep-alive, no
    /// `Connection: close`) and closes the connection 50 ms later.
    async fn closing_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    if tcp.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                });
            }
        });
        addr
    }

    async fn exchange(client: &Arc<Client>, addr: std::net::SocketAddr) {
        let (resp, conn) = client.send(request(addr)).await.unwrap();
        let mut body = DrivenBody::new(resp.into_body(), conn, client.clone());
        while let Some(piece) = body.next().await {
            piece.unwrap();
        }
    }

    /// Without traffic, the reaper closes a pooled connection the provider
    /// closed, and keeps one that is still open.
    #[tokio::test]
    async fn idle_connections_the_provider_closed_are_reaped_and_live_ones_kept() {
        let client_for = |addr: std::net::SocketAddr| {
            let url = url::Url::parse(&format!("http://{addr}/v1")).unwrap();
            let client = Arc::new(Client::new(&url, None, None, Duration::from_secs(5)).unwrap());
            client.reap_idle(Duration::from_millis(100));
            client
        };
        let closing = closing_server().await;
        let (live, _) = chunked_server(2).await;
        let (to_closing, to_live) = (client_for(closing), client_for(live));
        exchange(&to_closing, closing).await;
        exchange(&to_live, live).await;
        assert_eq!(to_closing.idle.lock().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(to_closing.idle.lock().unwrap().len(), 0);
        assert_eq!(to_live.idle.lock().unwrap().len(), 1);
    }

    /// A body without a length, ended by the provider closing the
    /// connection (HTTP/1.0 style), arrives whole, and the closed
    /// connection is not pooled.
    #[tokio::test]
    async fn a_body_ended_by_the_connection_closing_arrives_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer: String = (0..2000).map(|i| format!("{i},")).collect();
        let sent = answer.clone();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            assert!(tcp.read(&mut buf).await.unwrap() > 0);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n";
            tcp.write_all(head.as_bytes()).await.unwrap();
            for piece in sent.as_bytes().chunks(1000) {
                tcp.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/v1")).unwrap();
        let client = Arc::new(Client::new(&url, None, None, Duration::from_secs(5)).unwrap());
        let (resp, conn) = client.send(request(addr)).await.unwrap();
        let mut body = DrivenBody::new(resp.into_body(), conn, client.clone());
        let mut text = Vec::new();
        while let Some(piece) = body.next().await {
            text.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(String::from_utf8(text).unwrap(), answer);
        assert_eq!(client.idle.lock().unwrap().len(), 0);
    }

    fn request(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
        Request::post("/v1/chat/completions")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    /// Events that arrived together are handed on together (not one chunk
    /// per event), nothing is lost or reordered, and the connection goes
    /// back to the pool for the next exchange.
    #[tokio::test]
    async fn chunks_already_read_are_handed_on_together_and_the_connection_is_reused() {
        let (addr, accepted) = chunked_server(64).await;
        let url = url::Url::parse(&format!("http://{addr}/v1")).unwrap();
        let client = Arc::new(Client::new(&url, None, None, Duration::from_secs(5)).unwrap());
        let expected: String = (0..64)
            .map(|i| format!("data: {{\"n\":{i}}}\n\n"))
            .collect();
        for _ in 0..3 {
            let (resp, conn) = client.send(request(addr)).await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = DrivenBody::new(resp.into_body(), conn, client.clone());
            let mut pieces = 0;
            let mut text = Vec::new();
            while let Some(piece) = body.next().await {
                pieces += 1;
                text.extend_from_slice(&piece.unwrap());
            }
            assert_eq!(String::from_utf8(text).unwrap(), expected);
            assert!(
                pieces < 16,
                "64 events in one write came as {pieces} pieces"
            );
        }
        assert_eq!(*accepted.lock().unwrap(), 1);
    }
}
