//! The OpenAI APIs: chat completions, responses and embeddings. Request decoding
//! to [`Exchange`], the error shape, and the few stream rewrites the gateway needs.

use serde_json::{Map, Value, json};

use crate::exchange::{
    MAX_MODEL_LEN, Walker, array, model_name, optional_array, optional_bool, optional_u64,
};
use crate::{Api, DecodeError, Exchange, PartKind, Provenance, Role};

/// Decodes a `POST /v1/chat/completions` body.
pub fn decode_chat(body: &Value) -> Result<Exchange, DecodeError> {
    let model = model_name(body)?;
    let stream = optional_bool(body, "stream")?;
    // `max_completion_tokens` superseded `max_tokens`; a client may send either.
    let max_output_tokens =
        optional_u64(body, "max_completion_tokens")?.or(optional_u64(body, "max_tokens")?);
    // Each of `n` completions may be as long as the cap: the reservation
    // counts them all. The API takes 1 to 128.
    let choices = match optional_u64(body, "n")? {
        None => 1,
        Some(n @ 1..=128) => n,
        Some(_) => return Err(DecodeError::at("n", "must be between 1 and 128")),
    };
    let mut w = Walker::new();
    for (i, msg) in array(body, "messages")?.iter().enumerate() {
        let param = format!("messages[{i}]");
        let ptr = format!("/messages/{i}");
        let Some(obj) = msg.as_object() else {
            return Err(DecodeError::at(param, "must be an object"));
        };
        let role = match obj.get("role") {
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                DecodeError::at(format!("{param}.role"), format!("unknown role '{r}'"))
            })?,
            Some(_) => return Err(DecodeError::at(format!("{param}.role"), "must be a string")),
            None => {
                return Err(DecodeError::at(
                    format!("{param}.role"),
                    "missing required parameter 'role'",
                ));
            }
        };
        let kind = if role == Role::Tool {
            PartKind::ToolResult
        } else {
            PartKind::Text
        };
        let prov = role.provenance();
        match obj.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => w.push(format!("{ptr}/content"), Some(role), prov, kind, s),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    content_part(
                        &mut w,
                        part,
                        &format!("{param}.content[{j}]"),
                        &format!("{ptr}/content/{j}"),
                        role,
                        prov,
                        kind,
                    )?;
                }
            }
            Some(_) => {
                return Err(DecodeError::at(
                    format!("{param}.content"),
                    "must be a string or an array of content parts",
                ));
            }
        }
        if let Some(Value::String(s)) = obj.get("refusal") {
            w.push(
                format!("{ptr}/refusal"),
                Some(role),
                prov,
                PartKind::Text,
                s,
            );
        }
        for (k, call) in optional_array(msg, "tool_calls", &format!("{param}.tool_calls"))?
            .iter()
            .enumerate()
        {
            if let Some(Value::String(args)) = call.pointer("/function/arguments") {
                w.push(
                    format!("{ptr}/tool_calls/{k}/function/arguments"),
                    Some(role),
                    Provenance::Model,
                    PartKind::ToolArguments,
                    args,
                );
            }
            // Custom (free-form) tools carry their input as a plain string.
            if let Some(Value::String(input)) = call.pointer("/custom/input") {
                w.push(
                    format!("{ptr}/tool_calls/{k}/custom/input"),
                    Some(role),
                    Provenance::Model,
                    PartKind::ToolArguments,
                    input,
                );
            }
        }
        if let Some(Value::String(args)) = msg.pointer("/function_call/arguments") {
            w.push(
                format!("{ptr}/function_call/arguments"),
                Some(role),
                Provenance::Model,
                PartKind::ToolArguments,
                args,
            );
        }
    }
    for (k, tool) in optional_array(body, "tools", "tools")?.iter().enumerate() {
        w.push_leaves(
            &format!("/tools/{k}"),
            tool,
            None,
            Provenance::Operator,
            PartKind::ToolDefinition,
        );
    }
    for (k, f) in optional_array(body, "functions", "functions")?
        .iter()
        .enumerate()
    {
        w.push_leaves(
            &format!("/functions/{k}"),
            f,
            None,
            Provenance::Operator,
            PartKind::ToolDefinition,
        );
    }
    if let Some(schema) = body.pointer("/response_format/json_schema") {
        w.push_leaves(
            "/response_format/json_schema",
            schema,
            None,
            Provenance::Operator,
            PartKind::ToolDefinition,
        );
    }
    // A predicted output is text the model reads as a draft of its answer:
    // whoever wrote it, it is read like a user turn.
    if let Some(content) = body.pointer("/prediction/content") {
        w.push_text_leaves(
            "/prediction/content",
            content,
            Some(Role::User),
            Provenance::User,
            PartKind::Text,
        );
    }
    let opaque = w.opaque;
    let w_parts = w.into_parts()?;
    Ok(Exchange {
        api: Api::ChatCompletions,
        model: model.to_owned(),
        stream,
        max_output_tokens,
        parts: w_parts,
        opaque_parts: opaque,
        token_ids: 0,
        choices,
        server_history: false,
    })
}

