use serde_json::json;

use super::*;

#[test]
fn messages_cover_system_blocks_tools_results_and_documents() {
    let body = json!({
        "model": "claude-x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "operator rule", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"query": "cats", "n": 3}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "result one"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "result two", "is_error": true},
                {"type": "document", "title": "Doc", "source": {"type": "text", "media_type": "text/plain", "data": "doc body"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "text", "text": "and now?"}
            ]}
        ],
        "tools": [{"name": "search", "description": "web search", "input_schema": {"type": "object"}}]
    });
    let ex = decode_messages(&body).unwrap();
    assert_eq!(ex.max_output_tokens, Some(100));
    let p: Vec<_> = ex
        .parts
        .iter()
        .map(|p| (p.pointer.as_str(), p.provenance, p.kind, p.text.as_str()))
        .collect();
    for want in [
        (
            "/system/0/text",
            Provenance::Operator,
            PartKind::Text,
            "operator rule",
        ),
        (
            "/messages/0/content",
            Provenance::User,
            PartKind::Text,
            "hello",
        ),
        (
            "/messages/1/content/0/thinking",
            Provenance::Model,
            PartKind::Reasoning,
            "hmm",
        ),
        (
            "/messages/1/content/1/input/query",
            Provenance::Model,
            PartKind::ToolArguments,
            "cats",
        ),
        (
            "/messages/2/content/0/content/0/text",
            Provenance::Tool,
            PartKind::ToolResult,
            "result one",
        ),
        (
            "/messages/2/content/1/content",
            Provenance::Tool,
            PartKind::ToolResult,
            "result two",
        ),
        (
            "/messages/2/content/2/title",
            Provenance::Document,
            PartKind::Text,
            "Doc",
        ),
        (
            "/messages/2/content/2/source/data",
            Provenance::Document,
            PartKind::Text,
            "doc body",
        ),
        (
            "/messages/2/content/4/text",
            Provenance::User,
            PartKind::Text,
            "and now?",
        ),
        (
            "/tools/0/description",
            Provenance::Operator,
            PartKind::ToolDefinition,
            "web search",
        ),
    ] {
        assert!(p.contains(&want), "missing {want:?} in {p:#?}");
    }
    assert_eq!(ex.opaque_parts, 1);
    for part in &ex.parts {
        assert_eq!(
            body.pointer(&part.pointer).and_then(Value::as_str),
            Some(part.text.as_str())
        );
    }
}

#[test]
fn errors_name_the_parameter() {
    let check = |body: Value, param: &str| {
        assert_eq!(
            decode_messages(&body).unwrap_err().param.as_deref(),
            Some(param)
        );
    };
    check(json!({"messages": []}), "model");
    check(
        json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
        "messages.0.role",
    );
    check(
        json!({"model": "m", "messages": [{"role": "user"}]}),
        "messages.0.content",
    );
    check(
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        "messages.0.content.0.text",
    );
    check(json!({"model": "m", "system": 3, "messages": []}), "system");
    check(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        "max_tokens",
    );
}

#[test]
fn usage_from_events() {
    let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}});
    assert_eq!(
        usage(&start),
        Some(Usage {
            input_tokens: 15,
            cached_input_tokens: 5,
            output_tokens: 1
        })
    );
    let delta = json!({"type": "message_delta", "usage": {"output_tokens": 42}});
    assert_eq!(
        usage(&delta),
        Some(Usage {
            input_tokens: 0,
            cached_input_tokens: 0,
            output_tokens: 42
        })
    );
}
