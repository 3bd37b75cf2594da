//! The client-facing HTTP surface: routes, the edge middleware, and the handlers
//! that run the pipeline stages in order.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use halberd_protocol::Api;

use crate::AppState;
use crate::error::{Dialect, GatewayError};
use crate::events;
use crate::pipeline::{
    RequestCtx, admit, authenticate, decode, finish, forward, inspect_injection, inspect_input,
    route,
};
use crate::stages::Stage;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { GatewayError::NotFound })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .layer(middleware::from_fn(edge))
        .with_state(app)
}

/// A handler's error travels to [`edge`] in the response extensions; only there
/// are the caller's dialect and request id known, so only there is it rendered.
impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        resp.extensions_mut().insert(Arc::new(PendingError(self)));
        resp
    }
}

#[derive(Debug)]
struct PendingError(GatewayError);

/// Outermost layer, for every request: assigns the request id, picks the
/// caller's dialect, renders errors in it, and turns a panic in a handler into a
/// generic 500 (the process keeps serving; the log has the request id).
pub async fn edge(mut req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers());
    let dialect = Dialect::for_request(req.uri().path(), req.headers());
    // The URI shares its bytes: no copy unless a refusal is logged.
    let uri = req.uri().clone();
    req.extensions_mut().insert(RequestCtx {
        request_id: request_id.clone(),
        dialect,
        started: tokio::time::Instant::now(),
    });
    let head_over = req
        .extensions()
        .get::<crate::server::HeadTooLarge>()
        .copied();
    let malformed = req
        .headers()
        .get(crate::wire::MARKER)
        .map(|v| crate::wire::Fault::from_marker(v.as_bytes()));
    let run = async move {
        match (head_over, malformed) {
            (Some(limits), _) => GatewayError::HeadersTooLarge {
                bytes: limits.bytes,
                fields: limits.fields,
            }
            .into_response(),
            (None, Some(fault)) => GatewayError::Malformed { fault }.into_response(),
            (None, None) => next.run(req).await,
        }
    };
    let mut resp = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!(request_id, "handler panicked");
            GatewayError::Internal.respond(dialect, &request_id)
        }
    };
    if let Some(pending) = resp.extensions_mut().remove::<Arc<PendingError>>() {
        // Refusals of the client's own making (malformed, unknown path, bad
        // method, too large, bad key) would otherwise leave no trace; the
        // others log their own event. Never the body; the path capped.
        if pending.0.origin() == crate::error::Origin::Client {
            // A client's path may carry anything, an address or a key among
            // it: redacted like any text before it reaches the log.
            let path: String = uri.path().chars().take(256).collect();
            let findings = halberd_guard::sensitive::Detector::shared().scan(&path);
            let path = if findings.is_empty() {
                path
            } else {
                halberd_guard::sensitive::redact(
                    &path,
                    &findings,
                    &halberd_guard::sensitive::Policy::redact_all(),
                    &mut halberd_guard::sensitive::Pseudonyms::default(),
                )
                .text
            };
            tracing::info!(
                request_id,
                path = %path.escape_debug(),
                status = pending.0.status().as_u16(),
                code = pending.0.code(),
                "request refused"
            );
        }
        // Headers a handler set beside its error (x-ratelimit-*) stay.
        let extra = std::mem::take(resp.headers_mut());
        resp = pending.0.respond(dialect, &request_id);
        for (name, value) in &extra {
            if !resp.headers().contains_key(name) {
                resp.headers_mut().insert(name, value.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The client's own request id when it is short and plain, so traces join up
/// across services; a fresh one otherwise. Never an arbitrary string from a
/// client into our logs.
fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok())
        && (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return v.to_owned();
    }
    format!("req_{:032x}", rand::random::<u128>())
}

async fn chat_completions(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, GatewayError> {
    proxy(&app, Api::ChatCompletions, req).await
}

async fn responses(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, GatewayError> {
    proxy(&app, Api::Responses, req).await
}

async fn embeddings(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, GatewayError> {
    proxy(&app, Api::Embeddings, req).await
}

async fn messages(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, GatewayError> {
    proxy(&app, Api::Messages, req).await
}

/// `POST /v1/messages/count_tokens`, the Anthropic SDKs'
/// `messages.count_tokens`: the prompt's input tokens, counted here with the
/// tokenizer the gateway uses for the model's budgets (an estimate for Claude
/// models, whose tokenizer is not public), images and files at the
/// reservation's estimate. No provider call and nothing billed or rate
/// counted; scoped by the key as `/v1/messages` is (endpoint and models).
async fn count_tokens(
    State(app): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, GatewayError> {
    let ctx = request_ctx(&req)?;
    let (parts, body) = req.into_parts();
    let key = authenticate::authenticate(&app.keyring, &parts.headers, &ctx.request_id).await?;
    if !key.allows_endpoint(Api::Messages.as_str()) {
        return Err(GatewayError::EndpointNotAllowed {
            endpoint: Api::Messages.as_str(),
        });
    }
    let bytes = read_body(body, &parts.headers, &app.config.limits).await?;
    let mut value = halberd_protocol::json::parse_body(&bytes, app.config.limits.max_json_depth)?;
    // A count has no output cap; the Messages decoder requires one.
    if let Some(object) = value.as_object_mut() {
        object
            .entry("max_tokens")
            .or_insert_with(|| serde_json::Value::from(1));
    }
    let exchange = halberd_protocol::Exchange::decode(Api::Messages, &value)?;
    let route = route::route(&app.config, &key, &exchange)?;
    let anthropic =
        app.config.providers[route.provider].kind == crate::config::ProviderKind::Anthropic;
    let encoding = halberd_guard::tokens::Encoding::for_model(anthropic, &route.upstream_model);
    let tokens = encoding
        .count_parts(exchange.parts.iter().map(|p| p.text.as_str()))
        .saturating_add(admit::uncounted_input(&exchange));
    Ok(axum::Json(json!({"input_tokens": tokens})).into_response())
}

/// What [`edge`] set on the request: its id, dialect and start.
fn request_ctx(req: &Request) -> Result<RequestCtx, GatewayError> {
    req.extensions()
        .get::<RequestCtx>()
        .cloned()
        .ok_or(GatewayError::Internal)
}

/// The pipeline, in order.
async fn proxy(app: &AppState, api: Api, req: Request) -> Result<Response, GatewayError> {
    let ctx = request_ctx(&req)?;
    let (parts, body) = req.into_parts();
    let t = tokio::time::Instant::now();
    let key = authenticate::authenticate(&app.keyring, &parts.headers, &ctx.request_id).await?;
    if !key.allows_endpoint(api.as_str()) {
        return Err(GatewayError::EndpointNotAllowed {
            endpoint: api.as_str(),
        });
    }
    let policy_name = key.policy.as_deref().unwrap_or("default");
    let policy = app
        .config
        .policies
        .get(policy_name)
        .cloned()
        .ok_or_else(|| GatewayError::PolicyNotFound {
            name: policy_name.to_owned(),
        })?;
    let user_limits = match &key.user {
        Some(user) => Some(app.keyring.user_limits(user).await.map_err(|e| {
            // Fail closed: limits that cannot be read are not skipped.
            tracing::error!(request_id = %ctx.request_id, error = %e, "cannot read user limits");
            GatewayError::Unavailable {
                message: "limits cannot be checked right now; retry shortly".into(),
            }
        })?),
        None => None,
    };
    let t = Stage::Authenticate.done(t);
    let scopes = admit::scopes(&key, &policy.limits, user_limits.as_ref());
    let permit = app
        .limiter
        .admit(&scopes, tokio::time::Instant::now())
        .await
        .inspect_err(|e| limit_hit(&ctx.request_id, &key.id, e))?;
    Stage::Admit.done(t);
    let mut rate_headers = HeaderMap::new();
    if let Some(rate) = &permit.rate {
        admit::set_rate_headers(&mut rate_headers, rate, ctx.dialect);
    }
    let result = admitted(
        app,
        api,
        &ctx,
        parts,
        body,
        &key,
        &policy,
        &scopes,
        permit,
        &mut rate_headers,
    )
    .await;
    // The x-ratelimit-* headers go on every response after admission, errors
    // included.
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    for (name, value) in &rate_headers {
        resp.headers_mut().insert(name, value.clone());
    }
    Stage::Handler.done(ctx.started);
    Ok(resp)
}

/// Logs a refusal by limit name and scope kind: a user's name (which may be
/// an email address) stays out of the log.
fn limit_hit(request_id: &str, key_id: &str, e: &GatewayError) {
    let (limit, scope) = match e {
        GatewayError::RateLimited { limit, scope, .. }
        | GatewayError::BudgetExceeded { limit, scope, .. } => (*limit, *scope),
        _ => return,
    };
    events::LimitHit {
        request_id,
        key_id,
        limit,
        scope,
    }
    .emit();
}

/// The pipeline after admission.
#[allow(clippy::too_many_arguments)]
async fn admitted(
    app: &AppState,
    api: Api,
    ctx: &RequestCtx,
    parts: http::request::Parts,
    body: Body,
    key: &halberd_store::KeyRecord,
    policy: &std::sync::Arc<crate::config::GuardPolicy>,
    scopes: &[admit::Scope],
    permit: admit::Permit,
    rate_headers: &mut HeaderMap,
) -> Result<Response, GatewayError> {
    let t = tokio::time::Instant::now();
    let bytes = read_body(body, &parts.headers, &app.config.limits).await?;
    let t = Stage::Read.done(t);
    let (value, exchange) = decode::decode(
        api,
        &parts.headers,
        &bytes,
        app.config.limits.max_json_depth,
    )?;
    // Size and shape first: a request the policy refuses anyway costs no
    // inspection.
    inspect_input::check_shape(&policy.content, &value, &exchange, bytes.len())?;
    // The tools the request declares, against the policy's tool rules (read
    // here only when the policy has rules; `forward` reads them again for
    // the answer's calls).
    if policy.tools.limits_declarations()
        && let Some(tool) = policy
            .tools
            .refused(&crate::pipeline::tool_policy::Declared::of(api, &value))
    {
        events::GuardTriggered {
            request_id: &ctx.request_id,
            guard: "tool_policy",
            kind: "tool_not_allowed",
            action: "block",
        }
        .emit();
        return Err(GatewayError::ToolNotAllowed {
            tool: tool.to_owned(),
        });
    }
    let t = Stage::Decode.done(t);
    // Large bodies are inspected on the blocking pool: a scan is linear in
    // its input but a multi-megabyte part still takes milliseconds, which
    // must not stall the async workers (and `/healthz`) for everyone else.
    let (mut value, exchange, inspected) = if bytes.len() >= OFFLOAD_INSPECTION_BYTES {
        let policy = policy.clone();
        tokio::task::spawn_blocking(move || {
            let mut value = value;
            let inspected = inspect(&policy, &mut value, &exchange);
            (value, exchange, inspected)
        })
        .await
        .map_err(|_| GatewayError::Internal)?
    } else {
        let mut value = value;
        let inspected = inspect(policy, &mut value, &exchange);
        (value, exchange, inspected)
    };
    let (injection, inspection) = inspected.inspect_err(|e| match e {
        GatewayError::PromptInjection {
            at, score_milli, ..
        } => {
            let kind = format!("score={:.3} at={at}", f32::from(*score_milli) / 1000.0);
            events::GuardTriggered {
                request_id: &ctx.request_id,
                guard: "injection",
                kind: &kind,
                action: "block",
            }
            .emit();
        }
        GatewayError::SensitiveData { kind, .. } => {
            events::GuardTriggered {
                request_id: &ctx.request_id,
                guard: "sensitive_input",
                kind,
                action: "block",
            }
            .emit();
        }
        _ => {}
    })?;
    let injection_header = injection.header();
    if let Some(summary) = &injection_header {
        events::GuardTriggered {
            request_id: &ctx.request_id,
            guard: "injection",
            kind: summary,
            action: "flag",
        }
        .emit();
    }
    let transformed = inspect_injection::transform(&policy.injection, &mut value, &exchange)?;
    if transformed.canary.is_some() || transformed.spotlit > 0 {
        tracing::debug!(
            request_id = %ctx.request_id,
            canary = transformed.canary.is_some(),
            spotlit = transformed.spotlit,
            "injection transforms applied"
        );
    }
    let t = Stage::Inspect.done(t);
    let route = route::route(&app.config, key, &exchange)?;
    let anthropic =
        app.config.providers[route.provider].kind == crate::config::ProviderKind::Anthropic;
    let encoding = halberd_guard::tokens::Encoding::for_model(anthropic, &route.upstream_model);
    // Counted once, and only when a token limit, a budget or a prompt-size
    // limit needs it now; otherwise only if the provider reports no usage.
    let counts_tokens = scopes.iter().any(|s| s.limits.counts_tokens());
    let count = || {
        encoding
            .count_parts(exchange.parts.iter().map(|p| p.text.as_str()))
            .saturating_add(exchange.token_ids)
    };
    let counted = (counts_tokens || policy.content.max_prompt_tokens.is_some()).then(count);
    inspect_input::check_prompt_tokens(&policy.content, || counted.unwrap_or_else(count))?;
    let prompt = counted.unwrap_or(0);
    let price = app.config.rate_limits.prices.get(&route.upstream_model);
    // Room for the usage record before anything is reserved or forwarded: a
    // store too far behind refuses new work instead of losing its record.
    let slot = app.ledger.reserve(&ctx.request_id).await?;
    let policy_cap = policy.content.max_output_tokens;
    let reservation = if counts_tokens {
        let cap = policy_cap.map_or(app.config.rate_limits.max_output_tokens, |p| {
            p.min(app.config.rate_limits.max_output_tokens)
        });
        // Each of `n` completions may reach the cap; what we cannot count
        // (images, files, server-side history) is reserved conservatively
        // and settled on what the provider reports.
        let max_output =
            admit::cap_output(&mut value, &exchange, cap).saturating_mul(exchange.choices);
        let prompt = prompt.saturating_add(admit::uncounted_input(&exchange));
        let cost =
            admit::worst_case_cost(scopes, price, &route.upstream_model, prompt, max_output)?;
        app.limiter
            .reserve(
                scopes,
                prompt,
                max_output,
                cost,
                tokio::time::Instant::now(),
                halberd_store::now_unix(),
            )
            .await
            .inspect_err(|e| limit_hit(&ctx.request_id, &key.id, e))?
    } else {
        if let Some(cap) = policy_cap {
            admit::cap_output(&mut value, &exchange, cap);
        }
        None
    };
    if let Some(rate) = reservation.as_ref().and_then(|r| r.rate) {
        admit::set_rate_headers(rate_headers, &rate, ctx.dialect);
    }
    let accounting = finish::Accounting {
        slot,
        key_id: key.id.clone(),
        user: key.user.clone(),
        price,
        reservation,
        encoding,
        prompt: match counted {
            Some(n) => finish::Prompt::Counted(n),
            None => {
                finish::Prompt::Uncounted(exchange.parts.iter().map(|p| p.text.clone()).collect())
            }
        },
    };
    Stage::Route.done(t);
    let mut resp = forward::forward(
        app,
        ctx,
        route,
        value,
        &exchange,
        &parts.headers,
        policy,
        inspection,
        permit,
        accounting,
    )
    .await?;
    if let Some(value) = injection_header.and_then(|h| HeaderValue::from_str(&h).ok()) {
        resp.headers_mut()
            .insert(inspect_injection::INJECTION_HEADER, value);
    }
    Ok(resp)
}

/// Request bodies at least this large are inspected off the async workers.
const OFFLOAD_INSPECTION_BYTES: usize = 64 * 1024;

/// The input inspections, in order: prompt injection, then sensitive data
/// (which rewrites `value`).
fn inspect(
    policy: &crate::config::GuardPolicy,
    value: &mut serde_json::Value,
    exchange: &halberd_protocol::Exchange,
) -> Result<
    (
        inspect_injection::InjectionReport,
        inspect_input::InputInspection,
    ),
    GatewayError,
> {
    let injection = inspect_injection::inspect_injection(&policy.injection, exchange)?;
    let inspection = inspect_input::inspect_input(policy, value, exchange)?;
    Ok((injection, inspection))
}

/// Reads the body within the size limit and in time: a client that declares
/// a body and sends it slowly (or never) would otherwise hold its connection
/// and its concurrency slot for as long as it likes.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &crate::config::Limits,
) -> Result<bytes::Bytes, GatewayError> {
    let limit = limits.max_body_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let expected = declared.unwrap_or(limit as u64);
    let allowed =
        limits.body_read_timeout + std::time::Duration::from_secs(expected / limits.body_min_rate);
    let read = tokio::time::timeout(allowed, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| GatewayError::BodyTimeout)?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            GatewayError::BodyTooLarge { limit }
        } else {
            GatewayError::InvalidRequest {
                message: "could not read the request body".into(),
                param: None,
            }
        }
    })
}

/// The models this key may use: named routes only (a pattern such as
/// `mock-*` is not a model).
fn visible_models<'a>(
    app: &'a AppState,
    key: &halberd_store::KeyRecord,
) -> impl Iterator<Item = &'a crate::config::ModelRoute> {
    app.config
        .models
        .iter()
        .filter(move |m| !m.is_pattern() && key.allows_model(&m.name))
}

fn model_object(
    app: &AppState,
    dialect: Dialect,
    id: &str,
    m: &crate::config::ModelRoute,
) -> serde_json::Value {
    match dialect {
        Dialect::OpenAi => {
            json!({"id": id, "object": "model", "created": 0, "owned_by": app.config.providers[m.provider].name})
        }
        Dialect::Anthropic => {
            json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z", "lifecycle": "active"})
        }
    }
}

/// The request's context and key, for the model endpoints.
async fn models_caller(
    app: &AppState,
    req: Request,
) -> Result<(RequestCtx, halberd_store::KeyRecord), GatewayError> {
    let ctx = request_ctx(&req)?;
    let key = authenticate::authenticate(&app.keyring, req.headers(), &ctx.request_id).await?;
    if !key.allows_endpoint("models") {
        return Err(GatewayError::EndpointNotAllowed { endpoint: "models" });
    }
    Ok((ctx, key))
}

async fn models(State(app): State<Arc<AppState>>, req: Request) -> Result<Response, GatewayError> {
    let (ctx, key) = models_caller(&app, req).await?;
    let visible: Vec<_> = visible_models(&app, &key).collect();
    let data: Vec<_> = visible
        .iter()
        .map(|m| model_object(&app, ctx.dialect, &m.name, m))
        .collect();
    let body = match ctx.dialect {
        Dialect::OpenAi => json!({"object": "list", "data": data}),
        Dialect::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": visible.first().map(|m| m.name.clone()),
            "last_id": visible.last().map(|m| m.name.clone()),
        }),
    };
    Ok(axum::Json(body).into_response())
}

