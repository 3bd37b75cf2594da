//! The Anthropic Messages API: request decoding to [`Exchange`], the error shape,
//! and usage as its streams report it.

use serde_json::{Value, json};

use crate::exchange::{Walker, array, model_name, optional_array, optional_bool, optional_u64};
use crate::openai::Usage;
use crate::{Api, DecodeError, Exchange, PartKind, Provenance, Role};

/// Decodes a `POST /v1/messages` body.
pub fn decode_messages(body: &Value) -> Result<Exchange, DecodeError> {
    let model = model_name(body)?;
    let stream = optional_bool(body, "stream")?;
    let max_output_tokens = optional_u64(body, "max_tokens")?;
    let mut w = Walker::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => w.push(
            "/system".into(),
            Some(Role::System),
            Provenance::Operator,
            PartKind::Text,
            s,
        ),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                content_block(
                    &mut w,
                    block,
                    &format!("system.{i}"),
                    &format!("/system/{i}"),
                    Role::System,
                    Provenance::Operator,
                )?;
            }
        }
        Some(_) => {
            return Err(DecodeError::at(
                "system",
                "must be a string or an array of text blocks",
            ));
        }
    }
    for (i, msg) in array(body, "messages")?.iter().enumerate() {
        let param = format!("messages.{i}");
        let ptr = format!("/messages/{i}");
        let role = match msg.get("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => {
                Role::parse(r).unwrap_or(Role::User)
            }
            Some(Value::String(r)) => {
                return Err(DecodeError::at(
                    format!("{param}.role"),
                    format!("unknown role '{r}'; expected 'user' or 'assistant'"),
                ));
            }
            Some(_) => return Err(DecodeError::at(format!("{param}.role"), "must be a string")),
            None => return Err(DecodeError::at(format!("{param}.role"), "field required")),
        };
        let prov = role.provenance();
        match msg.get("content") {
            Some(Value::String(s)) => w.push(
                format!("{ptr}/content"),
                Some(role),
                prov,
                PartKind::Text,
                s,
            ),
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    content_block(
                        &mut w,
                        block,
                        &format!("{param}.content.{j}"),
                        &format!("{ptr}/content/{j}"),
                        role,
                        prov,
                    )?;
                }
            }
            Some(_) => {
                return Err(DecodeError::at(
                    format!("{param}.content"),
                    "must be a string or an array of content blocks",
                ));
            }
            None => {
                return Err(DecodeError::at(
                    format!("{param}.content"),
                    "field required",
                ));
            }
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
    // Required by the Messages API, which refuses a request without it;
    // checked last, so that other errors are named as the API names them.
    if max_output_tokens.is_none() {
        return Err(DecodeError::at("max_tokens", "Field required"));
    }
    let opaque = w.opaque;
    let w_parts = w.into_parts()?;
    Ok(Exchange {
        api: Api::Messages,
        model: model.to_owned(),
        stream,
        max_output_tokens,
        parts: w_parts,
        opaque_parts: opaque,
        token_ids: 0,
        choices: 1,
        server_history: false,
    })
}

/// One content block. `role` and `prov` are those of the enclosing message; the
/// block type can override provenance (a tool result inside a user message was
/// written by the tool, a document by whoever wrote the document).
fn content_block(
    w: &mut Walker,
    block: &Value,
    param: &str,
    ptr: &str,
    role: Role,
    prov: Provenance,
) -> Result<(), DecodeError> {
    let Some(obj) = block.as_object() else {
        return Err(DecodeError::at(param, "must be an object"));
    };
    let str_field = |field: &str| -> Result<Option<&str>, DecodeError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(DecodeError::at(
                format!("{param}.{field}"),
                "must be a string",
            )),
        }
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = str_field("text")?
                .ok_or_else(|| DecodeError::at(format!("{param}.text"), "field required"))?;
            w.push(
                format!("{ptr}/text"),
                Some(role),
                prov,
                PartKind::Text,
                text,
            );
        }
        Some("thinking") => {
            if let Some(t) = str_field("thinking")? {
                w.push(
                    format!("{ptr}/thinking"),
                    Some(role),
                    Provenance::Model,
                    PartKind::Reasoning,
                    t,
                );
            }
        }
        Some("tool_use" | "server_tool_use") => {
            if let Some(input) = obj.get("input") {
                w.push_leaves(
                    &format!("{ptr}/input"),
                    input,
                    Some(role),
                    Provenance::Model,
                    PartKind::ToolArguments,
                );
            }
        }
        Some("tool_result") => match obj.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => w.push(
                format!("{ptr}/content"),
                Some(Role::Tool),
                Provenance::Tool,
                PartKind::ToolResult,
                s,
            ),
            Some(Value::Array(blocks)) => {
                for (j, b) in blocks.iter().enumerate() {
                    tool_result_block(
                        w,
                        b,
                        &format!("{param}.content.{j}"),
                        &format!("{ptr}/content/{j}"),
                    )?;
                }
            }
            Some(_) => {
                return Err(DecodeError::at(
                    format!("{param}.content"),
                    "must be a string or an array of content blocks",
                ));
            }
        },
        Some("document") => document(w, obj, ptr),
        Some("search_result") => {
            if let Some(Value::String(t)) = obj.get("title") {
                w.push(
                    format!("{ptr}/title"),
                    Some(role),
                    Provenance::Document,
                    PartKind::Text,
                    t,
                );
            }
            if let Some(Value::Array(blocks)) = obj.get("content") {
                for (j, b) in blocks.iter().enumerate() {
                    if let Some(Value::String(t)) = b.get("text") {
                        w.push(
                            format!("{ptr}/content/{j}/text"),
                            Some(role),
                            Provenance::Document,
                            PartKind::Text,
                            t,
                        );
                    }
                }
            }
        }
        Some(t) if t.ends_with("_tool_result") => {
            // Results of server tools (`web_fetch_tool_result`,
            // `code_execution_tool_result`, `web_search_tool_result`) and of
            // MCP servers (`mcp_tool_result`): text a tool or the web wrote.
            if let Some(content) = obj.get("content") {
                w.push_text_leaves(
                    &format!("{ptr}/content"),
                    content,
                    Some(Role::Tool),
                    Provenance::Tool,
                    PartKind::ToolResult,
                );
            }
        }
        Some(_) | None => {
            // Images, redacted thinking and block types we do not model. A block
            // with a `text` string is still text, whatever its type.
            match obj.get("text") {
                Some(Value::String(t)) => {
                    w.push(format!("{ptr}/text"), Some(role), prov, PartKind::Text, t)
                }
                _ => w.opaque += 1,
            }
        }
    }
    Ok(())
}

