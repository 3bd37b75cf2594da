//! The deterministic mock provider, shared by the built-in `mock` provider (no
//! network at all) and `halberd mock-upstream` (the same over real HTTP).
//!
//! It speaks OpenAI chat completions, responses and embeddings and Anthropic
//! messages, streamed and not, and echoes the last user message. When the request
//! offers tools and the last message is the user's, it calls the first tool with
//! `{"input": <the echo>}`; when the last message is a tool result, it answers
//! with that result. Request headers steer it:
//! - `x-mock-reply`: reply with this text instead of the echo;
//! - `x-mock-chunk-bytes`: size of streamed text deltas (default 16, cut at
//!   character boundaries), or `words` for deltas shaped like a real model's
//!   tokens (a word with the space before it, a punctuation mark alone);
//! - `x-mock-delay-ms`: delay between streamed events;
//! - `x-mock-status`: answer with this HTTP error status in the provider's shape;
//! - `x-mock-usage`: `none` to report no usage, or `IN,OUT` token counts;
//! - `x-mock-tool-call`: call this tool, offered or not (a model that calls
//!   a tool it was not given);
//! - `x-mock-tool-arguments`: with it, these raw arguments (they need not be
//!   JSON).
//!
//! Generation is pure: this module builds the whole reply as values and bytes;
//! the callers do the waiting and the sending.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use halberd_protocol::sse::SseEvent;
use halberd_protocol::{Api, Exchange};

const CREATED: u64 = 1_700_000_000;

/// What the request headers ask of the mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    pub reply: Option<String>,
    pub tool_call: Option<String>,
    pub tool_arguments: Option<String>,
    pub chunking: Chunking,
    pub delay: Duration,
    pub status: Option<u16>,
    pub usage: MockUsage,
}

/// How streamed text is cut into deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Pieces of about this many bytes.
    Bytes(usize),
    /// Word pieces, see [`word_pieces`].
    Words,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockUsage {
    /// Estimated from the text, four bytes a token.
    Estimate,
    None,
    Fixed {
        input: u64,
        output: u64,
    },
}

impl Knobs {
    pub fn from_headers(h: &HeaderMap) -> Result<Knobs, String> {
        let get = |name: &str| {
            h.get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let num = |name: &str, max: u64| -> Result<Option<u64>, String> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n <= max)
                        .ok_or_else(|| format!("{name} must be a whole number up to {max}"))
                })
                .transpose()
        };
        let status = num("x-mock-status", 599)?.map(|s| s as u16);
        if status.is_some_and(|s| s < 400) {
            return Err("x-mock-status must be an error status (400 to 599)".into());
        }
        let usage = match get("x-mock-usage").as_deref().map(str::trim) {
            None => MockUsage::Estimate,
            Some("none") => MockUsage::None,
            Some(v) => {
                let (a, b) = v
                    .split_once(',')
                    .ok_or("x-mock-usage must be 'none' or 'IN,OUT'")?;
                MockUsage::Fixed {
                    input: a
                        .trim()
                        .parse()
                        .map_err(|_| "x-mock-usage: bad input count")?,
                    output: b
                        .trim()
                        .parse()
                        .map_err(|_| "x-mock-usage: bad output count")?,
                }
            }
        };
        let chunking = if get("x-mock-chunk-bytes").is_some_and(|v| v.trim() == "words") {
            Chunking::Words
        } else {
            Chunking::Bytes(num("x-mock-chunk-bytes", 1 << 20)?.map_or(16, |n| n.max(1) as usize))
        };
        Ok(Knobs {
            reply: get("x-mock-reply"),
            tool_call: get("x-mock-tool-call"),
            tool_arguments: get("x-mock-tool-arguments"),
            chunking,
            delay: Duration::from_millis(num("x-mock-delay-ms", 60_000)?.unwrap_or(0)),
            status,
            usage,
        })
    }
}

/// The mock's answer: a status and either one JSON body or a list of SSE events.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: ReplyBody,
    /// Delay before each streamed event after the first.
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub enum ReplyBody {
    Json(Value),
    Events(Vec<Bytes>),
}

/// What the mock will say: text, or a call of a tool.
enum Answer {
    Text(String),
    ToolCall { name: String, arguments: String },
}

