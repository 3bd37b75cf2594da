//! Stage 7, inspect output: the provider's response in, the client's response
//! out, with sensitive data handled by the key's output policy and pseudonyms
//! from the input stage restored.
//!
//! Whole responses: every string of the JSON body is redacted, except fields
//! that carry identifiers or opaque signatures (`SKIP_FIELDS`).
//!
//! Streams: text deltas (OpenAI chat `content`, `refusal` and tool-call
//! `arguments`; Responses `*.delta` events; Anthropic `text_delta`,
//! `thinking_delta` and `input_json_delta`) go through one streaming redactor per
//! text stream, which holds back only what could still be the start of a
//! finding, so a value split across events is caught and the first text waits
//! at most for the end of its word (under a policy that only flags, for
//! nothing). Held text is released in the delta of a later event of the same
//! stream, or in an event synthesised just before the one that ends the stream
//! (the chunk with `finish_reason`, `*.done`, `content_block_stop`, `[DONE]`).
//! Events keep their type, their `id:` and their order; events that carry whole
//! texts (`response.completed`, `*.done`, `message_start`) are redacted as whole
//! texts, which gives the same result as the streamed deltas.
//!
//! Fails closed: an event that is not JSON (other than `[DONE]`) cannot be
//! inspected and ends the stream with an error instead of passing through.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};

use halberd_guard::leak::{LeakWatch, WordWindow};
use halberd_guard::links::{LinkEdit, LinkGuard, LinkStream};
use halberd_guard::sensitive::{
    self, Detector, Kind, Policy, Pseudonyms, Restorer, StreamRedactor,
};
use halberd_protocol::Api;
use halberd_protocol::sse::SseEvent;

/// Fields whose strings are identifiers, enums or signatures, never text.
const SKIP_FIELDS: &[&str] = &[
    "id",
    "type",
    "object",
    "model",
    "role",
    "signature",
    "encrypted_content",
    "data",
    "item_id",
    "call_id",
    "tool_use_id",
    "status",
    "finish_reason",
    "stop_reason",
    "system_fingerprint",
    "service_tier",
    "name",
];

/// Fields whose value the model wrote as data: below them every key is
/// content, however it is named (`{"id": "AKIA…", "name": "ann@…"}` in a tool
/// call's input is the model's output, not the provider's identifiers).
const MODEL_WRITTEN: &[&str] = &["input", "arguments", "parsed"];

/// Fields whose strings are answer text a client may render, where links
/// and images are judged ([`halberd_guard::links`]). Tool arguments are data
/// for a tool, not rendered; their URLs are the tool policy's concern.
const RENDERED_FIELDS: &[&str] = &[
    "content",
    "text",
    "refusal",
    "reasoning_content",
    "thinking",
    "output_text",
];

/// Whether the text stream under `key` is rendered answer text (see
/// [`RENDERED_FIELDS`]): chat `N/content`, `N/refusal`,
/// `N/reasoning_content`; Anthropic `N/text_delta`, `N/thinking_delta`;
/// Responses text, refusal and reasoning families.
fn rendered_stream(key: &str) -> bool {
    if let Some((family, _)) = key.split_once('|') {
        return matches!(
            family,
            "response.output_text"
                | "response.refusal"
                | "response.reasoning_summary_text"
                | "response.reasoning_text"
        );
    }
    matches!(
        key.split_once('/').map(|(_, field)| field),
        Some("content" | "refusal" | "reasoning_content" | "text_delta" | "thinking_delta")
    )
}

/// Most text streams (choices × fields, tool calls, content blocks, items)
/// one response may have open at once.
pub const MAX_TEXT_STREAMS: usize = 256;

/// Why the output stage stopped a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    /// A finding whose action is `block`.
    Blocked(String),
    /// An event that could not be inspected.
    Uninspectable,
    /// A link or image whose action is `block`.
    Link(LinkEdit),
    /// The answer reproduced the operator's prompt and the policy blocks it.
    PromptLeak,
}

/// The watch for a copy of the operator's prompt, and what a copy does.
struct Leak {
    watch: LeakWatch,
    block: bool,
}

