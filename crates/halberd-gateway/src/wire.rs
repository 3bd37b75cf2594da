//! A check of HTTP/1.1 request framing in front of hyper.
//!
//! hyper answers a request head it cannot take with a bare 400 or 431: no
//! body, no request id, no log line. And a request with both
//! `Content-Length` and `Transfer-Encoding` it frames by the chunked coding
//! alone and closes the connection after, dropping the length before any
//! handler sees the request, so it cannot be refused. RFC 9112 §6.1 allows
//! either; the refusal is the one smuggling defences advise, and every
//! refusal should reach the client in its API's error shape.
//!
//! [`Checked`] wraps the socket and holds each request head back until it
//! is complete. A head that hyper would refuse, or that is ambiguous, never
//! reaches hyper: hyper gets a stand-in head in its place, carrying the
//! original path, `anthropic-version` and `x-request-id` (so the answer has
//! the caller's shape and id) and the [`MARKER`] field naming the fault,
//! with no body and `connection: close`; the edge refuses it and the
//! connection ends. Heads that are fine pass unchanged. Bodies pass straight
//! through, read into hyper's own buffer; the wrapper follows their framing
//! (the length, or the chunked coding to its last chunk and trailers) only
//! to know where the next head starts. HTTP/2 (its preface), upgrades and a
//! body whose chunked framing the wrapper does not follow are passed through
//! untouched, and hyper is the judge of them.
//!
//! The cost is one copy of each head (a few hundred bytes) and one parse
//! with `httparse`, the parser hyper itself uses.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// The field the stand-in head carries, valued with a [`Fault`] name. A
/// client that sends it itself is refused like a malformed request, which
/// harms nobody but itself.
pub const MARKER: &str = "x-halberd-malformed";

/// Why a head was held back from hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not an HTTP/1.x request head at all.
    NotHttp,
    /// Both `Content-Length` and `Transfer-Encoding`.
    AmbiguousLength,
    /// A `Transfer-Encoding` whose last coding is not `chunked`, or one on
    /// HTTP/1.0.
    TransferEncoding,
    /// A `Content-Length` that is not one decimal number.
    ContentLength,
    /// A request target that is not a valid URI.
    Target,
    /// Over `[server] max_header_bytes` or `max_headers`.
    TooLarge,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::NotHttp => "not-http",
            Fault::AmbiguousLength => "ambiguous-length",
            Fault::TransferEncoding => "transfer-encoding",
            Fault::ContentLength => "content-length",
            Fault::Target => "target",
            Fault::TooLarge => "too-large",
        }
    }

    /// The fault a marker's value names; any other value is `NotHttp`.
    pub fn from_marker(value: &[u8]) -> Fault {
        [
            Fault::AmbiguousLength,
            Fault::TransferEncoding,
            Fault::ContentLength,
            Fault::Target,
            Fault::TooLarge,
        ]
        .into_iter()
        .find(|f| f.as_str().as_bytes() == value)
        .unwrap_or(Fault::NotHttp)
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Fault::NotHttp => "the request is not a valid HTTP/1.1 request",
            Fault::AmbiguousLength => {
                "the request has both Content-Length and Transfer-Encoding; send one of them"
            }
            Fault::TransferEncoding => {
                "the request's Transfer-Encoding is not supported: only chunked, on HTTP/1.1"
            }
            Fault::ContentLength => "the request's Content-Length is not a valid length",
            Fault::Target => "the request target is not a valid URI",
            Fault::TooLarge => "request headers are too large",
        }
    }
}

/// Told when a held head starts and ends, so that the connection's watcher
/// can time a slow head as hyper's header-read timeout would have.
pub trait HeadClock: Send + Sync {
    fn head_pending(&self, pending: bool);
    /// A complete head went to hyper: the connection is busy, not idle,
    /// even before hyper hands the request on.
    fn head_passed(&self);
}

/// Where the reader is in the request stream.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Gathering a head in `held`.
    Head,
    /// In a body with this many bytes left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// No more checking: everything passes as it comes.
    Through,
    /// A stand-in head was given; the connection ends after it.
    Refused,
}

