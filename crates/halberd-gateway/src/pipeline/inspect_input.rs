//! Stage 3, inspect input: the decoded request and the key's policy in, the
//! request body rewritten (or the request refused) out.
//!
//! Every text-bearing part of the [`Exchange`] is scanned for PII and secrets:
//! all roles, content parts, tool definitions, tool-call arguments and results,
//! Responses input items and embeddings input. Each finding gets its policy
//! action; the edited text is written back into the body at the part's JSON
//! Pointer, so nothing else in the body changes. A `block` refuses the request
//! naming the type and the place, never the value. `pseudonymize` sends
//! per-request placeholders upstream and keeps the mapping in memory for the
//! output stage. Inspection fails closed: if an edit cannot be written back, the
//! request is refused, never forwarded unredacted.

use std::collections::BTreeMap;

use serde_json::Value;

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
    if policy.sensitive_input.is_off() {
        return Ok(inspection);
    }
    let detector = Detector::shared();
    for part in &exchange.parts {
        let findings = detector.scan(&part.text);
        if findings.is_empty() {
            continue;
        }
        let redaction = sensitive::redact(
            &part.text,
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
        if let Some(kind) = redaction.blocked() {
            return Err(GatewayError::SensitiveData {
                kind: type_label(kind),
                at: part.pointer.clone(),
            });
        }
        if redaction.changed() {
            let Some(slot) = body.pointer_mut(&part.pointer) else {
                tracing::error!(pointer = %part.pointer, "decoded part not found in the body");
                return Err(GatewayError::Internal);
            };
            *slot = Value::String(redaction.text);
        }
    }
    Ok(inspection)
}

/// Whether any input finding was pseudonymized (the response then needs
/// restoring).
pub fn pseudonymized(inspection: &InputInspection) -> bool {
    inspection
        .counts
        .keys()
        .any(|(_, action)| *action == Action::Pseudonymize.name())
}

/// Checks the policy's content limits on a decoded request. `prompt_tokens`
/// is called only when a token limit is set (counting costs a tokenizer pass).
pub fn check_content(
    limits: &crate::config::ContentLimits,
    body: &Value,
    exchange: &Exchange,
    body_bytes: usize,
    prompt_tokens: impl FnOnce() -> u64,
) -> Result<(), GatewayError> {
    let over = |what: &'static str, limit: Option<u64>, actual: u64| match limit {
        Some(limit) if actual > limit => Err(GatewayError::ContentLimit {
            what,
            limit,
            actual,
        }),
        _ => Ok(()),
    };
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
    )?;
    if limits.max_prompt_tokens.is_some() {
        over("prompt tokens", limits.max_prompt_tokens, prompt_tokens())?;
    }
    Ok(())
}
