use super::*;

/// Our own streams, written to cover the framings of both providers and of the
/// SSE specification: `event:` + `data:`, data-only, comments, multi-line data,
/// `id:` and `retry:`, CRLF, lone CR, and UTF-8 that a split can cut.
const STREAMS: &[&str] = &[
    "data: {\"a\":1}\n\ndata: [DONE]\n\n",
    "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n",
    ": keep-alive comment\n\ndata: first line\ndata: second line\n\n",
    "id: 7\nretry: 1000\nevent: delta\ndata: {\"t\":\"héllo wörld 🌍\"}\r\n\r\n",
    "data: cr only\r\rdata: mixed\r\n\ndata:no-space\n\n",
    "data\n\nevent:x\ndata: y\n\n",
];

fn decode_split(input: &[u8], splits: &[usize]) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    let mut prev = 0;
    for &s in splits {
        dec.push(&input[prev..s], &mut out).unwrap();
        prev = s;
    }
    dec.push(&input[prev..], &mut out).unwrap();
    out.extend(dec.finish());
    out
}

fn check(input: &str, expected: &[(Option<&str>, Option<&str>)]) {
    let events = decode_all(input.as_bytes(), 1 << 20).unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.event.as_deref(), e.data.as_deref()))
        .collect();
    assert_eq!(got, expected, "input {input:?}");
}

#[test]
fn fields() {
    check(
        "data: {\"a\":1}\n\ndata: [DONE]\n\n",
        &[(None, Some("{\"a\":1}")), (None, Some("[DONE]"))],
    );
    check("event: ping\ndata: {}\n\n", &[(Some("ping"), Some("{}"))]);
    check(": comment\n\n", &[(None, None)]);
    check("data: a\ndata: b\n\n", &[(None, Some("a\nb"))]);
    check("data:x\n\n", &[(None, Some("x"))]);
    check("data:  two spaces\n\n", &[(None, Some(" two spaces"))]);
    check("data\n\n", &[(None, Some(""))]);
    check(
        "data: a\r\n\r\ndata: b\r\rdata: c\n\n",
        &[(None, Some("a")), (None, Some("b")), (None, Some("c"))],
    );
}

#[test]
fn id_is_kept() {
    let events = decode_all(b"id: 42\ndata: x\n\n", 1024).unwrap();
    assert_eq!(events[0].id.as_deref(), Some("42"));
}

#[test]
fn raw_bytes_concatenate_to_input_for_every_split_point() {
    for s in STREAMS {
        let input = s.as_bytes();
        let whole = decode_split(input, &[]);
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.iter().copied()).collect();
        assert_eq!(joined, input, "whole {s:?}");
        for a in 0..=input.len() {
            let one = decode_split(input, &[a]);
            assert_eq!(one, whole, "split at {a} of {s:?}");
            for b in a..=input.len() {
                assert_eq!(
                    decode_split(input, &[a, b]),
                    whole,
                    "splits {a},{b} of {s:?}"
                );
            }
        }
    }
}

#[test]
fn byte_by_byte_equals_whole() {
    let all: String = STREAMS.concat();
    let input = all.as_bytes();
    let splits: Vec<usize> = (1..input.len()).collect();
    assert_eq!(decode_split(input, &splits), decode_split(input, &[]));
}

#[test]
fn unterminated_last_event_is_returned_by_finish() {
    let mut dec = SseDecoder::new(1024);
    let mut out = Vec::new();
    dec.push(b"data: a\n\ndata: tail", &mut out).unwrap();
    assert_eq!(out.len(), 1);
    let tail = dec.finish().unwrap();
    assert_eq!(&tail.raw[..], b"data: tail");
    assert_eq!(tail.data.as_deref(), Some("tail"));
    assert!(dec.finish().is_none());
}

#[test]
fn oversized_event_is_an_error_not_unbounded_growth() {
    let mut dec = SseDecoder::new(64);
    let mut out = Vec::new();
    let err = dec.push(&[b'x'; 100], &mut out).unwrap_err();
    assert_eq!(err, SseError::EventTooLarge { limit: 64 });
    // Many small complete events are fine however much they add up to.
    let mut dec = SseDecoder::new(64);
    for _ in 0..1000 {
        dec.push(b"data: 0123456789\n\n", &mut out).unwrap();
    }
    assert_eq!(out.len(), 1000);
}

#[test]
fn encode_round_trips() {
    let bytes = SseEvent::encode(Some("content_block_delta"), "line one\nline two");
    assert_eq!(
        &bytes[..],
        b"event: content_block_delta\ndata: line one\ndata: line two\n\n"
    );
    let events = decode_all(&bytes, 1024).unwrap();
    assert_eq!(events[0].data.as_deref(), Some("line one\nline two"));
    assert_eq!(events[0].event.as_deref(), Some("content_block_delta"));
}

/// Serialised into the frame, the bytes are those of the formatter's path,
/// and a newline inside a string stays escaped on the one `data:` line.
#[test]
fn json_events_are_framed_like_their_text() {
    let value = serde_json::json!({"type": "delta", "text": "two\nlines \"quoted\" é", "n": [1, 2.5, null]});
    for event in [None, Some("content_block_delta")] {
        let framed = SseEvent::encode_json(event, &value);
        assert_eq!(framed, SseEvent::encode(event, &value.to_string()));
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        decoder.push(&framed, &mut events).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), event);
        let data: serde_json::Value =
            serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(data, value);
    }
}