/// The chunked coding's states (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the chunk size's hex digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// In a chunk extension, up to its CR.
    Ext {
        value: u64,
    },
    /// After the size line's CR.
    SizeLf {
        value: u64,
    },
    /// In chunk data, this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer line, up to its CR.
    TrailerLine,
    /// After a trailer line's CR; `last` when the line was empty.
    TrailerLf {
        last: bool,
    },
}

/// What one step of the chunk parser decided.
enum Step {
    Next(Chunk),
    /// The body ended with this byte.
    End,
    /// Framing the wrapper does not follow: hyper will judge it.
    Lost,
}

impl Chunk {
    const START: Chunk = Chunk::Size {
        value: 0,
        digits: 0,
    };

    fn step(self, b: u8) -> Step {
        use Chunk::*;
        match self {
            Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    // 16 hex digits overflow nothing; hyper refuses more.
                    if digits >= 16 {
                        return Step::Lost;
                    }
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b - b'A' + 10,
                    };
                    Step::Next(Size {
                        value: (value << 4) | u64::from(d),
                        digits: digits + 1,
                    })
                }
                _ if digits == 0 => Step::Lost,
                b';' | b' ' | b'\t' => Step::Next(Ext { value }),
                b'\r' => Step::Next(SizeLf { value }),
                _ => Step::Lost,
            },
            Ext { value } => match b {
                b'\r' => Step::Next(SizeLf { value }),
                b'\n' => Step::Lost,
                _ => Step::Next(Ext { value }),
            },
            SizeLf { value } => match (b, value) {
                (b'\n', 0) => Step::Next(TrailerStart),
                (b'\n', n) => Step::Next(Data(n)),
                _ => Step::Lost,
            },
            // Data is consumed in bulk by `advance`, never byte by byte.
            Data(_) => Step::Lost,
            DataCr => match b {
                b'\r' => Step::Next(DataLf),
                _ => Step::Lost,
            },
            DataLf => match b {
                b'\n' => Step::Next(Chunk::START),
                _ => Step::Lost,
            },
            TrailerStart => match b {
                b'\r' => Step::Next(TrailerLf { last: true }),
                b'\n' => Step::Lost,
                _ => Step::Next(TrailerLine),
            },
            TrailerLine => match b {
                b'\r' => Step::Next(TrailerLf { last: false }),
                b'\n' => Step::Lost,
                _ => Step::Next(TrailerLine),
            },
            TrailerLf { last } => match (b, last) {
                (b'\n', true) => Step::End,
                (b'\n', false) => Step::Next(TrailerStart),
                _ => Step::Lost,
            },
        }
    }
}

/// The limits a head is held to.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub bytes: usize,
    pub fields: usize,
}

/// How much one read of a head asks the socket for.
const READ_CHUNK: usize = 8 * 1024;

/// A socket whose request heads are checked before hyper reads them.
pub struct Checked<S, C> {
    inner: S,
    clock: C,
    limits: HeadLimits,
    phase: Phase,
    /// Bytes read from the socket and not yet given to hyper: a head being
    /// gathered, and what came after a body's end.
    held: Vec<u8>,
    /// Where the search for the head's end resumes in `held`.
    searched: usize,
    /// Bytes for hyper, given before anything else.
    ready: Vec<u8>,
    ready_at: usize,
    /// The clock was told a head is pending (only when a read leaves a head
    /// incomplete: a head that comes whole costs the watcher nothing).
    armed: bool,
}

impl<S, C: HeadClock> Checked<S, C> {
    pub fn new(inner: S, clock: C, limits: HeadLimits) -> Self {
        Self {
            inner,
            clock,
            limits,
            phase: Phase::Head,
            held: Vec::new(),
            searched: 0,
            ready: Vec::new(),
            ready_at: 0,
            armed: false,
        }
    }

