use halberd_protocol::sse::decode_all;

use super::*;

fn run(api: Api, body: Value, headers: &[(&str, &str)]) -> Reply {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let ex = Exchange::decode(api, &body).unwrap();
    reply(api, &body, &ex, &Knobs::from_headers(&h).unwrap())
}

fn stream_text(reply: &Reply, pointer: &str) -> String {
    stream_pieces(reply, pointer).concat()
}

/// The string at `pointer` in each event of a streamed reply that has one.
fn stream_pieces(reply: &Reply, pointer: &str) -> Vec<String> {
    let ReplyBody::Events(events) = &reply.body else {
        panic!("not a stream")
    };
    let all: Vec<u8> = events.iter().flat_map(|b| b.iter().copied()).collect();
    decode_all(&all, 1 << 20)
        .unwrap()
        .iter()
        .filter_map(|e| e.data.as_deref())
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d)
                .ok()?
                .pointer(pointer)?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn chunks_never_split_characters() {
    let bytes = |n| Chunking::Bytes(n);
    assert_eq!(chunks("héllo", bytes(1)), vec!["h", "é", "l", "l", "o"]);
    assert_eq!(chunks("abcdefg", bytes(3)), vec!["abc", "def", "g"]);
    assert_eq!(chunks("🌍x", bytes(2)), vec!["🌍", "x"]);
    assert!(chunks("", bytes(4)).is_empty());
}

#[test]
fn word_pieces_carry_the_space_before_them() {
    assert_eq!(
        word_pieces("Certainly. Write to jane.doe@example.com, Müller!  "),
        vec![
            "Certainly",
            ".",
            " Write",
            " to",
            " jane",
            ".",
            "doe",
            "@",
            "example",
            ".",
            "com",
            ",",
            " Müller",
            "!",
            "  "
        ]
    );
    assert_eq!(word_pieces("  \n"), vec!["  \n"]);
    assert!(word_pieces("").is_empty());
}

#[test]
fn a_stream_in_word_pieces_has_one_delta_per_word() {
    let body =
        json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let reply = run(
        Api::ChatCompletions,
        body,
        &[
            ("x-mock-reply", "Sure, call me."),
            ("x-mock-chunk-bytes", "words"),
        ],
    );
    assert_eq!(
        stream_pieces(&reply, "/choices/0/delta/content"),
        vec!["", "Sure", ",", " call", " me", "."]
    );
}

#[test]
fn chat_echoes_last_user_message_streamed_and_not() {
    let body = json!({"model": "mock-1", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello there, world"}]});
    let ReplyBody::Json(v) = run(Api::ChatCompletions, body.clone(), &[]).body else {
        panic!()
    };
    assert_eq!(v["choices"][0]["message"]["content"], "hello there, world");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let r = run(
        Api::ChatCompletions,
        streamed,
        &[("x-mock-chunk-bytes", "3")],
    );
    assert_eq!(
        stream_text(&r, "/choices/0/delta/content"),
        "hello there, world"
    );
    let ReplyBody::Events(events) = &r.body else {
        panic!()
    };
    assert_eq!(
        events.len(),
        1 + 6 + 1 + 1,
        "role, 6 deltas, finish, [DONE]; no usage unless asked"
    );
}

#[test]
fn knobs_change_reply_status_and_usage() {
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]});
    let r = run(
        Api::ChatCompletions,
        body.clone(),
        &[("x-mock-status", "503")],
    );
    assert_eq!(r.status, 503);
    let r = run(
        Api::ChatCompletions,
        body.clone(),
        &[("x-mock-reply", "custom"), ("x-mock-usage", "7,9")],
    );
    let ReplyBody::Json(v) = r.body else { panic!() };
    assert_eq!(
        (
            v["choices"][0]["message"]["content"].as_str(),
            v["usage"]["total_tokens"].as_u64()
        ),
        (Some("custom"), Some(16))
    );
    let h: HeaderMap = [(
        http::HeaderName::from_static("x-mock-status"),
        http::HeaderValue::from_static("200"),
    )]
    .into_iter()
    .collect();
    assert!(Knobs::from_headers(&h).is_err());
}

#[test]
fn tools_are_called_then_results_answered() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "mock-1", "tools": tools, "messages": [{"role": "user", "content": "Paris"}]});
    let ReplyBody::Json(v) = run(Api::ChatCompletions, body, &[]).body else {
        panic!()
    };
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"input":"Paris"}"#
    );
    let body = json!({"model": "mock-1", "tools": tools, "messages": [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"}]});
    let ReplyBody::Json(v) = run(Api::ChatCompletions, body, &[]).body else {
        panic!()
    };
    assert_eq!(v["choices"][0]["message"]["content"], "tool result: sunny");
}

#[test]
fn responses_and_messages_stream_the_echo() {
    let r = run(
        Api::Responses,
        json!({"model": "mock-1", "input": "good morning", "stream": true}),
        &[("x-mock-chunk-bytes", "1")],
    );
    assert_eq!(stream_text(&r, "/delta"), "good morning");
    let r = run(
        Api::Messages,
        json!({"model": "mock-1", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "bonjour à tous"}]}),
        &[("x-mock-chunk-bytes", "2")],
    );
    assert_eq!(stream_text(&r, "/delta/text"), "bonjour à tous");
}

#[test]
fn embeddings_are_deterministic_unit_vectors_in_both_encodings() {
    let a = embed("same text", 8);
    assert_eq!(a, embed("same text", 8));
    assert_ne!(a, embed("other text", 8));
    assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    let ReplyBody::Json(v) = run(Api::Embeddings, json!({"model": "mock-e", "input": ["same text"], "encoding_format": "base64", "dimensions": 8}), &[]).body else { panic!() };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, a);
}
