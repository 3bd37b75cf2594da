//! Output validation on a typical answer: the JSON-schema check of a 2 KiB
//! structured answer (schema compiled once, cached), and the tool-call
//! check of an answer with tool calls, and the link check of a 2 KiB Markdown
//! answer, whole and streamed, and the prompt-leak watch. Median and p99 of
//! a timing loop.
//!
//!   cargo bench -p halberd-gateway --bench output_checks

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use halberd_gateway::pipeline::output_schema::SchemaCheck;
use halberd_gateway::pipeline::tool_policy::{Declared, check_whole};
use halberd_guard::leak::{LeakWatch, PromptPrint, WordWindow};
use halberd_guard::links::{LinkGuard, LinkPolicy, LinkStream};
use halberd_protocol::Api;
use serde_json::json;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn time(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        f();
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    percentiles(samples)
}

fn main() {
    let schema = json!({"type": "object", "required": ["items"], "additionalProperties": false,
        "properties": {"items": {"type": "array", "items": {"type": "object", "required": ["name", "qty", "note"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z ]+$"}, "qty": {"type": "integer", "minimum": 0},
                "note": {"type": "string", "maxLength": 200}}}}}});
    let request = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}}});
    let items: Vec<_> = (0..20)
        .map(|i| json!({"name": "Widget Deluxe", "qty": i, "note": "Ships in two to three business days from the warehouse."}))
        .collect();
    let answer = json!({"items": items}).to_string();
    println!("answer: {} bytes", answer.len());
    let (p50, p99) = time(2000, || {
        // As the gateway does per request: look up (compile on a miss) and check.
        let check = SchemaCheck::of(Api::ChatCompletions, &request).unwrap();
        assert!(check.check(&answer).is_ok());
    });
    println!(
        "json schema, {} B answer: p50 {p50:?} p99 {p99:?}",
        answer.len()
    );

    let body = json!({"tools": [{"type": "function", "function": {"name": "lookup"}}]});
    let response = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x".repeat(2000),
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "lookup", "arguments": answer}}]}}]});
    let (p50, p99) = time(2000, || {
        let declared = Declared::of(Api::ChatCompletions, &body);
        assert!(check_whole(Api::ChatCompletions, &declared, &response).is_ok());
    });
    println!("tool calls, 2 KiB arguments: p50 {p50:?} p99 {p99:?}");

    // The link check on a 2 KiB Markdown answer with links, an image and
    // many words that begin with `h`, whole and streamed in 16-byte deltas.
    let guard = LinkGuard::new(
        std::sync::Arc::new(LinkPolicy::default()),
        ["Please summarise how the harbour project is handled."],
    );
    let mut text = String::new();
    while text.len() < 2048 {
        text.push_str(
            "He said the harbour upgrade [is on track](https://news.example.org/harbour) and \
             here is how it looks: ![photo](https://img.example.org/h.png?w=640). Hours later, \
             http://status.example.com/ho showed it healthy. ",
        );
    }
    let (p50, p99) = time(2000, || {
        let mut edits = Vec::new();
        assert!(guard.whole(&text, &mut edits).unwrap().is_none());
    });
    println!(
        "links, {} B answer, whole: p50 {p50:?} p99 {p99:?}",
        text.len()
    );
    let prose = "Here is how the harbour handled the heavy hauls, which held up. ".repeat(32);
    let (p50, p99) = time(2000, || {
        let mut edits = Vec::new();
        assert!(guard.whole(&prose, &mut edits).unwrap().is_none());
    });
    println!(
        "links, {} B prose without links, whole: p50 {p50:?} p99 {p99:?}",
        prose.len()
    );
    // The prompt-leak watch: fingerprinting a 2 KiB operator prompt (per
    // request), then reading a 2 KiB answer.
    let system = "You are the assistant of the harbour authority; answer questions on berths, fees and schedules. "
        .repeat(22);
    let (p50, p99) = time(2000, || {
        assert!(PromptPrint::new([system.as_str()]).is_some());
    });
    println!(
        "prompt leak, fingerprint of a {} B prompt: p50 {p50:?} p99 {p99:?}",
        system.len()
    );
    let print = std::sync::Arc::new(PromptPrint::new([system.as_str()]).unwrap());
    let (p50, p99) = time(2000, || {
        let mut watch = LeakWatch::new(print.clone(), 0.5);
        let mut words = WordWindow::default();
        watch.feed(&mut words, &prose);
        assert!(!watch.end(&mut words));
    });
    println!(
        "prompt leak, {} B answer read: p50 {p50:?} p99 {p99:?}",
        prose.len()
    );
    let pieces: Vec<&str> = text
        .as_bytes()
        .chunks(16)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let (p50, p99) = time(2000, || {
        let mut stream = LinkStream::default();
        let mut out = 0;
        for piece in &pieces {
            out += stream.push(&guard, piece).unwrap().len();
        }
        out += stream.finish(&guard).unwrap().len();
        assert_eq!(out, text.len());
    });
    println!(
        "links, {} B answer, 16 B deltas: p50 {p50:?} p99 {p99:?}",
        text.len()
    );
}