/// Builds the reply to `body`, a request of `api` that has already been decoded
/// (the caller validated it).
pub fn reply(api: Api, body: &Value, ex: &Exchange, knobs: &Knobs) -> Reply {
    if let Some(status) = knobs.status {
        let message = format!("mock error with status {status}");
        let body = match api {
            Api::Messages => {
                json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
            }
            _ => {
                json!({"error": {"message": message, "type": if status >= 500 { "server_error" } else { "invalid_request_error" }, "param": null, "code": "mock_error"}})
            }
        };
        return Reply {
            status,
            body: ReplyBody::Json(body),
            delay: Duration::ZERO,
        };
    }
    let input_tokens = estimate_tokens(ex.text_len()).max(1);
    let answer = answer(api, body, knobs);
    let output_len = match &answer {
        Answer::Text(t) => t.len(),
        Answer::ToolCall { arguments, .. } => arguments.len(),
    };
    let usage = match knobs.usage {
        MockUsage::Estimate => Some((input_tokens, estimate_tokens(output_len))),
        MockUsage::None => None,
        MockUsage::Fixed { input, output } => Some((input, output)),
    };
    // A stored prompt's model is the provider's to choose; the mock's is
    // `mock-1`.
    let model = if ex
        .model
        .starts_with(halberd_protocol::openai::STORED_PROMPT_PREFIX)
    {
        "mock-1"
    } else {
        ex.model.as_str()
    };
    let body_out = match (api, ex.stream) {
        (Api::Embeddings, _) => ReplyBody::Json(embeddings(body, model, usage)),
        (Api::ChatCompletions, false) => ReplyBody::Json(chat(model, &answer, usage)),
        (Api::ChatCompletions, true) => {
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            ReplyBody::Events(chat_stream(
                model,
                &answer,
                usage.filter(|_| include_usage),
                knobs.chunking,
            ))
        }
        (Api::Responses, false) => ReplyBody::Json(response(model, &answer, usage, "completed")),
        (Api::Responses, true) => {
            ReplyBody::Events(responses_stream(model, &answer, usage, knobs.chunking))
        }
        (Api::Messages, false) => ReplyBody::Json(message(model, &answer, usage)),
        (Api::Messages, true) => {
            ReplyBody::Events(messages_stream(model, &answer, usage, knobs.chunking))
        }
    };
    Reply {
        status: 200,
        body: body_out,
        delay: knobs.delay,
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The text of a message's content: a string, or its text parts joined.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn answer(api: Api, body: &Value, knobs: &Knobs) -> Answer {
    let empty = Vec::new();
    let (last, tools_offered) =
        match api {
            Api::ChatCompletions => {
                let msgs = body
                    .get("messages")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let last = msgs.iter().rev().find(|m| {
                    matches!(m.get("role").and_then(Value::as_str), Some("user" | "tool"))
                });
                let last = last.map(|m| {
                    let text = content_text(m.get("content"));
                    (m.get("role").and_then(Value::as_str) == Some("tool"), text)
                });
                (last, tool_names(body, "/function/name"))
            }
            Api::Responses => {
                let last = match body.get("input") {
                    Some(Value::String(s)) => Some((false, s.clone())),
                    Some(Value::Array(items)) => items.iter().rev().find_map(|it| {
                        match it.get("type").and_then(Value::as_str) {
                            Some("function_call_output") => {
                                Some((true, content_text(it.get("output"))))
                            }
                            None | Some("message")
                                if it.get("role").and_then(Value::as_str) == Some("user") =>
                            {
                                Some((false, content_text(it.get("content"))))
                            }
                            _ => None,
                        }
                    }),
                    _ => None,
                };
                (last, tool_names(body, "/name"))
            }
            Api::Messages => {
                let msgs = body
                    .get("messages")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let last = msgs
                    .iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .map(|m| match m.get("content") {
                        Some(Value::Array(blocks))
                            if blocks.iter().any(|b| {
                                b.get("type").and_then(Value::as_str) == Some("tool_result")
                            }) =>
                        {
                            let text = blocks
                                .iter()
                                .filter(|b| {
                                    b.get("type").and_then(Value::as_str) == Some("tool_result")
                                })
                                .map(|b| content_text(b.get("content")))
                                .collect::<Vec<_>>()
                                .join("\n");
                            (true, text)
                        }
                        other => (false, content_text(other)),
                    });
                (last, tool_names(body, "/name"))
            }
            Api::Embeddings => (None, Vec::new()),
        };
    let (is_tool_result, text) = last.unwrap_or((false, String::new()));
    if let Some(reply) = &knobs.reply {
        return Answer::Text(reply.clone());
    }
    if let Some(name) = &knobs.tool_call {
        return Answer::ToolCall {
            name: name.clone(),
            arguments: knobs
                .tool_arguments
                .clone()
                .unwrap_or_else(|| json!({"input": text}).to_string()),
        };
    }
    if is_tool_result {
        return Answer::Text(format!("tool result: {text}"));
    }
    match tools_offered.into_iter().next() {
        Some(name) => Answer::ToolCall {
            name,
            arguments: json!({"input": text}).to_string(),
        },
        None => Answer::Text(text),
    }
}

fn tool_names(body: &Value, name_pointer: &str) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    t.pointer(name_pointer)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Splits `text` as `chunking` says.
pub fn chunks(text: &str, chunking: Chunking) -> Vec<&str> {
    match chunking {
        Chunking::Bytes(size) => byte_pieces(text, size),
        Chunking::Words => word_pieces(text),
    }
}

/// Splits `text` into pieces of about `size` bytes, never inside a character.
fn byte_pieces(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (a, b) = rest.split_at(end);
        out.push(a);
        rest = b;
    }
    out
}