/// One text stream: a redactor, then the pseudonym restorer, then (for
/// rendered text) the link check, which sees the text as the client will.
struct TextStream {
    redactor: StreamRedactor<'static>,
    restorer: Restorer,
    links: Option<LinkStream>,
    /// The last words, for the prompt-leak watch (rendered text only).
    words: Option<WordWindow>,
}

pub struct OutputInspector {
    policy: Arc<Policy>,
    pseudonyms: Pseudonyms,
    links: LinkGuard,
    leak: Option<Leak>,
    streams: BTreeMap<String, TextStream>,
    /// Found so far, by type label.
    pub counts: BTreeMap<String, usize>,
    /// Links and images acted on so far.
    pub link_edits: Vec<LinkEdit>,
    /// Some text arrived as deltas (events that repeat it are not counted
    /// again).
    streamed: bool,
    /// The last OpenAI chat chunk's envelope, to frame a synthesised chunk.
    last_chunk: Option<Value>,
}

impl OutputInspector {
    pub fn new(policy: Arc<Policy>, pseudonyms: Pseudonyms, links: LinkGuard) -> OutputInspector {
        OutputInspector {
            policy,
            pseudonyms,
            links,
            leak: None,
            streams: BTreeMap::new(),
            counts: BTreeMap::new(),
            link_edits: Vec::new(),
            streamed: false,
            last_chunk: None,
        }
    }

    /// Also watches rendered text for a copy of the operator's prompt;
    /// `block`: a copy ends the answer, otherwise it is flagged.
    pub fn watching_prompt_leaks(mut self, watch: LeakWatch, block: bool) -> OutputInspector {
        self.leak = Some(Leak { watch, block });
        self
    }

    /// Whether this inspector would change or watch anything at all.
    pub fn is_noop(&self) -> bool {
        self.policy.is_off()
            && self.pseudonyms.is_empty()
            && self.links.is_off()
            && self.leak.is_none()
    }