/// One element of a content-part array. Parts with a `text` string are text
/// whatever their type says, so that a new text-bearing part type is not missed.
fn content_part(
    w: &mut Walker,
    part: &Value,
    param: &str,
    ptr: &str,
    role: Role,
    prov: Provenance,
    kind: PartKind,
) -> Result<(), DecodeError> {
    let Some(obj) = part.as_object() else {
        return Err(DecodeError::at(param, "must be an object"));
    };
    let mut found = false;
    for field in ["text", "refusal"] {
        if let Some(v) = obj.get(field) {
            let Value::String(s) = v else {
                return Err(DecodeError::at(
                    format!("{param}.{field}"),
                    "must be a string",
                ));
            };
            w.push(format!("{ptr}/{field}"), Some(role), prov, kind, s);
            found = true;
        }
    }
    if !found {
        w.opaque += 1;
    }
    Ok(())
}

/// Decodes a `POST /v1/responses` body.
/// The model a Responses request names. Without `model`, a request that
/// uses a stored prompt (`prompt.id`) runs the model the prompt was saved
/// with, chosen by the provider: its model is then
/// `prompt:<id>` ([`STORED_PROMPT_PREFIX`]), so that the configuration
/// routes it (`[[models]] name = "prompt:*"`), keys are scoped to it like
/// any model (a key limited to `gpt-4o-mini` cannot reach an `o3` prompt),
/// and, having no price, it is refused to keys with a cost budget.
fn responses_model(body: &Value) -> Result<String, DecodeError> {
    if matches!(body.get("model"), None | Some(Value::Null))
        && let Some(id) = body.pointer("/prompt/id").and_then(Value::as_str)
    {
        if id.is_empty() || id.len() + STORED_PROMPT_PREFIX.len() > MAX_MODEL_LEN {
            return Err(DecodeError::at(
                "prompt.id",
                format!(
                    "must be 1 to {} bytes long",
                    MAX_MODEL_LEN - STORED_PROMPT_PREFIX.len()
                ),
            ));
        }
        return Ok(format!("{STORED_PROMPT_PREFIX}{id}"));
    }
    model_name(body).map(str::to_owned)
}

/// The model name of a Responses request that runs a stored prompt's model.
pub const STORED_PROMPT_PREFIX: &str = "prompt:";

pub fn decode_responses(body: &Value) -> Result<Exchange, DecodeError> {
    let model = responses_model(body)?;
    let stream = optional_bool(body, "stream")?;
    let max_output_tokens = optional_u64(body, "max_output_tokens")?;
    let mut w = Walker::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => w.push(
            "/instructions".into(),
            Some(Role::System),
            Provenance::Operator,
            PartKind::Text,
            s,
        ),
        Some(_) => return Err(DecodeError::at("instructions", "must be a string")),
    }
    match body.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => w.push(
            "/input".into(),
            Some(Role::User),
            Provenance::User,
            PartKind::Text,
            s,
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                response_item(&mut w, item, &format!("input[{i}]"), &format!("/input/{i}"))?;
            }
        }
        Some(_) => {
            return Err(DecodeError::at(
                "input",
                "must be a string or an array of input items",
            ));
        }
    }
    for (k, tool) in optional_array(body, "tools", "tools")?.iter().enumerate() {
        w.push_leaves(
            &format!("/tools/{k}"),
            tool,
            None,
            Provenance::Operator,
            PartKind::ToolDefinition,
        );
    }
    if let Some(format) = body.pointer("/text/format") {
        w.push_leaves(
            "/text/format",
            format,
            None,
            Provenance::Operator,
            PartKind::ToolDefinition,
        );
    }
    // Reusable prompts take variables from the caller: user text by another name.
    if let Some(vars) = body.pointer("/prompt/variables") {
        w.push_leaves(
            "/prompt/variables",
            vars,
            Some(Role::User),
            Provenance::User,
            PartKind::Text,
        );
    }
    let opaque = w.opaque;
    let w_parts = w.into_parts()?;
    Ok(Exchange {
        api: Api::Responses,
        model,
        stream,
        max_output_tokens,
        parts: w_parts,
        opaque_parts: opaque,
        token_ids: 0,
        choices: 1,
        server_history: !matches!(body.get("previous_response_id"), None | Some(Value::Null))
            || !matches!(body.get("conversation"), None | Some(Value::Null)),
    })
}

