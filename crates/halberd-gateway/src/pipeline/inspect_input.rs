//! Stage 4, inspect input: the decoded request and the key's policy in, the
//! request body rewritten (or the request refused) out.
//!
//! Each text first loses the hidden characters the policy's `sanitize`
//! removes ([`halberd_guard::sanitize`]); the PII scan then reads the text
//! as it will go upstream. Every text-bearing part of the [`Exchange`] is scanned for PII and secrets:
//! all roles, content parts, tool definitions, tool-call arguments and results,
//! Responses input items and embeddings input. Each finding gets its policy
//! action; the edited text is written back into the body at the part's JSON
//! Pointer, so nothing else in the body changes. A `block` refuses the request
//! naming the type and the place, never the value. `pseudonymize` sends
//! per-request placeholders upstream and keeps the mapping in memory for the
//! output stage. Inspection fails closed: if an edit cannot be written back, the
//! request is refused, never forwarded unredacted.
//!
//! The parts are what the decoders model; a provider reads more (`user`,
//! `metadata`, a message's `name`, `stop_sequences`, an image URL, fields
//! added after this was written). Every other string value of the body is
//! then scanned with the same policy, except the fields that must stay exact
//! ([`EXACT_FIELDS`]: ids, signatures, enumerations) and inline binary data
//! (base64 and `data:` URLs), which a text redaction would only corrupt.

use std::collections::BTreeMap;

use serde_json::Value;

use halberd_guard::sanitize;
use halberd_guard::sensitive::{self, Action, Detector, Pseudonyms};
use halberd_protocol::Exchange;

use crate::config::GuardPolicy;
use crate::error::GatewayError;

