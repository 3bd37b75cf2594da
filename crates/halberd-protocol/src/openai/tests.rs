use serde_json::json;

use super::*;
use crate::Part;

fn parts(ex: &Exchange) -> Vec<(&str, Provenance, PartKind, &str)> {
    ex.parts
        .iter()
        .map(|p: &Part| (p.pointer.as_str(), p.provenance, p.kind, p.text.as_str()))
        .collect()
}

#[test]
fn chat_covers_every_role_part_tool_and_argument() {
    let body = json!({
        "model": "gpt-x",
        "max_completion_tokens": 99,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "dev rule"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "tool says hi"},
            {"role": "assistant", "refusal": "no"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "look it up",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "query"}}}}}],
        "some_future_field": {"kept": true}
    });
    let ex = decode_chat(&body).unwrap();
    assert_eq!(ex.model, "gpt-x");
    assert_eq!(ex.max_output_tokens, Some(99));
    assert_eq!(ex.opaque_parts, 1);
    let p = parts(&ex);
    assert!(p.contains(&(
        "/messages/0/content",
        Provenance::Operator,
        PartKind::Text,
        "be brief"
    )));
    assert!(p.contains(&(
        "/messages/1/content/0/text",
        Provenance::Operator,
        PartKind::Text,
        "dev rule"
    )));
    assert!(p.contains(&(
        "/messages/2/content/0/text",
        Provenance::User,
        PartKind::Text,
        "what is this?"
    )));
    assert!(p.contains(&(
        "/messages/3/tool_calls/0/function/arguments",
        Provenance::Model,
        PartKind::ToolArguments,
        "{\"q\":\"x\"}"
    )));
    assert!(p.contains(&(
        "/messages/4/content",
        Provenance::Tool,
        PartKind::ToolResult,
        "tool says hi"
    )));
    assert!(p.contains(&(
        "/messages/5/refusal",
        Provenance::Model,
        PartKind::Text,
        "no"
    )));
    assert!(p.contains(&(
        "/tools/0/function/description",
        Provenance::Operator,
        PartKind::ToolDefinition,
        "look it up"
    )));
    assert!(p.contains(&(
        "/tools/0/function/parameters/properties/q/description",
        Provenance::Operator,
        PartKind::ToolDefinition,
        "query"
    )));
    // Every pointer resolves to the very text it claims.
    for part in &ex.parts {
        assert_eq!(
            body.pointer(&part.pointer).and_then(Value::as_str),
            Some(part.text.as_str()),
            "{}",
            part.pointer
        );
    }
}

#[test]
fn chat_errors_name_the_parameter() {
    let check = |body: Value, param: &str| {
        let err = decode_chat(&body).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(param), "{err}");
    };
    check(json!({"messages": []}), "model");
    check(
        json!({"model": "m".repeat(crate::exchange::MAX_MODEL_LEN + 1), "messages": []}),
        "model",
    );
    assert!(
        decode_chat(&json!({"model": "m".repeat(crate::exchange::MAX_MODEL_LEN), "messages": []}))
            .is_ok()
    );
    check(json!({"model": "m"}), "messages");
    check(json!({"model": "m", "messages": {}}), "messages");
    check(
        json!({"model": "m", "messages": [{"content": "x"}]}),
        "messages[0].role",
    );
    check(
        json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
        "messages[0].role",
    );
    check(
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        "messages[0].content",
    );
    check(
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
        "messages[0].content[0].text",
    );
    check(
        json!({"model": "m", "stream": "yes", "messages": []}),
        "stream",
    );
    check(
        json!({"model": "m", "max_tokens": -1, "messages": []}),
        "max_tokens",
    );
}

#[test]
fn responses_cover_instructions_items_calls_and_outputs() {
    let body = json!({
        "model": "gpt-x",
        "instructions": "operator rule",
        "input": [
            {"role": "user", "content": "plain"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "part"}, {"type": "input_image", "image_url": "https://x"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "result text"},
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "thought"}]},
            {"type": "web_search_call", "id": "ws", "result": "found page text"}
        ],
        "prompt": {"id": "pmpt", "variables": {"city": "Paris"}}
    });
    let ex = decode_responses(&body).unwrap();
    let p = parts(&ex);
    assert!(p.contains(&(
        "/instructions",
        Provenance::Operator,
        PartKind::Text,
        "operator rule"
    )));
    assert!(p.contains(&(
        "/input/0/content",
        Provenance::User,
        PartKind::Text,
        "plain"
    )));
    assert!(p.contains(&(
        "/input/1/content/0/text",
        Provenance::User,
        PartKind::Text,
        "part"
    )));
    assert!(p.contains(&(
        "/input/2/arguments",
        Provenance::Model,
        PartKind::ToolArguments,
        "{\"a\":1}"
    )));
    assert!(p.contains(&(
        "/input/3/output",
        Provenance::Tool,
        PartKind::ToolResult,
        "result text"
    )));
    assert!(p.contains(&(
        "/input/4/summary/0/text",
        Provenance::Model,
        PartKind::Reasoning,
        "thought"
    )));
    assert!(p.contains(&(
        "/input/5/result",
        Provenance::Tool,
        PartKind::ToolResult,
        "found page text"
    )));
    assert!(p.contains(&(
        "/prompt/variables/city",
        Provenance::User,
        PartKind::Text,
        "Paris"
    )));
    assert_eq!(ex.opaque_parts, 1);
    let plain = decode_responses(&json!({"model": "m", "input": "hi", "stream": true})).unwrap();
    assert!(plain.stream);
    assert_eq!(
        parts(&plain),
        vec![("/input", Provenance::User, PartKind::Text, "hi")]
    );
}

