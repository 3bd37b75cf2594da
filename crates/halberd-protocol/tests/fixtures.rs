//! The recorded provider payloads in `../shared/fixtures` (real wire formats, not
//! ours to copy into the repo), run through our decoders. Ignored by default
//! because a fresh clone has no `../shared`; `.ci/run` runs them with
//! `--ignored`, where a missing directory is a failure.
//!
//! - every recorded SSE body decodes, split at every point, into events whose
//!   exact bytes add up to the recording, and whose data is JSON;
//! - every recorded request decodes to an `Exchange` whose parts cover every
//!   text-bearing string of the body (the completeness the inspection stages
//!   rely on), except the malformed requests that providers rejected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use halberd_protocol::sse::{SseDecoder, decode_all};
use halberd_protocol::{Api, Exchange};
use serde_json::Value;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("HALBERD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("fixtures");
    assert!(
        dir.is_dir(),
        "fixtures not found at {} (set HALBERD_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn files(suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for group in std::fs::read_dir(fixtures()).unwrap() {
        let group = group.unwrap().path();
        if !group.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&group).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().ends_with(suffix) {
                out.push(f);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no {suffix} fixtures");
    out
}

#[test]
#[ignore = "needs ../shared/fixtures; run by .ci/run"]
fn recorded_streams_decode_byte_exact_at_every_split() {
    for path in files(".sse.txt") {
        let bytes = std::fs::read(&path).unwrap();
        let whole = decode_all(&bytes, 1 << 24).unwrap();
        assert!(!whole.is_empty(), "{}", path.display());
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.iter().copied()).collect();
        assert_eq!(joined, bytes, "{}", path.display());
        for e in &whole {
            if let Some(d) = e.data.as_deref().filter(|d| *d != "[DONE]") {
                serde_json::from_str::<Value>(d)
                    .unwrap_or_else(|err| panic!("{}: data is not JSON: {err}", path.display()));
            }
        }
        // Two-way splits (every point of small recordings, at most ~1500 points
        // of large ones, which would otherwise make this quadratic), then byte
        // by byte.
        let stride = (bytes.len() / 1500).max(1);
        for at in (0..=bytes.len()).step_by(stride) {
            let mut dec = SseDecoder::new(1 << 24);
            let mut out = Vec::new();
            dec.push(&bytes[..at], &mut out).unwrap();
            dec.push(&bytes[at..], &mut out).unwrap();
            out.extend(dec.finish());
            assert_eq!(out, whole, "{} split at {at}", path.display());
        }
        let mut dec = SseDecoder::new(1 << 24);
        let mut out = Vec::new();
        for b in &bytes {
            dec.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        out.extend(dec.finish());
        assert_eq!(out, whole, "{} byte by byte", path.display());
    }
}

fn api_of(path: &std::path::Path) -> Api {
    let group = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    match group.as_str() {
        "anthropic-messages" => Api::Messages,
        "openai-chat" => Api::ChatCompletions,
        "openai-responses" => Api::Responses,
        "openai-embeddings" => Api::Embeddings,
        other => panic!("unknown fixture group {other}"),
    }
}

/// String leaves under keys that carry text a model reads.
fn text_leaves(v: &Value, ptr: &str, key: &str, out: &mut Vec<String>) {
    const TEXT_KEYS: &[&str] = &[
        "text",
        "content",
        "arguments",
        "output",
        "thinking",
        "instructions",
        "system",
        "description",
        "refusal",
        "input",
    ];
    match v {
        Value::String(_)
            if TEXT_KEYS.contains(&key)
                || key.parse::<usize>().is_ok() && ptr.starts_with("/input/") =>
        {
            out.push(ptr.to_owned())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| text_leaves(x, &format!("{ptr}/{i}"), &i.to_string(), out)),
        Value::Object(map) => map.iter().for_each(|(k, x)| {
            text_leaves(
                x,
                &format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1")),
                k,
                out,
            )
        }),
        _ => {}
    }
}

#[test]
#[ignore = "needs ../shared/fixtures; run by .ci/run"]
fn recorded_requests_decode_completely() {
    let mut decoded = 0;
    for path in files(".request.json") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let result = Exchange::decode(api_of(&path), &body);
        if name.starts_with("error_400_invalid_request")
            || name.starts_with("error_400_legacy_completions")
        {
            assert!(
                result.is_err(),
                "{name}: the provider rejected this request as malformed; so should we"
            );
            continue;
        }
        let ex = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let covered: std::collections::HashSet<&str> =
            ex.parts.iter().map(|p| p.pointer.as_str()).collect();
        let mut want = Vec::new();
        text_leaves(&body, "", "", &mut want);
        for ptr in want {
            // Model ids, roles and enum values are not text; the keys above
            // never name them. Opaque base64 payloads live under `data`, which
            // is not listed either.
            assert!(
                covered.contains(ptr.as_str()),
                "{name}: text at {ptr} is missing from the Exchange"
            );
        }
        for p in &ex.parts {
            if p.key {
                // A key part names a member of the object above it.
                let (parent, _) = p.pointer.rsplit_once('/').unwrap_or_default();
                assert!(
                    body.pointer(parent)
                        .and_then(Value::as_object)
                        .is_some_and(|o| o.contains_key(&p.text)),
                    "{name}: key {}",
                    p.pointer
                );
                continue;
            }
            assert_eq!(
                body.pointer(&p.pointer).and_then(Value::as_str),
                Some(p.text.as_str()),
                "{name}: {}",
                p.pointer
            );
        }
        decoded += 1;
    }
    assert!(decoded >= 30, "only {decoded} requests decoded");
}
