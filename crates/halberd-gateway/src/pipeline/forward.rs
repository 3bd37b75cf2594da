//! Stage 4, forward: the decoded request and its route in, the client's response
//! out.
//!
//! The body goes upstream as the client sent it, with two changes: `model` is
//! set to the provider's model id, and chat streams ask for usage
//! (`stream_options.include_usage`) so that every stream is metered; the relay
//! holds the usage chunk back from clients that did not ask for it.
//!
//! Upstream errors are mapped, not mirrored blindly: errors about the client's
//! request (400, 404, 409, 413, 422) and rate limits (429) pass through in the
//! provider's own shape, which is the caller's; the provider refusing our
//! credentials becomes a 502 that says so without echoing anything; other
//! failures become 502 (or 504 for timeouts).

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use halberd_protocol::{Api, Exchange, PartKind, Provenance, anthropic, openai};

use crate::AppState;
use crate::config::GuardPolicy;
use crate::error::GatewayError;
use crate::events;
use crate::pipeline::RequestCtx;
use crate::pipeline::finish::Finish;
use crate::pipeline::inspect_input::InputInspection;
use crate::pipeline::inspect_output::{OutputError, OutputInspector};
use crate::pipeline::route::Route;
use crate::relay::Relay;
use crate::upstream::{BodyError, BodyStream};

/// Largest non-streamed upstream body we accept.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest upstream error body we read.
const MAX_UPSTREAM_ERROR_BODY: usize = 1024 * 1024;

/// Marks responses that carry AI-generated content (EU AI Act art. 50
/// transparency): machine-readable, on every successful model response.
pub const AI_GENERATED_HEADER: &str = "x-halberd-ai-generated";

/// Header naming what input inspection found and did, e.g.
/// `email=1:pseudonymize, secret:aws_access_key_id=1:redact`.
pub const SENSITIVE_INPUT_HEADER: &str = "x-halberd-sensitive-input";

/// Header naming what the output checks did to a whole answer, e.g.
/// `links(image:sentence=1:strip), prompt_leak(62%:flag)` (streamed
/// answers: the guard log only, their headers are sent first).
pub const OUTPUT_HEADER: &str = "x-halberd-output";

/// Header counting the hidden characters removed from the request by class,
/// e.g. `tags=31, bidi=2` (the policy's `sanitize`).
pub const SANITIZED_HEADER: &str = "x-halberd-sanitized";