#[test]
fn embeddings_inputs() {
    let ex = decode_embeddings(&json!({"model": "e", "input": ["a", "b"]})).unwrap();
    assert_eq!(ex.parts.len(), 2);
    let tokens = decode_embeddings(&json!({"model": "e", "input": [[1, 2], [3]]})).unwrap();
    assert_eq!((tokens.parts.len(), tokens.opaque_parts), (0, 2));
    assert_eq!(
        decode_embeddings(&json!({"model": "e"}))
            .unwrap_err()
            .param
            .as_deref(),
        Some("input")
    );
    assert_eq!(
        decode_embeddings(&json!({"model": "e", "input": [{}]}))
            .unwrap_err()
            .param
            .as_deref(),
        Some("input[0]")
    );
}

#[test]
fn stream_usage_is_forced_and_the_client_choice_remembered() {
    let mut body = json!({"model": "m", "stream": true});
    assert!(!force_stream_usage(&mut body));
    assert_eq!(body["stream_options"]["include_usage"], true);
    let mut body = json!({"model": "m", "stream_options": {"include_usage": true, "other": 1}});
    assert!(force_stream_usage(&mut body));
    assert_eq!(body["stream_options"]["other"], 1);
}

#[test]
fn usage_chunk_and_usage() {
    let chunk = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2}}});
    assert!(is_usage_chunk(&chunk));
    assert_eq!(
        usage(&chunk),
        Some(Usage {
            input_tokens: 3,
            cached_input_tokens: 2,
            output_tokens: 4
        })
    );
    assert!(!is_usage_chunk(&json!({"choices": [], "usage": null})));
    assert!(!is_usage_chunk(
        &json!({"choices": [{"delta": {}}], "usage": null})
    ));
    let completed = json!({"type": "response.completed", "response": {"usage": {"input_tokens": 5, "output_tokens": 6}}});
    assert_eq!(
        usage(&completed),
        Some(Usage {
            input_tokens: 5,
            cached_input_tokens: 0,
            output_tokens: 6
        })
    );
}

#[test]
fn absurd_reported_usage_is_treated_as_not_reported() {
    let reported = |u: Value| usage(&json!({"usage": u}));
    assert_eq!(
        reported(json!({"prompt_tokens": 7, "completion_tokens": 11})),
        Some(Usage {
            input_tokens: 7,
            cached_input_tokens: 0,
            output_tokens: 11
        })
    );
    assert_eq!(
        reported(json!({"prompt_tokens": 7, "completion_tokens": u64::MAX})),
        None
    );
    assert_eq!(
        reported(json!({"input_tokens": MAX_REPORTED_TOKENS + 1, "output_tokens": 1})),
        None
    );
    let anthropic = |u: Value| crate::anthropic::usage(&json!({"usage": u}));
    assert_eq!(
        anthropic(
            json!({"input_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX, "output_tokens": 1})
        ),
        None,
        "sums saturate instead of overflowing, and are then refused"
    );
    assert!(anthropic(json!({"input_tokens": 3, "output_tokens": 4})).is_some());
}

#[test]
fn a_body_of_too_many_text_parts_is_refused_while_decoding() {
    // Tiny strings in a tool schema, each one a part.
    let many: Vec<Value> = (0..crate::exchange::MAX_PARTS + 10)
        .map(|i| json!(format!("v{i}")))
        .collect();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"enum": many}}}]});
    let err = decode_chat(&body).unwrap_err();
    assert!(err.message.contains("more than 65536 text parts"), "{err}");
    let few: Vec<Value> = (0..100).map(|i| json!(format!("v{i}"))).collect();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"enum": few}}}]});
    assert!(decode_chat(&body).is_ok());
}
