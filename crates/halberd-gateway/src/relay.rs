//! The streaming relay: upstream SSE bytes in, client SSE bytes out.
//!
//! Events are decoded incrementally and passed on with their exact bytes, so a
//! stream that needs no change reaches the client as the provider sent it. The
//! relay reads usage from the events that carry it (OpenAI's final usage chunk,
//! the Responses `response.completed` event, Anthropic's `message_start` and
//! `message_delta`), holds back the OpenAI usage chunk from clients that did not
//! ask for it, enforces the idle and total timeouts, and ends a broken stream
//! with an error event in the caller's dialect instead of just cutting it.
//!
//! The relay owns the [`Finish`] guard of its exchange: when the client goes away
//! mid-stream, the body (and with it the relay) is dropped, the upstream
//! connection is closed, and the guard still records how the exchange ended.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use halberd_protocol::openai::{self, Usage};
use halberd_protocol::sse::{SseDecoder, SseEvent};
use halberd_protocol::{Api, anthropic};

use crate::pipeline::finish::Finish;
use crate::pipeline::inspect_output::{OutputError, OutputInspector};
use crate::pipeline::output_schema::StreamSchema;
use crate::pipeline::tool_policy::{StreamCheck, ToolFault};
use crate::upstream::{BodyError, BodyStream};

/// Largest single SSE event accepted from an upstream.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The most bytes held back while tool calls are open: a call whose events
/// grow past this is refused rather than held without bound.
pub const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

pub struct Relay {
    upstream: BodyStream,
    decoder: SseDecoder,
    api: Api,
    /// Drop OpenAI's usage-only chunk (the client did not ask for it).
    hide_usage_chunk: bool,
    idle: std::time::Duration,
    deadline: Instant,
    events: Vec<SseEvent>,
    done: bool,
    /// The provider sent the event that ends its stream (`[DONE]`,
    /// `message_stop`, `response.completed` and kin): a stream that closes
    /// without it was cut, however cleanly the connection closed.
    terminal: Terminal,
    finish: Finish,
    /// Output inspection, when the policy does anything to responses.
    output: Option<OutputInspector>,
    /// The provider's model id and the name the client asked for, when they
    /// differ: events report the client's name.
    rename: Option<ModelRename>,
    /// The tool calls the model makes, checked against the request's tools.
    tools: Option<StreamCheck>,
    /// The first event carrying generated text has been sent on (time to
    /// first token measured).
    first_text: bool,
    /// The JSON schema the answer's text must follow, when one was asked for.
    schema: Option<StreamSchema>,
    /// Events held back while a tool call is open: released when the call
    /// is complete and passed its checks, dropped when it is refused, so
    /// nothing of a refused call reaches the client.
    held: BytesMut,
}

/// Reports the model the client asked for (its alias) where the provider
/// names its own id, in a response or a stream event: `"model":"<id>"`
/// becomes `"model":"<alias>"`, with or without a space after the colon.
#[derive(Debug, Clone)]
pub struct ModelRename {
    patterns: [(String, String); 2],
}

impl ModelRename {
    /// `None` when there is nothing to rename, or the names would need JSON
    /// escaping (no provider's ids do).
    pub fn new(upstream: &str, asked: &str) -> Option<ModelRename> {
        let plain = |s: &str| !s.contains(['"', '\\']) && !s.chars().any(char::is_control);
        (upstream != asked && plain(upstream) && plain(asked)).then(|| ModelRename {
            patterns: [
                (
                    format!("\"model\":\"{upstream}\""),
                    format!("\"model\":\"{asked}\""),
                ),
                (
                    format!("\"model\": \"{upstream}\""),
                    format!("\"model\": \"{asked}\""),
                ),
            ],
        })
    }

    /// The text with the provider's id replaced, if it held it.
    pub fn apply(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (from, to) in &self.patterns {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(from.as_str()) {
                out = Some(current.replace(from.as_str(), to));
            }
        }
        out
    }
}