#[allow(clippy::too_many_arguments)]
pub async fn forward(
    app: &AppState,
    ctx: &RequestCtx,
    route: Route,
    mut body: Value,
    ex: &Exchange,
    headers: &HeaderMap,
    policy: &GuardPolicy,
    inspection: InputInspection,
    permit: super::admit::Permit,
    accounting: super::finish::Accounting,
) -> Result<Response, GatewayError> {
    let input_summary = inspection.summary();
    if let Some(summary) = &input_summary {
        events::GuardTriggered {
            request_id: &ctx.request_id,
            guard: "sensitive_input",
            kind: summary,
            action: "applied",
        }
        .emit();
    }
    let summary_header = input_summary.and_then(|s| HeaderValue::from_str(&s).ok());
    let sanitized = inspection.sanitized.summary();
    if let Some(summary) = &sanitized {
        events::GuardTriggered {
            request_id: &ctx.request_id,
            guard: "sanitize",
            kind: summary,
            action: "remove",
        }
        .emit();
    }
    let sanitized_header = sanitized.and_then(|s| HeaderValue::from_str(&s).ok());
    // Values of the request's text that an answer's link must not carry out.
    let links = halberd_guard::links::LinkGuard::new(
        policy.links.clone(),
        ex.parts.iter().map(|p| p.text.as_str()),
    );
    let mut output = OutputInspector::new(
        policy.sensitive_output.clone(),
        inspection.pseudonyms,
        links,
    );
    // The operator's prompt, fingerprinted when the policy watches for
    // answers that copy it and it is long enough to be worth hiding.
    if let Some(block) = policy.prompt_leak.block
        && let Some(print) = halberd_guard::leak::PromptPrint::new(
            ex.parts
                .iter()
                .filter(|p| p.provenance == Provenance::Operator && p.kind == PartKind::Text)
                .map(|p| p.text.as_str()),
        )
    {
        let watch = halberd_guard::leak::LeakWatch::new(
            std::sync::Arc::new(print),
            policy.prompt_leak.share,
        );
        output = output.watching_prompt_leaks(watch, block);
    }
    // Embeddings answer with vectors (floats or base64), never text: there is
    // nothing to redact, and a base64 vector must not be edited.
    let mut output = (!output.is_noop() && ex.api != Api::Embeddings).then_some(output);
    let provider = app.upstreams.provider(route.provider);
    if let Some(obj) = body.as_object_mut() {
        // A stored prompt without a model (see `decode_responses`) runs the
        // prompt's own model, unless the route names one.
        let prompt_model =
            obj.get("model").is_none_or(Value::is_null) && route.upstream_model == ex.model;
        if prompt_model {
            obj.remove("model");
        } else {
            obj.insert("model".into(), Value::String(route.upstream_model.clone()));
        }
    }
    let hide_usage_chunk =
        ex.api == Api::ChatCompletions && ex.stream && !openai::force_stream_usage(&mut body);
    // The tools the answer may call: the ones this request declares.
    let declared = super::tool_policy::Declared::of(ex.api, &body).limited(&policy.tools);
    // The JSON schema the answer must follow, when the request asks for one.
    let schema = super::output_schema::SchemaCheck::of(ex.api, &body);
    let mut finish = Finish::new(
        &ctx.request_id,
        ex.api,
        &ex.model,
        &provider.name,
        ctx.started,
    );
    finish.hold(permit);
    finish.account(accounting);
    let sent = tokio::time::Instant::now();
    let upstream = app
        .upstreams
        .send(route.provider, ex.api, &body, ex, headers)
        .await;
    crate::metrics::upstream_duration(&provider.name, sent.elapsed());
    crate::stages::Stage::Upstream.done(sent);
    let upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            finish.failed(e.code());
            return Err(e);
        }
    };
    finish.set_status(upstream.status.as_u16());
    let idle = provider.timeouts.idle;
    let deadline = ctx.started + provider.timeouts.total;

    if !upstream.status.is_success() {
        finish.failed("upstream_error");
        events::UpstreamFailed {
            request_id: &ctx.request_id,
            provider: &provider.name,
            status: upstream.status.as_u16(),
        }
        .emit();
        let body = collect(upstream.body, idle, deadline, MAX_UPSTREAM_ERROR_BODY)
            .await
            .unwrap_or_default();
        return map_upstream_error(
            ex.api,
            upstream.status,
            upstream.retry_after,
            &body,
            output.as_mut(),
        );
    }

    let is_sse = upstream
        .content_type
        .as_ref()
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
    if ex.stream && is_sse {
        let relay = Relay::new(
            upstream.body,
            ex.api,
            hide_usage_chunk,
            idle,
            deadline,
            finish,
            output.take(),
        )
        .renaming(crate::relay::ModelRename::new(
            &route.upstream_model,
            &ex.model,
        ))
        .checking_tools(super::tool_policy::StreamCheck::new(declared))
        .checking_schema(schema.map(super::output_schema::StreamSchema::new));
        let mut resp = Response::new(Body::from_stream(relay.into_stream()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(AI_GENERATED_HEADER, HeaderValue::from_static("true"));
        if let Some(v) = summary_header {
            h.insert(SENSITIVE_INPUT_HEADER, v);
        }
        if let Some(v) = sanitized_header {
            h.insert(SANITIZED_HEADER, v);
        }
        return Ok(resp);
    }

    let bytes = match collect(upstream.body, idle, deadline, MAX_UPSTREAM_BODY).await {
        Ok(b) => b,
        Err(e) => {
            finish.failed(e.code());
            return Err(e);
        }
    };
    let parsed = serde_json::from_slice::<Value>(&bytes);
    if let Ok(v) = &parsed {
        let usage = if ex.api == Api::Messages {
            anthropic::usage(v)
        } else {
            openai::usage(v)
        };
        match usage {
            Some(u) => finish.set_usage(u),
            // No usage reported: count the whole answer (framing included,
            // which errs high).
            None => finish.relayed_text(&String::from_utf8_lossy(&bytes)),
        }
    }
    // The client hears the model name it asked for, not the provider's id.
    let (bytes, parsed) = match crate::relay::ModelRename::new(&route.upstream_model, &ex.model)
        .and_then(|r| r.apply(std::str::from_utf8(&bytes).ok()?))
    {
        Some(renamed) => {
            let bytes = Bytes::from(renamed);
            let parsed = serde_json::from_slice::<Value>(&bytes);
            (bytes, parsed)
        }
        None => (bytes, parsed),
    };
    if let Ok(v) = &parsed {
        match super::tool_policy::check_whole(ex.api, &declared, v) {
            Ok(flagged) => super::tool_rules::report(&ctx.request_id, &flagged),
            Err(fault) => {
                events::GuardTriggered {
                    request_id: &ctx.request_id,
                    guard: "tool_policy",
                    kind: fault.code(),
                    action: "block",
                }
                .emit();
                finish.failed(fault.code());
                return Err(GatewayError::ToolCall { fault });
            }
        }
    }
    if let (Some(schema), Ok(v)) = (&schema, &parsed)
        && let Err(violation) = schema.check_whole(ex.api, v)
    {
        events::GuardTriggered {
            request_id: &ctx.request_id,
            guard: "output_schema",
            kind: "output_schema_violation",
            action: if schema.strict { "block" } else { "flag" },
        }
        .emit();
        if schema.strict {
            finish.failed("output_schema_violation");
            return Err(GatewayError::OutputSchema { violation });
        }
    }
    let mut output_summary = None;
    let bytes = match (output.as_mut(), parsed) {
        (None, _) => bytes,
        (Some(output), Ok(mut v)) => {
            let result = output.whole(&mut v);
            output.report(&ctx.request_id);
            output_summary = output.summary();
            match result {
                // Nothing rewritten: the provider's bytes as they came.
                Ok(false) => bytes,
                Ok(true) => {
                    Bytes::from(serde_json::to_vec(&v).map_err(|_| GatewayError::Internal)?)
                }
                Err(e) => {
                    let e = output_error(e);
                    finish.failed(e.code());
                    return Err(e);
                }
            }
        }
        (Some(_), Err(_)) => {
            // Fail closed: a body we cannot read is a body we cannot inspect.
            finish.failed("upstream_error");
            return Err(GatewayError::Upstream {
                status: 200,
                message: "the response is not JSON and cannot be inspected".into(),
            });
        }
    };
    finish.add_bytes(bytes.len());
    finish.completed();
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        upstream
            .content_type
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    h.insert(AI_GENERATED_HEADER, HeaderValue::from_static("true"));
    if let Some(v) = summary_header {
        h.insert(SENSITIVE_INPUT_HEADER, v);
    }
    if let Some(v) = sanitized_header {
        h.insert(SANITIZED_HEADER, v);
    }
    if let Some(v) = output_summary.and_then(|s| HeaderValue::from_str(&s).ok()) {
        h.insert(OUTPUT_HEADER, v);
    }
    Ok(resp)
}

pub fn output_error(e: OutputError) -> GatewayError {
    match e {
        OutputError::Blocked(kind) => GatewayError::OutputBlocked { kind },
        OutputError::Link(edit) => GatewayError::OutputLink {
            kind: edit.to_string(),
        },
        OutputError::PromptLeak => GatewayError::PromptLeak,
        OutputError::Uninspectable => GatewayError::Upstream {
            status: 200,
            message: "the response cannot be inspected".into(),
        },
    }
}

/// Reads a whole body under the idle and total timeouts and a size cap.
async fn collect(
    mut body: BodyStream,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    max: usize,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::new();
    loop {
        let wait = (tokio::time::Instant::now() + idle).min(deadline);
        match tokio::time::timeout_at(wait, body.next()).await {
            Err(_) | Ok(Some(Err(BodyError::Timeout))) => {
                return Err(GatewayError::UpstreamTimeout);
            }
            Ok(Some(Err(BodyError::Read))) => return Err(GatewayError::UpstreamUnreachable),
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > max {
                    return Err(GatewayError::Upstream {
                        status: 200,
                        message: "response too large".into(),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
        }
    }
}

/// The provider's error, relayed or mapped. Its text is provider output like
/// any answer (a 4xx body may quote the prompt, a 5xx message may carry
/// anything): it goes through the same output inspection, and a body the
/// policy would block is replaced by a generic error.
fn map_upstream_error(
    api: Api,
    status: StatusCode,
    retry_after: Option<HeaderValue>,
    body: &[u8],
    output: Option<&mut OutputInspector>,
) -> Result<Response, GatewayError> {
    let mut parsed: Option<Value> = serde_json::from_slice(body)
        .ok()
        .filter(|v: &Value| v.get("error").is_some());
    let withheld = || GatewayError::Upstream {
        status: status.as_u16(),
        message: "the provider's error message was withheld: it contained sensitive data".into(),
    };
    let inspected = match (output, parsed.as_mut()) {
        (Some(output), Some(v)) => output.whole(v).is_ok(),
        _ => true,
    };
    match status.as_u16() {
        400 | 404 | 409 | 413 | 422 | 429 if parsed.is_some() => {
            if !inspected {
                return Err(withheld());
            }
            let relayed = parsed.as_ref().map_or_else(
                || Bytes::copy_from_slice(body),
                |v| Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            );
            let mut resp = Response::new(Body::from(relayed));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(ra) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, ra);
            }
            Ok(resp)
        }
        401 | 403 => Err(GatewayError::UpstreamAuth),
        408 | 504 => Err(GatewayError::UpstreamTimeout),
        _ if !inspected => Err(withheld()),
        s => {
            let message = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str))
                .map(|m| m.chars().take(300).collect::<String>())
                .unwrap_or_else(|| {
                    format!(
                        "no error detail ({})",
                        if api == Api::Messages {
                            "anthropic"
                        } else {
                            "openai"
                        }
                    )
                });
            Err(GatewayError::Upstream { status: s, message })
        }
    }
}