/// What input inspection found and did.
#[derive(Debug, Default)]
pub struct InputInspection {
    pub pseudonyms: Pseudonyms,
    /// Findings by type name (`email`, `secret:npm_token`) and action.
    pub counts: BTreeMap<(String, &'static str), usize>,
    /// Hidden characters removed from the forwarded text, by class.
    pub sanitized: sanitize::Removed,
}

impl InputInspection {
    /// `email=2:redact, secret:npm_token=1:flag` for the response header.
    pub fn summary(&self) -> Option<String> {
        if self.counts.is_empty() {
            return None;
        }
        let items: Vec<String> = self
            .counts
            .iter()
            .map(|((kind, action), n)| format!("{kind}={n}:{action}"))
            .collect();
        Some(items.join(", "))
    }
}

pub fn type_label(kind: sensitive::Kind) -> String {
    match kind.secret_kind() {
        Some(family) => format!("secret:{family}"),
        None => kind.type_name().to_owned(),
    }
}

pub fn inspect_input(
    policy: &GuardPolicy,
    body: &mut Value,
    exchange: &Exchange,
) -> Result<InputInspection, GatewayError> {
    let mut inspection = InputInspection::default();
    if policy.sensitive_input.is_off() && policy.sanitize.is_off() {
        return Ok(inspection);
    }
    for part in &exchange.parts {
        if part.key {
            if !policy.sensitive_input.is_off() {
                inspect_key(policy, &part.text, &part.pointer, &mut inspection)?;
            }
            continue;
        }
        if let Some(text) = clean_text(policy, &part.text, &part.pointer, &mut inspection)? {
            let Some(slot) = body.pointer_mut(&part.pointer) else {
                tracing::error!(pointer = %part.pointer, "decoded part not found in the body");
                return Err(GatewayError::Internal);
            };
            *slot = Value::String(text);
        }
    }
    let covered: std::collections::HashSet<&str> =
        exchange.parts.iter().map(|p| p.pointer.as_str()).collect();
    let mut pointer = String::new();
    inspect_rest(policy, body, &covered, &mut pointer, &mut inspection)?;
    Ok(inspection)
}

/// Fields whose string values go upstream exactly as sent: identifiers the
/// provider matches, signatures it verifies, and words of its own vocabulary.
/// A value found in one of them stays (redacting it would break the call and
/// protect nothing: these are never free text).
pub const EXACT_FIELDS: &[&str] = &[
    "model",
    "type",
    "role",
    "object",
    "status",
    "id",
    "tool_call_id",
    "tool_use_id",
    "call_id",
    "item_id",
    "file_id",
    "response_id",
    "previous_response_id",
    "container_id",
    "signature",
    "encrypted_content",
    "media_type",
    "mime_type",
    "format",
    "detail",
    "tool_choice",
    "reasoning_effort",
    "effort",
    "service_tier",
    "truncation",
    "modalities",
    "voice",
];

/// Scans every string of `value` the decoders did not model, as
/// [`inspect_input`] scans parts. `pointer` is the JSON Pointer of `value`.
fn inspect_rest(
    policy: &GuardPolicy,
    value: &mut Value,
    covered: &std::collections::HashSet<&str>,
    pointer: &mut String,
    inspection: &mut InputInspection,
) -> Result<(), GatewayError> {
    match value {
        Value::Object(map) => {
            // Inline binary: `{"type": "base64", "data": …}` and kin.
            let base64 = map.get("type").and_then(Value::as_str) == Some("base64");
            for (key, child) in map.iter_mut() {
                if EXACT_FIELDS.contains(&key.as_str())
                    || (base64 && key == "data")
                    || matches!(key.as_str(), "file_data" | "b64_json")
                {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&halberd_protocol::exchange::escape_pointer(key));
                // A free-form key (`metadata` keys are the client's own) goes
                // upstream too; keys the decoders took as parts are done.
                if !halberd_protocol::exchange::is_identifier(key)
                    && !covered.contains(pointer.as_str())
                    && !policy.sensitive_input.is_off()
                {
                    inspect_key(policy, key, pointer, inspection)?;
                }
                inspect_rest(policy, child, covered, pointer, inspection)?;
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = pointer.len();
                // Written into the buffer: no String per array item.
                let _ = std::fmt::Write::write_fmt(pointer, format_args!("/{i}"));
                inspect_rest(policy, child, covered, pointer, inspection)?;
                pointer.truncate(len);
            }
        }
        Value::String(text) => {
            if covered.contains(pointer.as_str()) || text.starts_with("data:") {
                return Ok(());
            }
            if let Some(new) = clean_text(policy, text, pointer, inspection)? {
                *text = new;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// `text` scanned and redacted under the input policy, every edit counted;
/// `None` when nothing was found.
fn redact_counted(
    policy: &GuardPolicy,
    text: &str,
    inspection: &mut InputInspection,
) -> Option<sensitive::Redaction> {
    let findings = Detector::shared().scan(text);
    if findings.is_empty() {
        return None;
    }
    let redaction = sensitive::redact(
        text,
        &findings,
        &policy.sensitive_input,
        &mut inspection.pseudonyms,
    );
    for edit in &redaction.edits {
        *inspection
            .counts
            .entry((type_label(edit.finding.kind), edit.action.name()))
            .or_default() += 1;
    }
    Some(redaction)
}

/// An object key at `pointer` under the input policy: counted, and refused
/// when the policy would change it (block, redact, mask, hash: a key cannot
/// be rewritten without changing what the provider reads).
fn inspect_key(
    policy: &GuardPolicy,
    key: &str,
    pointer: &str,
    inspection: &mut InputInspection,
) -> Result<(), GatewayError> {
    let Some(redaction) = redact_counted(policy, key, inspection) else {
        return Ok(());
    };
    let kind = redaction.blocked().or_else(|| {
        redaction
            .changed()
            .then(|| redaction.edits.first().map(|e| e.finding.kind))
            .flatten()
    });
    match kind {
        // The pointer ends in the key itself, the very value found: it names
        // the object instead, so the error never carries the value.
        Some(kind) => Err(GatewayError::SensitiveData {
            kind: type_label(kind),
            at: format!(
                "a key of {}",
                pointer.rsplit_once('/').map_or("", |(parent, _)| parent)
            ),
        }),
        None => Ok(()),
    }
}

/// One text at `pointer` as it goes upstream: hidden characters removed by
/// the policy's `sanitize`, then sensitive data handled by its input policy;
/// the new text when either changed it.
fn clean_text(
    policy: &GuardPolicy,
    text: &str,
    pointer: &str,
    inspection: &mut InputInspection,
) -> Result<Option<String>, GatewayError> {
    let sanitized = sanitize::sanitize(text, &policy.sanitize, &mut inspection.sanitized);
    if policy.sensitive_input.is_off() {
        return Ok(sanitized);
    }
    let redacted = inspect_text(
        policy,
        sanitized.as_deref().unwrap_or(text),
        pointer,
        inspection,
    )?;
    Ok(redacted.or(sanitized))
}

/// One text at `pointer` under the input policy: counted, refused on a
/// `block`, and the edited text when the policy changed it.
fn inspect_text(
    policy: &GuardPolicy,
    text: &str,
    pointer: &str,
    inspection: &mut InputInspection,
) -> Result<Option<String>, GatewayError> {
    let Some(redaction) = redact_counted(policy, text, inspection) else {
        return Ok(None);
    };
    if let Some(kind) = redaction.blocked() {
        return Err(GatewayError::SensitiveData {
            kind: type_label(kind),
            at: pointer.to_owned(),
        });
    }
    Ok(redaction.changed().then_some(redaction.text))
}

/// Whether any input finding was pseudonymized (the response then needs
/// restoring).
pub fn pseudonymized(inspection: &InputInspection) -> bool {
    inspection
        .counts
        .keys()
        .any(|(_, action)| *action == Action::Pseudonymize.name())
}

/// Checks the policy's size and shape limits on a decoded request, before
/// any inspection: a request too big to be allowed is refused before the
/// detectors spend time on it.
pub fn check_shape(
    limits: &crate::config::ContentLimits,
    body: &Value,
    exchange: &Exchange,
    body_bytes: usize,
) -> Result<(), GatewayError> {
    let len = |field: &str| {
        body.get(field)
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as u64
    };
    let messages = match exchange.api {
        halberd_protocol::Api::Responses => len("input"),
        _ => len("messages"),
    };
    over("bytes", limits.max_request_bytes, body_bytes as u64)?;
    over("messages", limits.max_messages, messages)?;
    over("tools", limits.max_tools, len("tools"))?;
    over("text parts", limits.max_parts, exchange.parts.len() as u64)?;
    over(
        "image, audio or file parts",
        limits.max_opaque_parts,
        exchange.opaque_parts as u64,
    )
}

/// The policy's prompt-token limit; `prompt_tokens` is called only when one
/// is set (counting costs a tokenizer pass, with the routed model's
/// tokenizer, so after routing).
pub fn check_prompt_tokens(
    limits: &crate::config::ContentLimits,
    prompt_tokens: impl FnOnce() -> u64,
) -> Result<(), GatewayError> {
    if limits.max_prompt_tokens.is_some() {
        over("prompt tokens", limits.max_prompt_tokens, prompt_tokens())?;
    }
    Ok(())
}

fn over(what: &'static str, limit: Option<u64>, actual: u64) -> Result<(), GatewayError> {
    match limit {
        Some(limit) if actual > limit => Err(GatewayError::ContentLimit {
            what,
            limit,
            actual,
        }),
        _ => Ok(()),
    }
}