    /// How many of `bytes` belong to the body under way (all of them when it
    /// goes on), moving the phase on.
    fn advance(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match self.phase {
                Phase::Length(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - at);
                    at += take;
                    let left = left - take as u64;
                    if left == 0 {
                        self.phase = Phase::Head;
                        return at;
                    }
                    self.phase = Phase::Length(left);
                }
                Phase::Chunked(Chunk::Data(left)) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.phase = Phase::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                }
                Phase::Chunked(state) => {
                    let b = bytes[at];
                    at += 1;
                    match state.step(b) {
                        Step::Next(next) => self.phase = Phase::Chunked(next),
                        Step::End => {
                            self.phase = Phase::Head;
                            return at;
                        }
                        Step::Lost => {
                            self.phase = Phase::Through;
                            return bytes.len();
                        }
                    }
                }
                Phase::Head | Phase::Through | Phase::Refused => return bytes.len(),
            }
        }
        at
    }

    /// The head in `held[..end]` is complete: queue it (or its stand-in) for
    /// hyper and set the phase for what follows it.
    fn take_head(&mut self, end: usize) {
        let verdict = judge(&self.held[..end], self.limits);
        match verdict {
            Verdict::Pass(next) => {
                self.ready.extend_from_slice(&self.held[..end]);
                self.held.drain(..end);
                self.phase = next;
                self.clock.head_passed();
            }
            Verdict::Refuse(fault, stand_in) => {
                self.ready.extend_from_slice(stand_in.as_bytes());
                self.held = Vec::new();
                self.phase = Phase::Refused;
                tracing::debug!(fault = fault.as_str(), "request head refused");
            }
        }
        self.searched = 0;
        if self.armed {
            self.armed = false;
            self.clock.head_pending(false);
        }
    }

    /// Gives `buf` what `ready` holds; false when it holds nothing.
    fn give_ready(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.ready_at >= self.ready.len() {
            return false;
        }
        let n = buf.remaining().min(self.ready.len() - self.ready_at);
        buf.put_slice(&self.ready[self.ready_at..self.ready_at + n]);
        self.ready_at += n;
        if self.ready_at == self.ready.len() {
            self.ready.clear();
            self.ready_at = 0;
        }
        true
    }
}

/// Where the head in `bytes` ends (after its blank line), searching from
/// `from` (a few bytes back, as the terminator may straddle two reads).
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    bytes[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

enum Verdict {
    /// Pass the head unchanged; the body that follows is framed so.
    Pass(Phase),
    /// Give hyper this stand-in instead.
    Refuse(Fault, String),
}

/// Decides about one complete head.
fn judge(head: &[u8], limits: HeadLimits) -> Verdict {
    if head.starts_with(b"PRI * HTTP/2.0\r\n") {
        return Verdict::Pass(Phase::Through);
    }
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut many;
    let mut req = httparse::Request::new(&mut fields);
    let parsed = match req.parse(head) {
        Err(httparse::Error::TooManyHeaders) => {
            // Only a head with more than 128 fields gets here: count them
            // all, to refuse by the limit when it is over.
            many = vec![httparse::EMPTY_HEADER; limits.fields.saturating_add(1).max(129)];
            req = httparse::Request::new(&mut many);
            req.parse(head)
        }
        other => other,
    };
    let too_large = head.len() > limits.bytes;
    let req = match parsed {
        Ok(httparse::Status::Complete(_)) => req,
        Err(httparse::Error::TooManyHeaders) => {
            return Verdict::Refuse(Fault::TooLarge, stand_in(None, Fault::TooLarge));
        }
        _ => {
            let fault = if too_large {
                Fault::TooLarge
            } else {
                Fault::NotHttp
            };
            return Verdict::Refuse(fault, stand_in(None, fault));
        }
    };
    let target_ok = req
        .path
        .is_some_and(|p| !p.is_empty() && http::Uri::try_from(p).is_ok());
    let framed = if too_large || req.headers.len() > limits.fields {
        Err(Fault::TooLarge)
    } else if !target_ok {
        Err(Fault::Target)
    } else {
        framing(&req)
    };
    match framed {
        Ok(phase) => Verdict::Pass(phase),
        Err(fault) => Verdict::Refuse(fault, stand_in(Some(&req), fault)),
    }
}

/// How the body after a sound head is framed, or what is wrong with it.
fn framing(req: &httparse::Request<'_, '_>) -> Result<Phase, Fault> {
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut upgrade = false;
    for field in req.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(field.value)
                .map_err(|_| Fault::ContentLength)?
                .trim_matches([' ', '\t']);
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Fault::ContentLength);
            }
            let n: u64 = text.parse().map_err(|_| Fault::ContentLength)?;
            if length.is_some_and(|m| m != n) {
                return Err(Fault::ContentLength);
            }
            length = Some(n);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields form one list; the last coding is what counts.
            let last = field
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(|c| c.trim_ascii())
                .unwrap_or_default();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if field.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err(Fault::AmbiguousLength),
        (None, Some(false)) => Err(Fault::TransferEncoding),
        (None, Some(true)) if req.version == Some(0) => Err(Fault::TransferEncoding),
        _ if upgrade || req.method == Some("CONNECT") => Ok(Phase::Through),
        (None, Some(true)) => Ok(Phase::Chunked(Chunk::START)),
        (Some(0) | None, None) => Ok(Phase::Head),
        (Some(n), None) => Ok(Phase::Length(n)),
    }
}

