//! The internal view of one request: every text-bearing part of it, each with who
//! wrote it and where it sits in the body.
//!
//! Inspection (later stages) relies on this list being complete. A decoder that
//! forgets a part leaves a hole no detector can close, so decoders err on the side
//! of listing too much: every string of a tool schema, every tool argument, every
//! tool result, every content part that carries text.

use serde_json::Value;

use crate::DecodeError;

/// The provider API a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }

    /// The path of the endpoint, as clients and upstreams use it.
    pub fn path(self) -> &'static str {
        match self {
            Api::ChatCompletions => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Embeddings => "/v1/embeddings",
            Api::Messages => "/v1/messages",
        }
    }

    pub fn all() -> [Api; 4] {
        [
            Api::ChatCompletions,
            Api::Responses,
            Api::Embeddings,
            Api::Messages,
        ]
    }

    pub fn from_name(name: &str) -> Option<Api> {
        Api::all().into_iter().find(|a| a.as_str() == name)
    }
}

/// The role of the message a part belongs to, as the client declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            // `function` is the legacy name of the tool role in chat completions.
            "tool" | "function" => Role::Tool,
            _ => return None,
        })
    }

    /// Who wrote a message of this role, absent more specific knowledge.
    pub fn provenance(self) -> Provenance {
        match self {
            Role::System | Role::Developer => Provenance::Operator,
            Role::User => Provenance::User,
            Role::Assistant => Provenance::Model,
            Role::Tool => Provenance::Tool,
        }
    }
}

/// Who wrote a part. Detectors trust these differently: text the operator wrote
/// is the least suspicious, tool results and documents (which arrive from outside
/// and carry indirect injection) the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    Operator,
    User,
    Model,
    Tool,
    Document,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Operator => "operator",
            Provenance::User => "user",
            Provenance::Model => "model",
            Provenance::Tool => "tool",
            Provenance::Document => "document",
        }
    }
}

/// What a part is, beyond who wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// Message text (a string content, a text block or part, instructions).
    Text,
    /// Text of a tool or function definition, or of a response schema.
    ToolDefinition,
    /// Arguments of a tool call the model made.
    ToolArguments,
    /// What a tool returned.
    ToolResult,
    /// The model's reasoning, replayed by the client.
    Reasoning,
    /// Text to embed.
    EmbeddingInput,
}

/// One text-bearing part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// JSON Pointer (RFC 6901) of the string in the request body.
    pub pointer: String,
    pub role: Option<Role>,
    pub provenance: Provenance,
    pub kind: PartKind,
    pub text: String,
    /// The text is an object key (the last segment of `pointer`), not a
    /// string value: the provider reads it (a schema's property names, the
    /// fields of tool input), so it is inspected, but it cannot be rewritten
    /// without changing the shape the provider reads.
    pub key: bool,
}

/// A decoded request: what later stages need to know of it, with the body kept
/// beside it unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub api: Api,
    /// The model the client asked for (its public name in Halberd).
    pub model: String,
    pub stream: bool,
    /// The output cap the client set, under whatever name the API uses.
    pub max_output_tokens: Option<u64>,
    pub parts: Vec<Part>,
    /// Content parts that carry no text we can read (images, audio, files, token
    /// arrays); counted so that limits and audits can see them.
    pub opaque_parts: usize,
    /// Token ids sent as such (embeddings `input` arrays): each is one
    /// prompt token, exactly.
    pub token_ids: u64,
    /// Completions asked for (chat `n`); the output cap applies to each.
    pub choices: u64,
    /// The provider adds history we never see (Responses
    /// `previous_response_id` or `conversation`).
    pub server_history: bool,
}

impl Exchange {
    /// Decodes `body` as a request of `api`.
    pub fn decode(api: Api, body: &Value) -> Result<Exchange, DecodeError> {
        match api {
            Api::ChatCompletions => crate::openai::decode_chat(body),
            Api::Responses => crate::openai::decode_responses(body),
            Api::Embeddings => crate::openai::decode_embeddings(body),
            Api::Messages => crate::anthropic::decode_messages(body),
        }
    }

    /// Total bytes of text across all parts.
    pub fn text_len(&self) -> usize {
        self.parts.iter().map(|p| p.text.len()).sum()
    }
}

/// Builds an [`Exchange`] while walking a body: keeps the JSON Pointer and the
/// provider-notation path in step, so errors and parts both say where they are.
pub(crate) struct Walker {
    parts: Vec<Part>,
    pub opaque: usize,
    /// Parts past [`MAX_PARTS`], not kept.
    dropped: usize,
}

/// The most text parts one request may have. Counted while decoding, so
/// that a body of millions of tiny strings is refused before it is held as
/// millions of parts (an 8 MB body of tool-schema strings took 420 MB).
pub const MAX_PARTS: usize = 65_536;

impl Walker {
    pub fn new() -> Self {
        Walker {
            parts: Vec::new(),
            opaque: 0,
            dropped: 0,
        }
    }

    /// The parts, or an error if there were more than [`MAX_PARTS`].
    pub fn into_parts(self) -> Result<Vec<Part>, DecodeError> {
        if self.dropped > 0 {
            return Err(DecodeError::body(format!(
                "the request has more than {MAX_PARTS} text parts ({} in all)",
                self.parts.len() + self.dropped
            )));
        }
        Ok(self.parts)
    }