impl Relay {
    pub fn new(
        upstream: BodyStream,
        api: Api,
        hide_usage_chunk: bool,
        idle: std::time::Duration,
        deadline: Instant,
        finish: Finish,
        output: Option<OutputInspector>,
    ) -> Relay {
        Relay {
            upstream,
            decoder: SseDecoder::new(MAX_EVENT_BYTES),
            api,
            hide_usage_chunk,
            idle,
            deadline,
            events: Vec::new(),
            done: false,
            terminal: Terminal::None,
            finish,
            output,
            rename: None,
            tools: None,
            first_text: false,
            schema: None,
            held: BytesMut::new(),
        }
    }

    /// Checks the answer's text against the JSON schema the request asked for.
    pub fn checking_schema(mut self, schema: Option<StreamSchema>) -> Relay {
        self.schema = schema;
        self
    }

    /// Checks the model's tool calls against the request's declared tools.
    pub fn checking_tools(mut self, tools: StreamCheck) -> Relay {
        self.tools = Some(tools);
        self
    }

    /// Reports the client's model name where the provider names its own.
    pub fn renaming(mut self, rename: Option<ModelRename>) -> Relay {
        self.rename = rename;
        self
    }

    /// The client-facing byte stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut r| async move {
            loop {
                if r.done {
                    return None;
                }
                let wait = (Instant::now() + r.idle).min(r.deadline);
                let next = tokio::time::timeout_at(wait, r.upstream.next()).await;
                let out = match next {
                    Ok(Some(Ok(chunk))) => r.feed(&chunk),
                    Ok(Some(Err(BodyError::Read))) => r.fail(
                        "upstream_error",
                        "the upstream connection failed mid-stream",
                    ),
                    Ok(Some(Err(BodyError::Timeout))) | Err(_) => r.fail(
                        "upstream_timeout",
                        "the upstream provider stopped sending in time",
                    ),
                    Ok(None) => r.end(),
                };
                if !out.is_empty() {
                    return Some((Ok(out), r));
                }
            }
        })
    }

    fn feed(&mut self, chunk: &[u8]) -> Bytes {
        let mut events = std::mem::take(&mut self.events);
        if self.decoder.push(chunk, &mut events).is_err() {
            self.events = events;
            return self.fail("upstream_error", "the upstream sent an oversized event");
        }
        let out = self.pass(&events);
        events.clear();
        self.events = events;
        out
    }

    fn end(&mut self) -> Bytes {
        self.done = true;
        let tail: Vec<SseEvent> = self.decoder.finish().into_iter().collect();
        let out = self.pass(&tail);
        if self.done_by_failure() {
            return out;
        }
        let mut out = BytesMut::from(&out[..]);
        if !self.held.is_empty() {
            // A tool call began and never completed: it was never checked
            // whole, so it is not released.
            self.held.clear();
            out.extend_from_slice(&self.fail(
                "upstream_error",
                "the upstream stream ended inside a tool call",
            ));
            return out.freeze();
        }
        if let Some(output) = &mut self.output {
            if let Err(e) = output.finish(self.api, &mut out) {
                out.extend_from_slice(&self.output_failed(e));
                return out.freeze();
            }
            output.report(self.finish.request_id());
        }
        match self.terminal {
            Terminal::Done => self.finish.completed(),
            // The provider ended its own stream with an error event, which
            // was relayed as it came.
            Terminal::Error => self.finish.failed("upstream_error"),
            Terminal::None => out.extend_from_slice(&self.fail(
                "upstream_error",
                "the upstream stream ended before its final event",
            )),
        }
        out.freeze()
    }

    /// An output inspection failure while passing the last events has
    /// already ended the stream with an error.
    fn done_by_failure(&self) -> bool {
        self.finish.has_failed()
    }

    /// Processes decoded events; returns the bytes to send on.
    fn pass(&mut self, events: &[SseEvent]) -> Bytes {
        let mut out = BytesMut::new();
        for ev in events {
            let renamed = self.rename.as_ref().and_then(|r| {
                let data = r.apply(ev.data.as_deref()?)?;
                let raw = r.apply(std::str::from_utf8(&ev.raw).ok()?)?;
                Some(SseEvent {
                    raw: Bytes::from(raw),
                    event: ev.event.clone(),
                    data: Some(data),
                    id: ev.id.clone(),
                })
            });
            let ev = renamed.as_ref().unwrap_or(ev);
            // One parse per event serves both the local token count and the
            // usage the provider reports.
            let has_usage = ev.data.as_deref().is_some_and(|d| d.contains("\"usage\""));
            let parsed = match ev.data.as_deref() {
                Some(data) if has_usage || self.finish.counts_text() => {
                    serde_json::from_str::<Value>(data).ok()
                }
                _ => None,
            };
            if let Some(v) = &parsed {
                generated_text(self.api, v, |text| self.finish.relayed_text(text));
            }
            if let Some(t) = terminal(self.api, ev, parsed.as_ref()) {
                self.terminal = t;
            }
            // The output checks read parsed events: the one parse above, or
            // one here when only they need it (the schema check reads every
            // event while its answer streams, the tool check only events
            // that can carry a call).
            let data = ev.data.as_deref();
            let wants_tools = data.is_some_and(|d| self.tools.as_ref().is_some_and(|t| t.wants(d)));
            let checked: Option<Value> = match (&parsed, data) {
                (None, Some(d)) if wants_tools || self.schema.is_some() => {
                    serde_json::from_str(d).ok()
                }
                _ => None,
            };
            let value = parsed.as_ref().or(checked.as_ref());
            // Tool calls before anything of the event is passed on: an
            // undeclared call is refused at its first event.
            if wants_tools && let (Some(tools), Some(v)) = (&mut self.tools, value) {
                if let Err(fault) = tools.event(self.api, v) {
                    out.extend_from_slice(&self.tool_failed(&fault));
                    break;
                }
                if !tools.flagged.is_empty() {
                    crate::pipeline::tool_rules::report(
                        self.finish.request_id(),
                        &std::mem::take(&mut tools.flagged),
                    );
                }
            }
            // A strict schema violation ends the stream before the event
            // that ends the text.
            if let (Some(schema), Some(v)) = (&mut self.schema, value)
                && let Err(violation) = schema.event(self.api, v)
            {
                let strict = schema.strict();
                crate::events::GuardTriggered {
                    request_id: self.finish.request_id(),
                    guard: "output_schema",
                    kind: "output_schema_violation",
                    action: if strict { "block" } else { "flag" },
                }
                .emit();
                if strict {
                    self.output = None;
                    self.schema = None;
                    out.extend_from_slice(
                        &self.fail("output_schema_violation", &violation.message()),
                    );
                    break;
                }
            }
            if has_usage && let Some(v) = &parsed {
                self.observe_usage(v);
                if self.hide_usage_chunk
                    && self.api == Api::ChatCompletions
                    && openai::is_usage_chunk(v)
                {
                    continue;
                }
            }
            let mut event_out = BytesMut::new();
            if let Some(output) = &mut self.output {
                // The one parse, handed on.
                let parsed = parsed.or(checked);
                if let Err(e) = output.parsed_event(self.api, ev, parsed, &mut event_out) {
                    self.held.clear();
                    out.extend_from_slice(&self.output_failed(e));
                    break;
                }
            } else {
                event_out.extend_from_slice(&ev.raw);
            }
            // While a tool call is open its events (and any others between)
            // wait; the event that completes it releases them.
            if let Some(tools) = &self.tools
                && tools.holding()
            {
                self.held.extend_from_slice(&event_out);
                if self.held.len() > MAX_HELD_BYTES {
                    let fault = ToolFault::TooLarge {
                        tool: tools.open_tool().unwrap_or_default(),
                        max: MAX_HELD_BYTES,
                    };
                    out.extend_from_slice(&self.tool_failed(&fault));
                    break;
                }
                continue;
            }
            if !self.held.is_empty() {
                out.extend_from_slice(&std::mem::take(&mut self.held));
            }
            out.extend_from_slice(&event_out);
            if !self.first_text
                && ev
                    .data
                    .as_deref()
                    .is_some_and(|d| carries_text(self.api, d))
            {
                self.first_text = true;
                crate::metrics::time_to_first_token(self.api.as_str(), self.finish.elapsed());
            }
        }
        self.finish.add_bytes(out.len());
        out.freeze()
    }

    /// Output inspection refused the rest of the stream: end it with an error
    /// event, after everything released before the finding.
    fn output_failed(&mut self, e: OutputError) -> Bytes {
        let (code, message) = match e {
            OutputError::Blocked(kind) => (
                "sensitive_data_detected",
                format!(
                    "the response contained sensitive data ({kind}) that this key's policy blocks"
                ),
            ),
            OutputError::Uninspectable => (
                "upstream_error",
                "the upstream sent an event that cannot be inspected".to_owned(),
            ),
            OutputError::PromptLeak => (
                "system_prompt_leaked",
                crate::error::PROMPT_LEAK_MESSAGE.to_owned(),
            ),
            OutputError::Link(edit) => (
                "output_link_blocked",
                format!(
                    "the response contained a {edit} reference to another host, which this key's policy blocks"
                ),
            ),
        };
        if let Some(output) = &self.output {
            output.report(self.finish.request_id());
        }
        self.output = None;
        self.fail(code, &message)
    }

    /// A tool call the policy refuses: the rest of the stream is an error.
    fn tool_failed(&mut self, fault: &ToolFault) -> Bytes {
        crate::events::GuardTriggered {
            request_id: self.finish.request_id(),
            guard: "tool_policy",
            kind: fault.code(),
            action: "block",
        }
        .emit();
        self.output = None;
        self.tools = None;
        // Nothing of the refused call goes out.
        self.held.clear();
        self.fail(fault.code(), &fault.message())
    }

    fn observe_usage(&mut self, v: &Value) {
        let ty = v.get("type").and_then(Value::as_str);
        match self.api {
            Api::Messages => {
                // message_start reports input and a placeholder output count
                // (1), message_delta the final output; keep the largest of
                // each, and take them as the bill only from message_delta.
                if let Some(u) = anthropic::usage(v) {
                    let prev = self.finish.usage().unwrap_or_default();
                    let merged = Usage {
                        input_tokens: prev.input_tokens.max(u.input_tokens),
                        cached_input_tokens: prev.cached_input_tokens.max(u.cached_input_tokens),
                        output_tokens: prev.output_tokens.max(u.output_tokens),
                    };
                    if ty == Some("message_delta") {
                        self.finish.set_usage(merged);
                    } else {
                        self.finish.set_partial_usage(merged);
                    }
                }
            }
            Api::Responses => {
                if let Some(u) = openai::usage(v) {
                    if matches!(
                        ty,
                        Some("response.completed" | "response.incomplete" | "response.failed")
                    ) {
                        self.finish.set_usage(u);
                    } else {
                        self.finish.set_partial_usage(u);
                    }
                }
            }
            _ => {
                // The usage-only chunk is the final count; servers that
                // report running usage in every chunk give floors.
                if let Some(u) = openai::usage(v) {
                    if openai::is_usage_chunk(v) {
                        self.finish.set_usage(u);
                    } else {
                        self.finish.set_partial_usage(u);
                    }
                }
            }
        }
    }

    fn fail(&mut self, code: &'static str, message: &str) -> Bytes {
        self.done = true;
        self.finish.failed(code);
        tracing::warn!(request_id = %self.finish.request_id(), code, "stream ended by error");
        error_event(self.api, code, message)
    }
}