/// Splits `text` the way a model's tokens often fall: each piece is the
/// whitespace before it and then a run of letters and digits or one other
/// character (`"Write to jane."` gives `"Write"`, `" to"`, `" jane"`, `"."`).
/// Real tokenizers also cut long words; this is close enough for timing.
pub fn word_pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut start = 0;
    while let Some(&(_, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        chars.next();
        if c.is_alphanumeric() {
            while chars.next_if(|&(_, d)| d.is_alphanumeric()).is_some() {}
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        out.push(&text[start..end]);
        start = end;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn usage_openai_chat(u: Option<(u64, u64)>) -> Value {
    u.map_or(
        Value::Null,
        |(i, o)| json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}),
    )
}

fn chat(model: &str, answer: &Answer, usage: Option<(u64, u64)>) -> Value {
    let (message, finish) = match answer {
        Answer::Text(t) => (
            json!({"role": "assistant", "content": t, "refusal": null}),
            "stop",
        ),
        Answer::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}),
            "tool_calls",
        ),
    };
    let mut v = json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if usage.is_some() {
        v["usage"] = usage_openai_chat(usage);
    }
    v
}

fn chat_stream(
    model: &str,
    answer: &Answer,
    usage: Option<(u64, u64)>,
    chunk: Chunking,
) -> Vec<Bytes> {
    let frame = |choices: Value, usage: Option<Value>| {
        let mut v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        SseEvent::encode(None, &v.to_string())
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut out = Vec::new();
    match answer {
        Answer::Text(t) => {
            out.push(frame(
                choice(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    Value::Null,
                ),
                None,
            ));
            for piece in chunks(t, chunk) {
                out.push(frame(choice(json!({"content": piece}), Value::Null), None));
            }
            out.push(frame(choice(json!({}), json!("stop")), None));
        }
        Answer::ToolCall { name, arguments } => {
            out.push(frame(
                choice(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null),
                None,
            ));
            for piece in chunks(arguments, chunk) {
                out.push(frame(
                    choice(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ),
                    None,
                ));
            }
            out.push(frame(choice(json!({}), json!("tool_calls")), None));
        }
    }
    if usage.is_some() {
        out.push(frame(json!([]), Some(usage_openai_chat(usage))));
    }
    out.push(SseEvent::encode(None, "[DONE]"));
    out
}

fn response_usage(u: Option<(u64, u64)>) -> Value {
    u.map_or(Value::Null, |(i, o)| {
        json!({"input_tokens": i, "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0}, "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o})
    })
}

fn output_item(answer: &Answer, status: &str) -> Value {
    match answer {
        Answer::Text(t) => {
            json!({"id": "msg_mock", "type": "message", "status": status, "role": "assistant",
                                  "content": [{"type": "output_text", "text": t, "annotations": []}]})
        }
        Answer::ToolCall { name, arguments } => {
            json!({"id": "fc_mock", "type": "function_call", "status": status, "call_id": "call_mock_1", "name": name, "arguments": arguments})
        }
    }
}

fn response(model: &str, answer: &Answer, usage: Option<(u64, u64)>, status: &str) -> Value {
    let output = if status == "completed" {
        vec![output_item(answer, "completed")]
    } else {
        Vec::new()
    };
    json!({
        "id": "resp_mock", "object": "response", "created_at": CREATED, "status": status, "error": null,
        "incomplete_details": null, "instructions": null, "max_output_tokens": null, "model": model,
        "output": output, "parallel_tool_calls": true, "previous_response_id": null, "temperature": 1.0,
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": if status == "completed" { response_usage(usage) } else { Value::Null }, "metadata": {},
    })
}

fn responses_stream(
    model: &str,
    answer: &Answer,
    usage: Option<(u64, u64)>,
    chunk: Chunking,
) -> Vec<Bytes> {
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut ev = |mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        let ty = v["type"].as_str().unwrap_or_default().to_owned();
        out.push(SseEvent::encode(Some(&ty), &v.to_string()));
    };
    ev(
        json!({"type": "response.created", "response": response(model, answer, usage, "in_progress")}),
    );
    ev(
        json!({"type": "response.in_progress", "response": response(model, answer, usage, "in_progress")}),
    );
    let mut added = output_item(answer, "in_progress");
    match answer {
        Answer::Text(t) => {
            added["content"] = json!([]);
            ev(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
            ev(
                json!({"type": "response.content_part.added", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
            for piece in chunks(t, chunk) {
                ev(
                    json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": piece}),
                );
            }
            ev(
                json!({"type": "response.output_text.done", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": t}),
            );
            ev(
                json!({"type": "response.content_part.done", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": t, "annotations": []}}),
            );
        }
        Answer::ToolCall { arguments, .. } => {
            added["arguments"] = json!("");
            ev(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
            for piece in chunks(arguments, chunk) {
                ev(
                    json!({"type": "response.function_call_arguments.delta", "item_id": "fc_mock", "output_index": 0, "delta": piece}),
                );
            }
            ev(
                json!({"type": "response.function_call_arguments.done", "item_id": "fc_mock", "output_index": 0, "arguments": arguments}),
            );
        }
    }
    ev(
        json!({"type": "response.output_item.done", "output_index": 0, "item": output_item(answer, "completed")}),
    );
    ev(
        json!({"type": "response.completed", "response": response(model, answer, usage, "completed")}),
    );
    out
}

fn message(model: &str, answer: &Answer, usage: Option<(u64, u64)>) -> Value {
    let (content, stop) = match answer {
        Answer::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
        Answer::ToolCall { name, arguments } => {
            let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
            (
                json!([{"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": input}]),
                "tool_use",
            )
        }
    };
    let mut v = json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": content, "stop_reason": stop, "stop_sequence": null});
    v["usage"] = usage.map_or(
        json!({"input_tokens": 0, "output_tokens": 0}),
        |(i, o)| json!({"input_tokens": i, "output_tokens": o}),
    );
    if usage.is_none() {
        // Anthropic always reports usage; "none" drops the field to exercise
        // the gateway's handling of a provider that does not.
        if let Some(obj) = v.as_object_mut() {
            obj.remove("usage");
        }
    }
    v
}

fn messages_stream(
    model: &str,
    answer: &Answer,
    usage: Option<(u64, u64)>,
    chunk: Chunking,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut ev = |v: Value| {
        let ty = v["type"].as_str().unwrap_or_default().to_owned();
        out.push(SseEvent::encode(Some(&ty), &v.to_string()));
    };
    let mut start = json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null});
    if let Some((i, _)) = usage {
        start["usage"] = json!({"input_tokens": i, "output_tokens": 1});
    }
    ev(json!({"type": "message_start", "message": start}));
    let stop = match answer {
        Answer::Text(t) => {
            ev(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            ev(json!({"type": "ping"}));
            for piece in chunks(t, chunk) {
                ev(
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                );
            }
            "end_turn"
        }
        Answer::ToolCall { name, arguments } => {
            ev(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}}),
            );
            ev(json!({"type": "ping"}));
            for piece in chunks(arguments, chunk) {
                ev(
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                );
            }
            "tool_use"
        }
    };
    ev(json!({"type": "content_block_stop", "index": 0}));
    let mut delta =
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}});
    if let Some((_, o)) = usage {
        delta["usage"] = json!({"output_tokens": o});
    }
    ev(delta);
    ev(json!({"type": "message_stop"}));
    out
}

fn embeddings(body: &Value, model: &str, usage: Option<(u64, u64)>) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .clamp(1, 4096) as usize;
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let vector = embed(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let (i, _) = usage.unwrap_or((0, 0));
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": i, "total_tokens": i}})
}

/// A deterministic unit vector from the text (FNV-1a seeded per dimension).
pub fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims as u64)
        .map(|d| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ d.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in text.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests;