fn tool_result_block(
    w: &mut Walker,
    block: &Value,
    param: &str,
    ptr: &str,
) -> Result<(), DecodeError> {
    let Some(obj) = block.as_object() else {
        return Err(DecodeError::at(param, "must be an object"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("document") => document(w, obj, ptr),
        Some("search_result") => content_block(w, block, param, ptr, Role::Tool, Provenance::Tool)?,
        _ => match obj.get("text") {
            Some(Value::String(t)) => w.push(
                format!("{ptr}/text"),
                Some(Role::Tool),
                Provenance::Tool,
                PartKind::ToolResult,
                t,
            ),
            _ => w.opaque += 1,
        },
    }
    Ok(())
}

/// A document block: plain-text sources, nested content blocks, title and
/// context are all text that someone other than the user may have written.
fn document(w: &mut Walker, obj: &serde_json::Map<String, Value>, ptr: &str) {
    let mut found = false;
    for field in ["title", "context"] {
        if let Some(Value::String(t)) = obj.get(field) {
            w.push(
                format!("{ptr}/{field}"),
                None,
                Provenance::Document,
                PartKind::Text,
                t,
            );
            found = true;
        }
    }
    match obj.get("source") {
        Some(src) if src.get("type").and_then(Value::as_str) == Some("text") => {
            if let Some(Value::String(t)) = src.get("data") {
                w.push(
                    format!("{ptr}/source/data"),
                    None,
                    Provenance::Document,
                    PartKind::Text,
                    t,
                );
                found = true;
            }
        }
        Some(src) if src.get("type").and_then(Value::as_str) == Some("content") => {
            match src.get("content") {
                Some(Value::String(t)) => {
                    w.push(
                        format!("{ptr}/source/content"),
                        None,
                        Provenance::Document,
                        PartKind::Text,
                        t,
                    );
                    found = true;
                }
                Some(Value::Array(blocks)) => {
                    for (j, b) in blocks.iter().enumerate() {
                        if let Some(Value::String(t)) = b.get("text") {
                            w.push(
                                format!("{ptr}/source/content/{j}/text"),
                                None,
                                Provenance::Document,
                                PartKind::Text,
                                t,
                            );
                            found = true;
                        }
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    if !found {
        // PDF and URL sources: bytes we cannot read here.
        w.opaque += 1;
    }
}

/// The Anthropic error body. Anthropic's shape has no `code`; we add ours beside
/// `type` (the SDKs ignore fields they do not know) so the reason is machine-
/// readable in both dialects.
pub fn error_body(message: &str, error_type: &str, code: &str, request_id: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message, "code": code}, "request_id": request_id})
}

/// Usage from a Messages response, or from a `message_start` / `message_delta`
/// stream event (the former reports input tokens, the latter the output so far).
pub fn usage(body: &Value) -> Option<Usage> {
    let u = body
        .get("usage")
        .or_else(|| body.pointer("/message/usage"))?;
    let field = |name: &str| u.get(name).and_then(Value::as_u64).unwrap_or(0);
    // Anthropic counts cache reads and cache writes apart from input_tokens;
    // Halberd's input is all three. Cache writes are priced as input (they
    // cost 1.25× on Anthropic's list: the difference is not budgeted).
    let cached = field("cache_read_input_tokens");
    let input = field("input_tokens")
        .saturating_add(field("cache_creation_input_tokens"))
        .saturating_add(cached);
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    }
    .plausible()
}

#[cfg(test)]
mod tests;