    pub fn push(
        &mut self,
        pointer: String,
        role: Option<Role>,
        provenance: Provenance,
        kind: PartKind,
        text: &str,
    ) {
        self.push_part(pointer, role, provenance, kind, text, false);
    }

    fn push_part(
        &mut self,
        pointer: String,
        role: Option<Role>,
        provenance: Provenance,
        kind: PartKind,
        text: &str,
        key: bool,
    ) {
        if self.parts.len() >= MAX_PARTS {
            self.dropped += 1;
            return;
        }
        self.parts.push(Part {
            pointer,
            role,
            provenance,
            kind,
            text: text.to_owned(),
            key,
        });
    }

    /// Records every string leaf under `value` (object values and array items,
    /// not object keys). Used for schemas and tool inputs, where any string may
    /// carry instructions.
    pub fn push_leaves(
        &mut self,
        pointer: &str,
        value: &Value,
        role: Option<Role>,
        provenance: Provenance,
        kind: PartKind,
    ) {
        self.leaves(pointer, value, role, provenance, kind, false);
    }

    /// Like [`Walker::push_leaves`], but for content a provider or a tool
    /// wrote in a shape we do not model: every string is text someone else
    /// wrote, except the fields that are identifiers or vocabulary and
    /// inline binary (`{"type": "base64", "data": …}`).
    pub fn push_text_leaves(
        &mut self,
        pointer: &str,
        value: &Value,
        role: Option<Role>,
        provenance: Provenance,
        kind: PartKind,
    ) {
        self.leaves(pointer, value, role, provenance, kind, true);
    }

    /// Every string leaf under `value`; with `skip_ids`, not those of
    /// [`NOT_TEXT`] fields nor inline base64 data.
    fn leaves(
        &mut self,
        pointer: &str,
        value: &Value,
        role: Option<Role>,
        provenance: Provenance,
        kind: PartKind,
        skip_ids: bool,
    ) {
        match value {
            Value::String(s) => self.push(pointer.to_owned(), role, provenance, kind, s),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.leaves(
                        &format!("{pointer}/{i}"),
                        v,
                        role,
                        provenance,
                        kind,
                        skip_ids,
                    );
                }
            }
            Value::Object(map) => {
                let base64 = map.get("type").and_then(Value::as_str) == Some("base64");
                for (k, v) in map {
                    if skip_ids && (NOT_TEXT.contains(&k.as_str()) || (base64 && k == "data")) {
                        continue;
                    }
                    let at = format!("{pointer}/{}", escape_pointer(k));
                    // A key the writer chose freely (a property name, a
                    // field of tool input) is read by the model like any
                    // text; a short plain identifier cannot hold a sentence
                    // or a value worth finding, and is left out.
                    if !is_identifier(k) {
                        self.push_part(at.clone(), role, provenance, kind, k, true);
                    }
                    self.leaves(&at, v, role, provenance, kind, skip_ids);
                }
            }
            _ => {}
        }
    }
}

/// Fields of unmodelled shapes whose strings are identifiers or vocabulary,
/// never text.
/// A short plain identifier (`location`, `max_tokens`, `user.id`, JSON
/// Schema's `$defs`): letters, digits, `_`, `-`, `.`, at most 40 of them,
/// after an optional `$`.
pub fn is_identifier(key: &str) -> bool {
    let name = key.strip_prefix('$').unwrap_or(key);
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

const NOT_TEXT: &[&str] = &[
    "type",
    "id",
    "tool_use_id",
    "call_id",
    "approval_request_id",
    "media_type",
    "mime_type",
    "signature",
    "encrypted_content",
    "status",
    "server_label",
    "file_id",
    "container_id",
];

/// Escapes one reference token of a JSON Pointer.
pub fn escape_pointer(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_owned()
    }
}

/// Longest model name accepted. Model ids of every provider are far shorter;
/// a longer one is free text headed for logs and usage records.
pub const MAX_MODEL_LEN: usize = 256;

/// The request's `model`: a non-empty string of at most [`MAX_MODEL_LEN`]
/// bytes.
pub(crate) fn model_name(body: &Value) -> Result<&str, DecodeError> {
    let model = required_str(body, "model")?;
    if model.len() > MAX_MODEL_LEN {
        return Err(DecodeError::at(
            "model",
            format!("must be at most {MAX_MODEL_LEN} bytes long"),
        ));
    }
    Ok(model)
}

pub(crate) fn required_str<'a>(body: &'a Value, field: &str) -> Result<&'a str, DecodeError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(DecodeError::at(field, "must not be empty")),
        Some(_) => Err(DecodeError::at(field, "must be a string")),
        None => Err(DecodeError::at(
            field,
            format!("missing required parameter '{field}'"),
        )),
    }
}

pub(crate) fn optional_bool(body: &Value, field: &str) -> Result<bool, DecodeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(DecodeError::at(field, "must be a boolean")),
    }
}

pub(crate) fn optional_u64(body: &Value, field: &str) -> Result<Option<u64>, DecodeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| DecodeError::at(field, "must be a non-negative integer")),
    }
}

pub(crate) fn array<'a>(body: &'a Value, field: &str) -> Result<&'a [Value], DecodeError> {
    match body.get(field) {
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(DecodeError::at(field, "must be an array")),
        None => Err(DecodeError::at(
            field,
            format!("missing required parameter '{field}'"),
        )),
    }
}

pub(crate) fn optional_array<'a>(
    body: &'a Value,
    field: &str,
    param: &str,
) -> Result<&'a [Value], DecodeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(DecodeError::at(param, "must be an array")),
    }
}