fn response_item(w: &mut Walker, item: &Value, param: &str, ptr: &str) -> Result<(), DecodeError> {
    let Some(obj) = item.as_object() else {
        return Err(DecodeError::at(param, "must be an object"));
    };
    let item_type = obj.get("type").and_then(Value::as_str);
    match item_type {
        None | Some("message") => {
            let role = match obj.get("role") {
                Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                    DecodeError::at(format!("{param}.role"), format!("unknown role '{r}'"))
                })?,
                _ => {
                    return Err(DecodeError::at(
                        format!("{param}.role"),
                        "missing required parameter 'role'",
                    ));
                }
            };
            let prov = role.provenance();
            match obj.get("content") {
                Some(Value::String(s)) => w.push(
                    format!("{ptr}/content"),
                    Some(role),
                    prov,
                    PartKind::Text,
                    s,
                ),
                Some(Value::Array(parts)) => {
                    for (j, part) in parts.iter().enumerate() {
                        content_part(
                            w,
                            part,
                            &format!("{param}.content[{j}]"),
                            &format!("{ptr}/content/{j}"),
                            role,
                            prov,
                            PartKind::Text,
                        )?;
                    }
                }
                _ => {
                    return Err(DecodeError::at(
                        format!("{param}.content"),
                        "must be a string or an array of content parts",
                    ));
                }
            }
        }
        Some(
            "function_call_output"
            | "custom_tool_call_output"
            | "computer_call_output"
            | "local_shell_call_output"
            | "mcp_call_output",
        ) => {
            tool_output(w, obj.get("output"), &format!("{ptr}/output"));
        }
        Some("function_call") => {
            if let Some(Value::String(args)) = obj.get("arguments") {
                w.push(
                    format!("{ptr}/arguments"),
                    Some(Role::Assistant),
                    Provenance::Model,
                    PartKind::ToolArguments,
                    args,
                );
            }
        }
        Some("custom_tool_call") => {
            if let Some(Value::String(input)) = obj.get("input") {
                w.push(
                    format!("{ptr}/input"),
                    Some(Role::Assistant),
                    Provenance::Model,
                    PartKind::ToolArguments,
                    input,
                );
            }
        }
        Some("reasoning") => {
            for field in ["summary", "content"] {
                if let Some(Value::Array(parts)) = obj.get(field) {
                    for (j, part) in parts.iter().enumerate() {
                        if let Some(Value::String(s)) = part.get("text") {
                            w.push(
                                format!("{ptr}/{field}/{j}/text"),
                                Some(Role::Assistant),
                                Provenance::Model,
                                PartKind::Reasoning,
                                s,
                            );
                        }
                    }
                }
            }
        }
        Some(_) => {
            // An item type we do not model (a built-in tool call, file search
            // results, code-interpreter logs, an MCP server's tool list, a new
            // kind): whatever text it carries, in any field, came from a tool
            // or the model, never from the operator, so it is scored and
            // inspected as tool output.
            w.push_text_leaves(ptr, item, None, Provenance::Tool, PartKind::ToolResult);
        }
    }
    Ok(())
}

fn tool_output(w: &mut Walker, output: Option<&Value>, ptr: &str) {
    match output {
        Some(Value::String(s)) => w.push(
            ptr.to_owned(),
            Some(Role::Tool),
            Provenance::Tool,
            PartKind::ToolResult,
            s,
        ),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part.get("text") {
                    Some(Value::String(s)) => w.push(
                        format!("{ptr}/{j}/text"),
                        Some(Role::Tool),
                        Provenance::Tool,
                        PartKind::ToolResult,
                        s,
                    ),
                    _ => w.opaque += 1,
                }
            }
        }
        Some(other) => w.push_leaves(
            ptr,
            other,
            Some(Role::Tool),
            Provenance::Tool,
            PartKind::ToolResult,
        ),
        None => {}
    }
}

