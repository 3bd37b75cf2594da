use std::sync::Arc;

use bytes::BytesMut;
use halberd_guard::sensitive::{Policy, Pseudonyms};
use halberd_protocol::Api;
use halberd_protocol::sse::{SseDecoder, SseEvent};
use serde_json::{Value, json};

use super::{OutputError, OutputInspector};

fn inspector() -> OutputInspector {
    OutputInspector::new(Arc::new(Policy::redact_all()), Pseudonyms::default())
}

/// Runs raw SSE text through the inspector; returns the client's events.
fn run(inspector: &mut OutputInspector, api: Api, raw: &str) -> Result<Vec<SseEvent>, OutputError> {
    let mut decoder = SseDecoder::new(1 << 20);
    let mut events = Vec::new();
    decoder.push(raw.as_bytes(), &mut events).unwrap();
    let mut out = BytesMut::new();
    for ev in &events {
        inspector.event(api, ev, &mut out)?;
    }
    inspector.finish(api, &mut out)?;
    let mut client = Vec::new();
    let mut decoder = SseDecoder::new(1 << 20);
    decoder.push(&out, &mut client).unwrap();
    Ok(client)
}

fn anthropic(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

#[test]
fn anthropic_thinking_is_redacted_across_deltas_and_signatures_are_untouched() {
    let signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";
    let mut raw = anthropic(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    );
    for piece in ["The user is jane.d", "oe@exam", "ple.com, so"] {
        raw += &anthropic(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}),
        );
    }
    raw += &anthropic(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": signature}}),
    );
    raw += &anthropic(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    let events = run(&mut inspector(), Api::Messages, &raw).unwrap();
    let mut thinking = String::new();
    let mut signatures = Vec::new();
    let mut kinds = Vec::new();
    for ev in &events {
        let v: Value = serde_json::from_str(ev.data.as_deref().unwrap()).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_owned());
        assert_eq!(
            ev.event.as_deref(),
            v["type"].as_str(),
            "event names are kept"
        );
        thinking += v["delta"]["thinking"].as_str().unwrap_or_default();
        if let Some(s) = v["delta"]["signature"].as_str() {
            signatures.push(s.to_owned());
        }
    }
    assert_eq!(thinking, "The user is [EMAIL], so");
    assert_eq!(signatures, [signature]);
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("content_block_stop"),
        "held text is released before the stop"
    );
}

#[test]
fn event_ids_and_untouched_events_pass_byte_for_byte() {
    let raw = "id: 7\nevent: ping\ndata: {\"type\": \"ping\"}\n\n: keep-alive comment\n\n";
    let events = run(&mut inspector(), Api::Messages, raw).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        &events[0].raw[..],
        b"id: 7\nevent: ping\ndata: {\"type\": \"ping\"}\n\n"
    );
    let raw = "id: 42\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mail a@example.com now\"}}]}\n\n";
    let events = run(&mut inspector(), Api::ChatCompletions, raw).unwrap();
    assert_eq!(
        events[0].id.as_deref(),
        Some("42"),
        "a rewritten event keeps its id"
    );
    assert!(
        events
            .iter()
            .all(|e| !String::from_utf8_lossy(&e.raw).contains("a@example.com"))
    );
}

#[test]
fn chat_held_text_is_released_with_the_finish_reason() {
    let raw = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"call +44 20 \"},\"finish_reason\":null}]}\n\n\
               data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"7946 0958\"},\"finish_reason\":null}]}\n\n\
               data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
               data: [DONE]\n\n";
    let events = run(&mut inspector(), Api::ChatCompletions, raw).unwrap();
    let datas: Vec<&str> = events.iter().filter_map(|e| e.data.as_deref()).collect();
    assert_eq!(datas.len(), 4, "no event is added or dropped: {datas:?}");
    let text: String = datas
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "call [PHONE]");
    let last: Value = serde_json::from_str(datas[2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(datas[3], "[DONE]");
}

#[test]
fn a_flag_only_policy_holds_nothing_back_and_still_counts_split_values() {
    let policy = Policy::uniform(halberd_guard::sensitive::Action::Flag);
    let mut inspector = OutputInspector::new(Arc::new(policy), Pseudonyms::default());
    let pieces = ["Cert", "ainly, call +44 20 ", "7946 0958", " today"];
    let mut raw = String::new();
    for piece in pieces {
        raw += &format!(
            "data: {}\n\n",
            json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
        );
    }
    raw += "data: [DONE]\n\n";
    let events = run(&mut inspector, Api::ChatCompletions, &raw).unwrap();
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    // Each event carries its own text, the first word included: nothing waits.
    assert_eq!(deltas, pieces);
    assert_eq!(
        inspector.counts.get("phone"),
        Some(&1),
        "{:?}",
        inspector.counts
    );
}

#[test]
fn an_event_that_cannot_be_parsed_ends_the_stream() {
    let raw = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: not json jane@example.com\n\n";
    assert_eq!(
        run(&mut inspector(), Api::ChatCompletions, raw).unwrap_err(),
        OutputError::Uninspectable
    );
}

#[test]
fn whole_responses_redact_every_text_but_not_identifiers() {
    let mut body = json!({
        "id": "msg_jane@example.com",
        "type": "message",
        "content": [
            {"type": "text", "text": "Reach jane@example.com"},
            {"type": "tool_use", "id": "t1", "name": "send", "input": {"to": "jane@example.com", "n": 3}},
            {"type": "thinking", "thinking": "AKIAUJZDEGXDNCF32EPF", "signature": "AKIAUJZDEGXDNCF32EPF"}
        ],
        "future_field": {"nested": ["4111 1111 1111 1111"]}
    });
    inspector().whole(&mut body).unwrap();
    assert_eq!(body["id"], "msg_jane@example.com");
    assert_eq!(body["content"][0]["text"], "Reach [EMAIL]");
    assert_eq!(body["content"][1]["input"]["to"], "[EMAIL]");
    assert_eq!(body["content"][1]["input"]["n"], 3);
    assert_eq!(body["content"][2]["thinking"], "[SECRET:aws_access_key_id]");
    assert_eq!(body["content"][2]["signature"], "AKIAUJZDEGXDNCF32EPF");
    assert_eq!(body["future_field"]["nested"][0], "[CREDIT_CARD]");
}
