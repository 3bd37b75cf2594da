//! What the protocol layer costs per request and per streamed event:
//! parsing and decoding a ~4 KiB chat request into an `Exchange`, and
//! incremental SSE decoding of a chat stream fed in network-sized reads.
//!
//! `cargo bench -p halberd-protocol --bench decode`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

use halberd_protocol::sse::SseDecoder;
use halberd_protocol::{Api, Exchange, json as body};

fn chat_request_4k() -> Vec<u8> {
    let sentence =
        "Please review the attached quarterly figures and list the three largest changes. ";
    let user: String = sentence.repeat(40);
    let v = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a careful financial analyst. Answer in bullet points."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"quarter\":\"Q3\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Q3 revenue 12.4M, costs 9.1M, headcount 120"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up figures", "parameters": {"type": "object", "properties": {"quarter": {"type": "string", "description": "Quarter name"}}}}}]
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn chat_stream(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        let chunk = json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                           "choices": [{"index": 0, "delta": {"content": format!("token{i} ")}, "finish_reason": null}]});
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn bench(c: &mut Criterion) {
    let request = chat_request_4k();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("parse_and_decode_chat_4k", |b| {
        b.iter(|| {
            let v = body::parse_body(std::hint::black_box(&request), 64).ok();
            v.and_then(|v| Exchange::decode(Api::ChatCompletions, &v).ok())
                .map(|ex| ex.parts.len())
        })
    });
    g.finish();

    let events = 200;
    let stream = chat_stream(events);
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Elements(events as u64));
    for read in [64usize, 1460, 16384] {
        g.bench_function(
            format!("decode_{events}_events_in_{read}_byte_reads"),
            |b| {
                b.iter(|| {
                    let mut dec = SseDecoder::new(1 << 20);
                    let mut out = Vec::with_capacity(8);
                    let mut n = 0;
                    for chunk in stream.chunks(read) {
                        if dec.push(chunk, &mut out).is_ok() {
                            n += out.len();
                            out.clear();
                        }
                    }
                    n
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