/// One model (`client.models.retrieve`), scoped like the list: a model the
/// key may not use is as unknown as one that does not exist. A name that a
/// pattern route serves (`mock-7` under `mock-*`) is a model too, as it is
/// to the generation endpoints, though the list cannot enumerate it.
async fn model(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Result<Response, GatewayError> {
    let (ctx, key) = models_caller(&app, req).await?;
    let models = &app.config.models;
    let found = models
        .iter()
        .find(|m| !m.is_pattern() && m.name == id)
        .or_else(|| models.iter().find(|m| m.matches(&id)))
        .filter(|_| id.len() <= halberd_protocol::exchange::MAX_MODEL_LEN && key.allows_model(&id));
    match found {
        Some(m) => Ok(axum::Json(model_object(&app, ctx.dialect, &id, m)).into_response()),
        None => Err(GatewayError::UnknownModel {
            model: id
                .chars()
                .take(halberd_protocol::exchange::MAX_MODEL_LEN)
                .collect(),
        }),
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let store = app.keyring.store().ping().await;
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness check failed");
    }
    // Redis down is a degraded mode (limits follow their fail mode), not a
    // reason to take the replica out of rotation; the check says which.
    let limits = match app.limiter.redis_health().await {
        None => "local",
        Some(true) => "redis",
        Some(false) => "redis_unavailable",
    };
    let checks = json!({
        "store": if store.is_ok() { "ok" } else { "unavailable" },
        "limits": limits,
    });
    if store.is_ok() {
        axum::Json(json!({"status": "ready", "checks": checks})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "checks": checks})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_generic_500_in_the_callers_dialect() {
        async fn boom() -> Response {
            panic!("secret internal detail")
        }
        let app = Router::new()
            .route("/v1/chat/completions", post(boom))
            .route("/v1/messages", post(boom))
            .layer(middleware::from_fn(edge));
        for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(resp.headers().contains_key(REQUEST_ID_HEADER));
            let body = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(!String::from_utf8_lossy(&body).contains("secret internal detail"));
            assert_eq!(v["error"]["code"], "internal_error");
            assert_eq!(v["type"] == "error", anthropic);
        }
    }

    #[tokio::test]
    async fn refusals_before_authentication_are_logged_without_the_body() {
        let capture = crate::test_logs::LogCapture::default();
        let subscriber = capture.subscriber();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .fallback(|| async { GatewayError::NotFound })
            .layer(middleware::from_fn(edge));
        let req = Request::builder()
            .method("POST")
            .uri("/v1/nowhere/ann.lee@example.org")
            .header(REQUEST_ID_HEADER, "req-probe-1")
            .body(Body::from("{\"secret\": \"sk-do-not-log\"}"))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let logs = capture.text();
        assert!(logs.contains("request refused"), "{logs}");
        assert!(logs.contains("req-probe-1"), "{logs}");
        assert!(logs.contains("/v1/nowhere/[EMAIL]"), "{logs}");
        assert!(!logs.contains("ann.lee"), "{logs}");
        assert!(logs.contains("status=404"), "{logs}");
        assert!(!logs.contains("sk-do-not-log"), "{logs}");
    }
}