/// Decodes a `POST /v1/embeddings` body. Token-id inputs carry no text we can
/// read without the model's tokenizer; they are counted as opaque.
pub fn decode_embeddings(body: &Value) -> Result<Exchange, DecodeError> {
    let model = model_name(body)?;
    let mut w = Walker::new();
    let mut token_ids: u64 = 0;
    match body.get("input") {
        Some(Value::String(s)) => w.push(
            "/input".into(),
            Some(Role::User),
            Provenance::User,
            PartKind::EmbeddingInput,
            s,
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => w.push(
                        format!("/input/{i}"),
                        Some(Role::User),
                        Provenance::User,
                        PartKind::EmbeddingInput,
                        s,
                    ),
                    Value::Number(_) => {
                        w.opaque += 1;
                        token_ids += 1;
                    }
                    Value::Array(ids) => {
                        w.opaque += 1;
                        token_ids += ids.len() as u64;
                    }
                    _ => {
                        return Err(DecodeError::at(
                            format!("input[{i}]"),
                            "must be a string, a token id or an array of token ids",
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(DecodeError::at("input", "must be a string or an array")),
        None => {
            return Err(DecodeError::at(
                "input",
                "missing required parameter 'input'",
            ));
        }
    }
    let opaque = w.opaque;
    let w_parts = w.into_parts()?;
    Ok(Exchange {
        api: Api::Embeddings,
        model: model.to_owned(),
        stream: false,
        max_output_tokens: None,
        parts: w_parts,
        opaque_parts: opaque,
        token_ids,
        choices: 1,
        server_history: false,
    })
}

/// The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, error_type: &str, code: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": param, "code": code}})
}

/// Makes an upstream chat stream report usage, whatever the client asked.
/// Returns whether the client itself asked for the usage chunk, so that the
/// gateway can hold it back from clients that did not.
pub fn force_stream_usage(body: &mut Value) -> bool {
    let Some(obj) = body.as_object_mut() else {
        return false;
    };
    let opts = obj
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !opts.is_object() {
        *opts = Value::Object(Map::new());
    }
    let Some(opts) = opts.as_object_mut() else {
        return false;
    };
    let asked = opts
        .get("include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    opts.insert("include_usage".into(), Value::Bool(true));
    asked
}

/// Whether a chat stream chunk is the final usage-only chunk (`choices: []` with
/// a `usage` object) that OpenAI sends when `include_usage` is set.
pub fn is_usage_chunk(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && chunk.get("usage").is_some_and(Value::is_object)
}

/// Token usage as a provider reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included.
    pub input_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache (billed lower).
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

/// The most tokens one exchange is believed to report. A provider's (or a
/// hostile OpenAI-compatible server's) figure above it is not usage but a
/// fault, and would overflow budgets: such usage is treated as not reported,
/// and the exchange is counted by Halberd instead.
pub const MAX_REPORTED_TOKENS: u64 = 1 << 32;

/// Usage from a chat completion, a chat usage chunk, an embeddings response or a
/// Responses object (or its `response.completed` event).
pub fn usage(body: &Value) -> Option<Usage> {
    let u = body
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| body.pointer("/response/usage"))?;
    let get = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Value::as_u64);
    let cached = [
        "/prompt_tokens_details/cached_tokens",
        "/input_tokens_details/cached_tokens",
    ]
    .iter()
    .find_map(|p| u.pointer(p).and_then(Value::as_u64))
    .unwrap_or(0);
    Usage {
        input_tokens: get("prompt_tokens", "input_tokens")?,
        cached_input_tokens: cached,
        output_tokens: get("completion_tokens", "output_tokens").unwrap_or(0),
    }
    .plausible()
}

impl Usage {
    /// This usage, unless a figure in it is beyond [`MAX_REPORTED_TOKENS`].
    pub fn plausible(self) -> Option<Usage> {
        [
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
        ]
        .iter()
        .all(|n| *n <= MAX_REPORTED_TOKENS)
        .then_some(self)
    }
}

#[cfg(test)]
mod tests;