    /// What the checks did to a whole answer, for the `x-halberd-output`
    /// header: `sensitive(email=1), links(image:sentence=1:strip),
    /// prompt_leak(62%:flag)`. Types, reasons and actions, never values.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        let join = |counts: &mut dyn Iterator<Item = String>| counts.collect::<Vec<_>>().join(", ");
        if !self.counts.is_empty() {
            let mut items = self.counts.iter().map(|(k, n)| format!("{k}={n}"));
            parts.push(format!("sensitive({})", join(&mut items)));
        }
        if !self.link_edits.is_empty() {
            let mut counted: BTreeMap<(String, &str), usize> = BTreeMap::new();
            for edit in &self.link_edits {
                *counted
                    .entry((edit.to_string(), edit.action.as_str()))
                    .or_default() += 1;
            }
            let mut items = counted
                .iter()
                .map(|((kind, action), n)| format!("{kind}={n}:{action}"));
            parts.push(format!("links({})", join(&mut items)));
        }
        if let Some(leak) = &self.leak
            && leak.watch.tripped()
        {
            parts.push(format!(
                "prompt_leak({}%:{})",
                (leak.watch.share() * 100.0) as u32,
                if leak.block { "block" } else { "flag" }
            ));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Logs and counts what was done (guards `sensitive_output`,
    /// `output_links` and `prompt_leak`): types and reasons, never values.
    pub fn report(&self, request_id: &str) {
        let emit = |guard: &'static str, counts: &BTreeMap<String, usize>, action: &str| {
            let summary = counts
                .iter()
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect::<Vec<_>>()
                .join(", ");
            crate::events::GuardTriggered {
                request_id,
                guard,
                kind: &summary,
                action,
            }
            .emit();
        };
        if !self.counts.is_empty() {
            emit("sensitive_output", &self.counts, "applied");
        }
        let mut by_action: BTreeMap<&'static str, BTreeMap<String, usize>> = BTreeMap::new();
        for edit in &self.link_edits {
            *by_action
                .entry(edit.action.as_str())
                .or_default()
                .entry(edit.to_string())
                .or_default() += 1;
        }
        for (action, kinds) in &by_action {
            emit("output_links", kinds, action);
        }
        if let Some(leak) = &self.leak
            && leak.watch.tripped()
        {
            let share =
                BTreeMap::from([("share".to_owned(), (leak.watch.share() * 100.0) as usize)]);
            emit(
                "prompt_leak",
                &share,
                if leak.block { "block" } else { "flag" },
            );
        }
    }

    /// Redacts a whole (non-streamed) JSON response in place.
    /// Inspects a whole answer in place; whether anything in it was
    /// rewritten.
    pub fn whole(&mut self, body: &mut Value) -> Result<bool, OutputError> {
        self.walk(body)
    }

    fn text(&mut self, text: &str, rendered: bool) -> Result<Option<String>, OutputError> {
        let findings = Detector::shared().scan(text);
        let mut out = None;
        if !findings.is_empty() {
            let mut unused = Pseudonyms::default();
            let redaction = sensitive::redact(text, &findings, &self.policy, &mut unused);
            count(&mut self.counts, &redaction.edits);
            if let Some(kind) = redaction.blocked() {
                return Err(blocked(kind));
            }
            if redaction.changed() {
                out = Some(redaction.text);
            }
        }
        if !self.pseudonyms.is_empty() {
            let current = out.as_deref().unwrap_or(text);
            if current.contains('<') {
                out = Some(Restorer::restore_all(current, &self.pseudonyms));
            }
        }
        if rendered {
            let current = out.as_deref().unwrap_or(text);
            if let Some(filtered) = self
                .links
                .whole(current, &mut self.link_edits)
                .map_err(|b| OutputError::Link(b.0))?
            {
                out = Some(filtered);
            }
            if let Some(leak) = &mut self.leak {
                let mut words = WordWindow::default();
                leak.watch.feed(&mut words, out.as_deref().unwrap_or(text));
                if leak.watch.end(&mut words) && leak.block {
                    return Err(OutputError::PromptLeak);
                }
            }
        }
        Ok(out)
    }

    /// Redacts every string below `value`; says whether any changed.
    fn walk(&mut self, value: &mut Value) -> Result<bool, OutputError> {
        self.walk_in(value, false, false)
    }

    /// `free`: `value` is model-written content (a tool call's `input` or
    /// `arguments`, parsed structured output), where a key named `id` or
    /// `name` is the model's text like any other, so nothing is skipped.
    /// `rendered`: the strings are answer text (see [`RENDERED_FIELDS`]).
    fn walk_in(
        &mut self,
        value: &mut Value,
        free: bool,
        rendered: bool,
    ) -> Result<bool, OutputError> {
        let mut changed = false;
        match value {
            Value::String(s) => {
                if let Some(new) = self.text(s, rendered)? {
                    *s = new;
                    changed = true;
                }
            }
            Value::Array(items) => {
                for item in items {
                    changed |= self.walk_in(item, free, rendered)?;
                }
            }
            Value::Object(map) => {
                let mut text_changed = false;
                for (key, item) in map.iter_mut() {
                    if !free && item.is_string() && SKIP_FIELDS.contains(&key.as_str()) {
                        continue;
                    }
                    let inner = free || MODEL_WRITTEN.contains(&key.as_str());
                    let rendered = !inner && RENDERED_FIELDS.contains(&key.as_str());
                    let edited = self.walk_in(item, inner, rendered)?;
                    changed |= edited;
                    text_changed |= edited && key != "logprobs";
                }
                // Log probabilities spell the text token by token: once the
                // text was edited they would give back what was redacted
                // (a card split over four tokens is no finding in any one).
                if text_changed
                    && let Some(logprobs) = map.get_mut("logprobs")
                    && !logprobs.is_null()
                {
                    *logprobs = if logprobs.is_array() {
                        Value::Array(Vec::new())
                    } else {
                        Value::Null
                    };
                }
            }
            _ => {}
        }
        Ok(changed)
    }

    /// Feeds one piece of a text stream; returns what may be released.
    fn push(&mut self, key: &str, piece: &str) -> Result<String, OutputError> {
        // Each text stream holds a redactor and a DFA cache: a response with
        // thousands of choices or tool calls would hold memory without bound
        // (640 MB for 5,000 choices). Past the cap it is refused, not passed.
        if self.streams.len() >= MAX_TEXT_STREAMS && !self.streams.contains_key(key) {
            return Err(OutputError::Uninspectable);
        }
        self.streamed = true;
        let policy = &self.policy;
        let (links, words) = (!self.links.is_off(), self.leak.is_some());
        let stream = self.streams.entry(key.to_owned()).or_insert_with(|| {
            // Decided once per text stream, when it opens.
            let rendered = rendered_stream(key);
            TextStream {
                redactor: StreamRedactor::new(Detector::shared(), policy.clone()),
                restorer: Restorer::default(),
                links: (links && rendered).then(LinkStream::default),
                words: (words && rendered).then(WordWindow::default),
            }
        });
        let before = stream.redactor.edits().len();
        let released = stream.redactor.push(piece);
        count(&mut self.counts, &stream.redactor.edits()[before..]);
        let restored = stream
            .restorer
            .push(&released.map_err(blocked)?, &self.pseudonyms);
        let released = match &mut stream.links {
            None => restored,
            Some(links) => {
                let out = links.push(&self.links, &restored);
                self.link_edits.append(&mut links.edits);
                out.map_err(|b| OutputError::Link(b.0))?
            }
        };
        if let (Some(words), Some(leak)) = (&mut stream.words, &mut self.leak)
            && leak.watch.feed(words, &released)
            && leak.block
        {
            return Err(OutputError::PromptLeak);
        }
        Ok(released)
    }

    /// Ends a text stream; returns what it still held.
    fn flush(&mut self, key: &str) -> Result<String, OutputError> {
        let Some(mut stream) = self.streams.remove(key) else {
            return Ok(String::new());
        };
        let before = stream.redactor.edits().len();
        let tail = stream.redactor.finish();
        count(&mut self.counts, &stream.redactor.edits()[before..]);
        let mut out = stream
            .restorer
            .push(&tail.map_err(blocked)?, &self.pseudonyms);
        out.push_str(&stream.restorer.finish());
        let released = match &mut stream.links {
            None => out,
            Some(links) => {
                let pushed = links.push(&self.links, &out);
                let finished = links.finish(&self.links);
                self.link_edits.append(&mut links.edits);
                let mut released = pushed.map_err(|b| OutputError::Link(b.0))?;
                released.push_str(&finished.map_err(|b| OutputError::Link(b.0))?);
                released
            }
        };
        if let (Some(words), Some(leak)) = (&mut stream.words, &mut self.leak) {
            leak.watch.feed(words, &released);
            if leak.watch.end(words) && leak.block {
                return Err(OutputError::PromptLeak);
            }
        }
        Ok(released)
    }

    fn flush_prefix(&mut self, prefix: &str) -> Result<Vec<(String, String)>, OutputError> {
        let keys: Vec<String> = self
            .streams
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let text = self.flush(&key)?;
            if !text.is_empty() {
                out.push((key, text));
            }
        }
        Ok(out)
    }