/// Whether an event's data carries generated text (cheap byte checks; only
/// until the first one is seen).
fn carries_text(api: Api, data: &str) -> bool {
    match api {
        Api::Messages => data.contains("\"text_delta\""),
        Api::Responses => data.contains("response.output_text.delta"),
        Api::ChatCompletions => {
            data.contains("\"content\":\"") && !data.contains("\"content\":\"\"")
        }
        Api::Embeddings => false,
    }
}

/// How far a provider's stream got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    /// No ending event yet.
    None,
    /// The provider's normal end.
    Done,
    /// The provider ended the stream with its own error event.
    Error,
}

/// Whether an event ends the provider's stream, and how.
fn terminal(api: Api, ev: &SseEvent, parsed: Option<&Value>) -> Option<Terminal> {
    let data = ev.data.as_deref()?;
    // Events are parsed when their text is counted; otherwise only one that
    // may be an ending is parsed here.
    let own: Option<Value> = match parsed {
        None if ["stop", "response.", "error"]
            .iter()
            .any(|w| data.contains(w)) =>
        {
            serde_json::from_str(data).ok()
        }
        _ => None,
    };
    let parsed = parsed.or(own.as_ref());
    let ty = || {
        ev.event
            .as_deref()
            .or_else(|| parsed.and_then(|v| v.get("type")).and_then(Value::as_str))
    };
    match api {
        Api::ChatCompletions => {
            if data.trim() == "[DONE]" {
                Some(Terminal::Done)
            } else if parsed.is_some_and(|v| v.get("error").is_some()) {
                Some(Terminal::Error)
            } else {
                None
            }
        }
        Api::Messages => match ty()? {
            "message_stop" => Some(Terminal::Done),
            "error" => Some(Terminal::Error),
            _ => None,
        },
        Api::Responses => match ty()? {
            "response.completed" | "response.incomplete" => Some(Terminal::Done),
            "response.failed" | "error" => Some(Terminal::Error),
            _ => None,
        },
        Api::Embeddings => None,
    }
}