/// The head hyper gets in place of a refused one: what the edge needs to
/// answer in the caller's shape, nothing else, and no body.
fn stand_in(req: Option<&httparse::Request<'_, '_>>, fault: Fault) -> String {
    let path = req
        .and_then(|r| r.path)
        .filter(|p| p.starts_with('/') && p.len() <= 2048 && http::Uri::try_from(*p).is_ok())
        .unwrap_or("/");
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: halberd\r\n");
    for field in req.map(|r| &*r.headers).unwrap_or_default() {
        let keep = ["anthropic-version", "x-request-id"]
            .iter()
            .any(|k| field.name.eq_ignore_ascii_case(k));
        if keep
            && field.value.len() <= 128
            && field.value.iter().all(|b| b.is_ascii_graphic())
            && let Ok(value) = std::str::from_utf8(field.value)
        {
            head.push_str(&field.name.to_ascii_lowercase());
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
    }
    head.push_str(MARKER);
    head.push_str(": ");
    head.push_str(fault.as_str());
    head.push_str("\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    head
}

impl<S: AsyncRead + Unpin, C: HeadClock + Unpin> AsyncRead for Checked<S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.give_ready(buf) {
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Refused => {
                    // Whatever follows a refused head is dropped unread by
                    // hyper; it is drained here so that the socket's real
                    // end still shows (hyper closes a connection whose
                    // reader ends, even with its answer unsent).
                    let mut sink = [0u8; 4096];
                    let mut rb = ReadBuf::new(&mut sink);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    if rb.filled().is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Phase::Through => {
                    if !this.held.is_empty() {
                        this.ready = std::mem::take(&mut this.held);
                        continue;
                    }
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                Phase::Head => {
                    if let Some(end) = head_end(&this.held, this.searched) {
                        this.take_head(end);
                        continue;
                    }
                    this.searched = this.held.len();
                    // A head over the limit is refused; up to twice the limit
                    // its end is awaited, so that the refusal has the
                    // caller's shape, past that it is refused at once.
                    if this.held.len() > this.limits.bytes.saturating_mul(2) {
                        this.take_head(this.held.len());
                        continue;
                    }
                    // Read into the spare capacity, never zeroed first: one
                    // head per request, and an 8 KiB memset each showed in
                    // profiles.
                    let len = this.held.len();
                    this.held.reserve(READ_CHUNK);
                    ready!(poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.held))?;
                    let n = this.held.len() - len;
                    if n == 0 {
                        // The peer closed: hyper gets what there is, and
                        // judges an incomplete head itself.
                        this.phase = Phase::Through;
                        if this.armed {
                            this.armed = false;
                            this.clock.head_pending(false);
                        }
                        continue;
                    }
                    // Told only when this read leaves the head incomplete.
                    if !this.armed && head_end(&this.held, this.searched).is_none() {
                        this.armed = true;
                        this.clock.head_pending(true);
                    }
                }
                Phase::Length(_) | Phase::Chunked(_) => {
                    if !this.held.is_empty() {
                        let held = std::mem::take(&mut this.held);
                        let k = this.advance(&held);
                        this.ready.extend_from_slice(&held[..k]);
                        this.held = held[k..].to_vec();
                        continue;
                    }
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let filled = buf.filled().len();
                    if filled == before {
                        return Poll::Ready(Ok(()));
                    }
                    let k = this.advance(&buf.filled()[before..]);
                    if before + k < filled {
                        this.held.extend_from_slice(&buf.filled()[before + k..]);
                        buf.set_filled(before + k);
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, C: Unpin> AsyncWrite for Checked<S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl HeadClock for std::sync::Arc<Count> {
        fn head_pending(&self, _pending: bool) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }

        fn head_passed(&self) {}
    }

    const LIMITS: HeadLimits = HeadLimits {
        bytes: 8192,
        fields: 16,
    };

    /// What hyper would read from `Checked` when the client sends `input`
    /// in pieces of `piece` bytes and closes.
    async fn through(input: &[u8], piece: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for part in input.chunks(piece) {
                client.write_all(part).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut checked = Checked::new(server, std::sync::Arc::new(Count::default()), LIMITS);
        let mut out = Vec::new();
        checked.read_to_end(&mut out).await.unwrap();
        drop(writer.await.unwrap());
        out
    }

    #[tokio::test]
    async fn sound_requests_pass_unchanged_however_they_are_cut() {
        let input: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz\
            GET /c HTTP/1.1\r\n\r\n";
        for piece in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(through(input, piece).await, input, "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn a_head_after_a_chunked_body_is_still_checked() {
        let input: &[u8] = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            POST /v1/messages HTTP/1.1\r\nanthropic-version: 2023-06-01\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        for piece in [1, 5, 4096] {
            let out = String::from_utf8(through(input, piece).await).unwrap();
            let first = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
            assert!(out.starts_with(first), "{out}");
            let stand_in = &out[first.len()..];
            assert!(
                stand_in.starts_with("GET /v1/messages HTTP/1.1\r\n"),
                "{out}"
            );
            assert!(
                stand_in.contains("anthropic-version: 2023-06-01\r\n"),
                "{out}"
            );
            assert!(stand_in.contains("x-halberd-malformed: ambiguous-length\r\n"));
            assert!(!out.contains("smuggled"), "{out}");
        }
    }

    #[tokio::test]
    async fn http2_and_upgrades_pass_untouched() {
        let preface: &[u8] =
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
        assert_eq!(through(preface, 3).await, preface);
        let upgrade: &[u8] =
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello";
        assert_eq!(through(upgrade, 4096).await, upgrade);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_without_its_end() {
        let mut input = b"GET / HTTP/1.1\r\nx: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 40_000));
        let out = String::from_utf8(through(&input, 4096).await).unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("x-halberd-malformed: too-large\r\n"), "{out}");
        assert!(out.len() < 200, "{out}");
    }

    #[test]
    fn framing_faults() {
        let judge_str = |head: &str| match judge(head.as_bytes(), LIMITS) {
            Verdict::Pass(_) => None,
            Verdict::Refuse(fault, _) => Some(fault),
        };
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n"),
            Some(Fault::ContentLength)
        );
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            Some(Fault::ContentLength)
        );
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            None
        );
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Some(Fault::TransferEncoding)
        );
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            None
        );
        assert_eq!(judge_str("GET /a b HTTP/1.1\r\n\r\n"), Some(Fault::NotHttp));
        assert_eq!(
            judge_str("GET / HTTP/1.1\r\nx-halberd-malformed: too-large\r\n\r\n"),
            None
        );
        let many: String = (0..17).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            judge_str(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Some(Fault::TooLarge)
        );
    }
}
