//! An incremental Server-Sent Events codec.
//!
//! The decoder takes bytes as they arrive, split anywhere (mid-line, mid-UTF-8,
//! between the CR and LF of one line ending), and yields whole events. Each event
//! keeps its exact bytes, so a stream that nothing rewrites passes through byte
//! for byte, comments and framing included. Work is linear in the input: bytes
//! already scanned are never scanned again, and one event may be at most
//! `max_event_bytes` long, so a peer cannot make the decoder buffer without end.

use bytes::Bytes;

/// One event, as framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The exact bytes of the event, up to and including the blank line that ends it.
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` fields joined with `\n`; `None` when the event has no data
    /// field (a comment or keep-alive).
    pub data: Option<String>,
    pub id: Option<String>,
}

impl SseEvent {
    /// Encodes an event the way OpenAI and Anthropic frame theirs: optional
    /// `event:` line, one `data:` line per line of `data`, LF line ends.
    pub fn encode(event: Option<&str>, data: &str) -> Bytes {
        let mut out = Vec::with_capacity(data.len() + 32);
        if let Some(e) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        for line in data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        Bytes::from(out)
    }

    /// Encodes an event whose data is `value` as compact JSON, serialised
    /// straight into the frame (compact JSON is one line: a newline in a
    /// string is escaped). The same bytes as [`SseEvent::encode`] with
    /// `value.to_string()`, without the formatter's detour and the copy.
    pub fn encode_json(event: Option<&str>, value: &serde_json::Value) -> Bytes {
        let mut out = Vec::with_capacity(256);
        if let Some(e) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        // Serialising a `Value` cannot fail (its keys are strings); were it
        // to, the formatter's path says the same.
        if serde_json::to_writer(&mut out, value).is_err() {
            return SseEvent::encode(event, &value.to_string());
        }
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event grew past the limit without ending.
    EventTooLarge { limit: usize },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => write!(f, "event exceeds {limit} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental decoder. Feed it with [`SseDecoder::push`], then call
/// [`SseDecoder::finish`] at end of stream for an event the peer did not end.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Start of the event being assembled in `buf`.
    event_start: usize,
    /// Start of the line being assembled.
    line_start: usize,
    /// How far the search for a line end has got; never scanned again.
    scanned: usize,
    max_event_bytes: usize,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new(16 * 1024 * 1024)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            buf: Vec::new(),
            event_start: 0,
            line_start: 0,
            scanned: 0,
            max_event_bytes,
            event: None,
            data: None,
            id: None,
        }
    }

    /// Adds bytes and appends every event they complete to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.buf.extend_from_slice(chunk);
        loop {
            let from = self.scanned.max(self.line_start);
            let Some(rel) = self.buf[from..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                break;
            };
            let at = from + rel;
            let term = if self.buf[at] == b'\r' {
                match self.buf.get(at + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of what we have: the LF may be in the next read.
                    None => {
                        self.scanned = at;
                        break;
                    }
                }
            } else {
                1
            };
            let line_end = at;
            let next = at + term;
            if line_end == self.line_start {
                self.dispatch(next, out);
            } else {
                self.field(self.line_start, line_end);
            }
            self.line_start = next;
            self.scanned = next;
        }
        if self.event_start > 0 {
            self.buf.drain(..self.event_start);
            self.line_start -= self.event_start;
            self.scanned -= self.event_start;
            self.event_start = 0;
        }
        if self.buf.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Ends the stream. Returns the bytes of an unterminated last event, if any,
    /// as an event (so that pass-through stays byte-exact even for a peer that
    /// did not end its stream properly).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.len() == self.event_start {
            return None;
        }
        if self.line_start < self.buf.len() {
            let end = if self.buf.last() == Some(&b'\r') {
                self.buf.len() - 1
            } else {
                self.buf.len()
            };
            self.field(self.line_start, end);
        }
        let raw = Bytes::copy_from_slice(&self.buf[self.event_start..]);
        self.buf.clear();
        self.event_start = 0;
        self.line_start = 0;
        self.scanned = 0;
        Some(SseEvent {
            raw,
            event: self.event.take(),
            data: self.data.take(),
            id: self.id.take(),
        })
    }

    fn dispatch(&mut self, end: usize, out: &mut Vec<SseEvent>) {
        let raw = Bytes::copy_from_slice(&self.buf[self.event_start..end]);
        out.push(SseEvent {
            raw,
            event: self.event.take(),
            data: self.data.take(),
            id: self.id.take(),
        });
        self.event_start = end;
    }

    fn field(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line.first() == Some(&b':') {
            return; // a comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            b"id" => self.id = Some(value.into_owned()),
            _ => {} // `retry` and unknown fields stay in `raw` only
        }
    }
}

/// Decodes a whole buffer at once; for tests, fuzzing and offline tools.
pub fn decode_all(input: &[u8], max_event_bytes: usize) -> Result<Vec<SseEvent>, SseError> {
    let mut dec = SseDecoder::new(max_event_bytes);
    let mut out = Vec::new();
    dec.push(input, &mut out)?;
    out.extend(dec.finish());
    Ok(out)
}

#[cfg(test)]
mod tests;