    /// Rewrites one SSE event into `out`.
    pub fn event(
        &mut self,
        api: Api,
        ev: &SseEvent,
        out: &mut BytesMut,
    ) -> Result<(), OutputError> {
        self.parsed_event(api, ev, None, out)
    }

    /// [`Self::event`], with the event's data already parsed by the caller
    /// (the relay parses it once for usage and token counting).
    pub fn parsed_event(
        &mut self,
        api: Api,
        ev: &SseEvent,
        parsed: Option<Value>,
        out: &mut BytesMut,
    ) -> Result<(), OutputError> {
        let Some(data) = ev.data.as_deref() else {
            out.put_slice(&ev.raw);
            return Ok(());
        };
        if data.trim() == "[DONE]" {
            self.finish(api, out)?;
            out.put_slice(&ev.raw);
            return Ok(());
        }
        let Some(mut value) = parsed.or_else(|| serde_json::from_str::<Value>(data).ok()) else {
            return Err(OutputError::Uninspectable);
        };
        let changed = match api {
            Api::ChatCompletions => self.chat_chunk(&mut value)?,
            Api::Messages => self.anthropic_event(&mut value, out)?,
            Api::Responses => self.responses_event(&mut value, out)?,
            Api::Embeddings => false,
        };
        if changed {
            out.put_slice(&encode(ev, &value));
        } else {
            out.put_slice(&ev.raw);
        }
        Ok(())
    }

