//! The properties the fuzz targets check, as plain functions, so that the seed
//! corpora in `fuzz/corpus/` also run as regression tests in the normal suite.

use crate::sse::{SseDecoder, SseEvent};
use crate::{Api, Exchange, json};

/// SSE decoding: never panics; the exact bytes of the events add up to the
/// input; and splitting the input anywhere (here, at points derived from the
/// input itself) yields the same events as decoding it whole.
pub fn sse_decoder(data: &[u8]) {
    let whole = decode(data, &[]);
    let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.iter().copied()).collect();
    assert_eq!(joined, data, "raw bytes must add up to the input");
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let splits: Vec<usize> = (step..data.len()).step_by(step).collect();
    assert_eq!(
        decode(data, &splits),
        whole,
        "split decoding must equal whole decoding"
    );
    let every: Vec<usize> = (1..data.len().min(512)).collect();
    assert_eq!(
        decode(data, &every),
        whole,
        "byte-by-byte decoding must equal whole decoding"
    );
}

fn decode(data: &[u8], splits: &[usize]) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    let mut prev = 0;
    for &s in splits {
        if dec.push(&data[prev..s], &mut out).is_err() {
            return out;
        }
        prev = s;
    }
    if dec.push(&data[prev..], &mut out).is_ok() {
        out.extend(dec.finish());
    }
    out
}

/// Request decoding: the first byte picks the API, the rest is the body. Never
/// panics; on success every part's pointer resolves to exactly its text, or,
/// for a key, to a member of an object named exactly that.
pub fn decode_request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let api = Api::all()[usize::from(selector) % 4];
    let Ok(value) = json::parse_body(body, json::MAX_DEPTH) else {
        return;
    };
    if let Ok(ex) = Exchange::decode(api, &value) {
        for part in &ex.parts {
            if part.key {
                let (parent, _) = part.pointer.rsplit_once('/').unwrap_or_default();
                let object = value.pointer(parent).and_then(|v| v.as_object());
                assert!(
                    object.is_some_and(|o| o.contains_key(&part.text)),
                    "key {}",
                    part.pointer
                );
                continue;
            }
            assert_eq!(
                value.pointer(&part.pointer).and_then(|v| v.as_str()),
                Some(part.text.as_str()),
                "pointer {}",
                part.pointer
            );
        }
    }
}