/// An in-stream error in the API's own framing.
pub fn error_event(api: Api, code: &str, message: &str) -> Bytes {
    match api {
        Api::Messages => SseEvent::encode(Some("error"), &json!({"type": "error", "error": {"type": "api_error", "message": message, "code": code}}).to_string()),
        Api::Responses => SseEvent::encode(Some("error"), &json!({"type": "error", "code": code, "message": message, "param": null}).to_string()),
        _ => SseEvent::encode(None, &openai::error_body(message, "api_error", code, None).to_string()),
    }
}

/// The generated text in one upstream stream event: text, reasoning and
/// tool-call argument deltas, whatever the dialect.
pub fn generated_text(api: Api, v: &Value, mut each: impl FnMut(&str)) {
    match api {
        Api::ChatCompletions => {
            for choice in v
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(delta) = choice.get("delta") else {
                    continue;
                };
                for field in ["content", "reasoning_content", "refusal"] {
                    if let Some(t) = delta.get(field).and_then(Value::as_str) {
                        each(t);
                    }
                }
                for call in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = call.pointer("/function/arguments").and_then(Value::as_str) {
                        each(t);
                    }
                }
            }
        }
        Api::Responses => {
            if v.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(".delta"))
                && let Some(t) = v.get("delta").and_then(Value::as_str)
            {
                each(t);
            }
        }
        Api::Messages => {
            if let Some(delta) = v.get("delta") {
                for field in ["text", "partial_json", "thinking"] {
                    if let Some(t) = delta.get(field).and_then(Value::as_str) {
                        each(t);
                    }
                }
            }
        }
        Api::Embeddings => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::pipeline::tool_policy::Declared;

    fn chunk(delta: Value, finish: Value) -> Bytes {
        let v = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// The relay fed one upstream chunk at a time, and what it sends next
    /// within a short wait (empty: nothing yet).
    #[tokio::test]
    async fn text_flows_while_a_call_is_held_until_it_is_complete() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let upstream: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|b| (Ok(b), rx))
        }));
        let declared = Declared::of(
            Api::ChatCompletions,
            &json!({"tools": [{"type": "function", "function": {"name": "lookup"}}]}),
        );
        let finish = Finish::new("req", Api::ChatCompletions, "m", "p", Instant::now());
        let relay = Relay::new(
            upstream,
            Api::ChatCompletions,
            false,
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(10),
            finish,
            None,
        )
        .checking_tools(StreamCheck::new(declared));
        let mut out = Box::pin(relay.into_stream());
        let mut next =
            async || match tokio::time::timeout(Duration::from_millis(100), out.next()).await {
                Ok(Some(Ok(b))) => String::from_utf8(b.to_vec()).unwrap(),
                _ => String::new(),
            };
        tx.send(chunk(
            json!({"role": "assistant", "content": "Looking it up."}),
            Value::Null,
        ))
        .unwrap();
        assert!(next().await.contains("Looking it up."));
        tx.send(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": ""}}]}),
            Value::Null,
        ))
        .unwrap();
        assert_eq!(
            next().await,
            "",
            "the call's first event was released early"
        );
        tx.send(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": 7}"}}]}),
            Value::Null,
        ))
        .unwrap();
        assert_eq!(next().await, "");
        tx.send(chunk(json!({}), json!("tool_calls"))).unwrap();
        let released = next().await;
        assert!(
            released.contains("call_1")
                && released.contains("\\\"q\\\": 7")
                && released.contains("\"finish_reason\":\"tool_calls\""),
            "{released}"
        );
    }
}