    /// The upstream stream ended: release everything still held, framed for
    /// the API.
    pub fn finish(&mut self, api: Api, out: &mut BytesMut) -> Result<(), OutputError> {
        let pending = self.flush_prefix("")?;
        if pending.is_empty() {
            return Ok(());
        }
        match api {
            Api::ChatCompletions => {
                let mut chunk = self.last_chunk.clone().unwrap_or_else(|| json!({}));
                let mut choices = Vec::new();
                for (key, text) in pending {
                    choices.push(chat_choice_for(&key, text));
                }
                chunk["choices"] = Value::Array(choices);
                chunk.as_object_mut().map(|o| o.remove("usage"));
                out.put_slice(&SseEvent::encode_json(None, &chunk));
            }
            Api::Messages => {
                for (key, text) in pending {
                    out.put_slice(&anthropic_delta(&key, text));
                }
            }
            Api::Responses => {
                for (key, text) in pending {
                    out.put_slice(&responses_delta(&key, text, None));
                }
            }
            Api::Embeddings => {}
        }
        Ok(())
    }

    fn chat_chunk(&mut self, chunk: &mut Value) -> Result<bool, OutputError> {
        let mut changed = false;
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(false);
        };
        let mut envelope = Map::new();
        for choice in choices.iter_mut() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            // The text of a stream may be held back and redacted; its log
            // probabilities, token by token, cannot be: they are not relayed
            // while output is inspected.
            if let Some(logprobs) = choice.get_mut("logprobs")
                && !logprobs.is_null()
            {
                *logprobs = Value::Null;
                changed = true;
            }
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                continue;
            };
            for field in ["content", "refusal", "reasoning_content"] {
                if let Some(Value::String(piece)) = delta.get(field) {
                    let key = format!("{index}/{field}");
                    let released = self.push(&key, &piece.clone())?;
                    if released != *piece {
                        delta.insert(field.into(), Value::String(released));
                        changed = true;
                    }
                }
            }
            for (key, pointer) in [
                ("function_call", "/function_call/arguments"),
                ("audio", "/audio/transcript"),
            ] {
                let mut value = Value::Object(std::mem::take(delta));
                if let Some(Value::String(piece)) = value.pointer(pointer) {
                    let piece = piece.clone();
                    let released = self.push(&format!("{index}/{key}"), &piece)?;
                    if released != piece
                        && let Some(slot) = value.pointer_mut(pointer)
                    {
                        *slot = Value::String(released);
                        changed = true;
                    }
                }
                if let Value::Object(map) = value {
                    *delta = map;
                }
            }
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for call in calls.iter_mut() {
                    let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(Value::String(piece)) = call.pointer("/function/arguments") {
                        let key = format!("{index}/tool/{call_index}");
                        let piece = piece.clone();
                        let released = self.push(&key, &piece)?;
                        if released != piece
                            && let Some(slot) = call.pointer_mut("/function/arguments")
                        {
                            *slot = Value::String(released);
                            changed = true;
                        }
                    }
                }
            }
            if finished {
                for (key, text) in self.flush_prefix(&format!("{index}/"))? {
                    append_chat_delta(delta, &key, text);
                    changed = true;
                }
            }
        }
        for field in ["id", "object", "created", "model", "system_fingerprint"] {
            if let Some(v) = chunk.get(field) {
                envelope.insert(field.into(), v.clone());
            }
        }
        if !envelope.is_empty() {
            self.last_chunk = Some(Value::Object(envelope));
        }
        Ok(changed)
    }

    fn anthropic_event(
        &mut self,
        event: &mut Value,
        out: &mut BytesMut,
    ) -> Result<bool, OutputError> {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "content_block_delta" => {
                let Some(delta) = event.get_mut("delta").and_then(Value::as_object_mut) else {
                    return Ok(false);
                };
                let delta_type = delta
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let field = match delta_type {
                    "text_delta" => "text",
                    "thinking_delta" => "thinking",
                    "input_json_delta" => "partial_json",
                    "citations_delta" => {
                        return self.walk(event);
                    }
                    // Verified by the provider byte for byte; never text.
                    "signature_delta" => return Ok(false),
                    // A delta type this code does not know: its one text
                    // field gets a redactor of its own like the known ones;
                    // one that cannot be read that way fails closed.
                    _ => {
                        let fields: Vec<String> = delta
                            .iter()
                            .filter(|(k, v)| k.as_str() != "type" && v.is_string())
                            .map(|(k, _)| k.clone())
                            .collect();
                        let [field] = fields.as_slice() else {
                            return if fields.is_empty() {
                                Ok(false)
                            } else {
                                Err(OutputError::Uninspectable)
                            };
                        };
                        let field = field.clone();
                        let Some(Value::String(piece)) = delta.get(&field) else {
                            return Ok(false);
                        };
                        let piece = piece.clone();
                        let key = format!("{index}/{delta_type}:{field}");
                        let released = self.push(&key, &piece)?;
                        if released == piece {
                            return Ok(false);
                        }
                        delta.insert(field, Value::String(released));
                        return Ok(true);
                    }
                };
                let Some(Value::String(piece)) = delta.get(field) else {
                    return Ok(false);
                };
                let piece = piece.clone();
                let key = format!("{index}/{delta_type}");
                let released = self.push(&key, &piece)?;
                if released == piece {
                    return Ok(false);
                }
                delta.insert(field.into(), Value::String(released));
                Ok(true)
            }
            "content_block_stop" | "message_stop" | "message_delta" => {
                let prefix = if kind == "content_block_stop" {
                    format!("{index}/")
                } else {
                    String::new()
                };
                for (key, text) in self.flush_prefix(&prefix)? {
                    out.put_slice(&anthropic_delta(&key, text));
                }
                self.walk(event)
            }
            _ => self.walk(event),
        }
    }

    fn responses_event(
        &mut self,
        event: &mut Value,
        out: &mut BytesMut,
    ) -> Result<bool, OutputError> {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(family) = kind
            .strip_suffix(".delta")
            .or_else(|| kind.strip_suffix(".done"))
        else {
            // Events that repeat what the deltas streamed are redacted the
            // same way but not counted again.
            let repeat = matches!(
                kind.as_str(),
                "response.completed" | "response.incomplete" | "response.failed"
            ) || (kind == "response.output_item.done"
                && matches!(
                    event.pointer("/item/type").and_then(Value::as_str),
                    Some("message" | "function_call" | "reasoning")
                ));
            return if repeat {
                self.walk_repeat(event)
            } else {
                self.walk(event)
            };
        };
        let streamed = [
            "response.output_text",
            "response.refusal",
            "response.function_call_arguments",
            "response.reasoning_summary_text",
            "response.reasoning_text",
        ];
        // A `.delta` event of a family not listed (custom tool input, MCP
        // arguments, code-interpreter code, audio transcripts, and whatever
        // comes next) is streamed text all the same: it gets a redactor of
        // its own, so a value split across its deltas is caught.
        let generic_delta =
            kind.ends_with(".delta") && event.get("delta").is_some_and(Value::is_string);
        let live = self
            .streams
            .keys()
            .any(|k| k.starts_with(&format!("{family}|")));
        if !streamed.contains(&family) && !generic_delta && !live {
            // `response.content_part.done` repeats a part's streamed text.
            return if kind == "response.content_part.done" {
                self.walk_repeat(event)
            } else {
                self.walk(event)
            };
        }
        let item = event
            .get("item_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let part = event
            .get("content_index")
            .or_else(|| event.get("summary_index"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let key = format!("{family}|{item}|{part}");
        if kind.ends_with(".delta") {
            let Some(Value::String(piece)) = event.get("delta") else {
                return Ok(false);
            };
            let piece = piece.clone();
            let released = self.push(&key, &piece)?;
            let mut changed = false;
            if let Some(logprobs) = event.get_mut("logprobs")
                && logprobs.as_array().is_some_and(|l| !l.is_empty())
            {
                *logprobs = Value::Array(Vec::new());
                changed = true;
            }
            if released == piece {
                return Ok(changed);
            }
            event["delta"] = Value::String(released);
            return Ok(true);
        }
        // `.done`: release what the stream still held as one more delta, then
        // redact the done event's whole text.
        let text = self.flush(&key)?;
        if !text.is_empty() {
            out.put_slice(&responses_delta(&key, text, Some(&*event)));
        }
        self.walk_repeat(event)
    }

    /// Walks an event that repeats text already streamed as deltas (a
    /// Responses `.done` event, `response.completed`): the same edits are
    /// made, so the client sees the same text, but what they found was
    /// counted with the deltas and is not counted twice.
    /// Without deltas (a provider that sends only the whole texts) it is the
    /// only count and is kept.
    fn walk_repeat(&mut self, event: &mut Value) -> Result<bool, OutputError> {
        if !self.streamed {
            return self.walk(event);
        }
        let (links, counts) = (self.link_edits.len(), self.counts.clone());
        let changed = self.walk(event);
        self.link_edits.truncate(links);
        self.counts = counts;
        changed
    }
}

/// Adds acted-on findings to the per-type counts.
fn count(counts: &mut BTreeMap<String, usize>, edits: &[sensitive::Edit]) {
    for edit in edits {
        *counts
            .entry(super::inspect_input::type_label(edit.finding.kind))
            .or_default() += 1;
    }
}

fn blocked(kind: Kind) -> OutputError {
    OutputError::Blocked(super::inspect_input::type_label(kind))
}

/// Re-frames an event with new data, keeping its `event:` and `id:` fields.
fn encode(ev: &SseEvent, value: &Value) -> Bytes {
    let framed = SseEvent::encode_json(ev.event.as_deref(), value);
    match &ev.id {
        Some(id) => {
            let mut out = BytesMut::with_capacity(framed.len() + id.len() + 5);
            out.put_slice(b"id: ");
            out.put_slice(id.as_bytes());
            out.put_u8(b'\n');
            out.put_slice(&framed);
            out.freeze()
        }
        None => framed,
    }
}

/// `0/content` → ("content", 0, None); `0/tool/2` → ("tool", 0, Some(2)).
fn chat_key(key: &str) -> (u64, &str, Option<u64>) {
    let mut parts = key.split('/');
    let index = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let field = parts.next().unwrap_or("content");
    let call = parts.next().and_then(|p| p.parse().ok());
    (index, field, call)
}

fn append_chat_delta(delta: &mut Map<String, Value>, key: &str, text: String) {
    let (_, field, call) = chat_key(key);
    match (field, call) {
        ("function_call" | "audio", _) => {
            let (outer, inner) = if field == "audio" {
                ("audio", "transcript")
            } else {
                ("function_call", "arguments")
            };
            let slot = delta
                .entry(outer)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = slot {
                let existing = map
                    .get(inner)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                map.insert(inner.into(), Value::String(existing + &text));
            }
        }
        ("tool", Some(call_index)) => {
            let calls = delta
                .entry("tool_calls")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(calls) = calls {
                calls.push(json!({"index": call_index, "function": {"arguments": text}}));
            }
        }
        (field, _) => {
            let existing = delta
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            delta.insert(field.into(), Value::String(existing + &text));
        }
    }
}

fn chat_choice_for(key: &str, text: String) -> Value {
    let (index, _, _) = chat_key(key);
    let mut delta = Map::new();
    append_chat_delta(&mut delta, key, text);
    json!({"index": index, "delta": delta, "finish_reason": null})
}

fn anthropic_delta(key: &str, text: String) -> Bytes {
    let (index, delta_type) = key.split_once('/').unwrap_or(("0", "text_delta"));
    let index: u64 = index.parse().unwrap_or(0);
    // A delta type of unknown shape carries its field in the key.
    let (delta_type, field) = match delta_type.split_once(':') {
        Some((t, f)) => (t, f),
        None => (
            delta_type,
            match delta_type {
                "thinking_delta" => "thinking",
                "input_json_delta" => "partial_json",
                _ => "text",
            },
        ),
    };
    let event = json!({
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": delta_type, field: text},
    });
    SseEvent::encode_json(Some("content_block_delta"), &event)
}

fn responses_delta(key: &str, text: String, done: Option<&Value>) -> Bytes {
    let mut parts = key.split('|');
    let family = parts.next().unwrap_or("response.output_text");
    let mut event = Map::new();
    event.insert("type".into(), Value::String(format!("{family}.delta")));
    if let Some(Value::Object(done)) = done {
        for field in [
            "item_id",
            "output_index",
            "content_index",
            "summary_index",
            "sequence_number",
        ] {
            if let Some(v) = done.get(field) {
                event.insert(field.into(), v.clone());
            }
        }
    }
    event.insert("delta".into(), Value::String(text));
    SseEvent::encode_json(Some(&format!("{family}.delta")), &Value::Object(event))
}

#[cfg(test)]
mod tests;
