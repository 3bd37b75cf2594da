//! The admin API, on its own listener (default 127.0.0.1:8788): the same key
//! operations as `halberd keys`, through the same [`Keyring`], so every action is
//! recorded in the store. Protected by a bearer token read from the environment
//! at start-up; without one, every call is refused. `GET /openapi.json`
//! describes it (and needs no token: the document holds no secrets).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderMap;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use halberd_store::{KeySpec, KeyUpdate, StoreError, now_unix};

use crate::AppState;
use crate::duration::parse_duration;
use crate::error::GatewayError;
use crate::events;

pub const OPENAPI: &str = include_str!("admin/openapi.json");

pub fn router(app: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", get(get_key).patch(update_key))
        .route("/admin/keys/{id}/rotate", post(rotate_key))
        .route("/admin/keys/{id}/revoke", post(revoke_key))
        .route("/admin/keys/{id}/usage", get(key_usage))
        .route("/admin/users", get(list_users))
        .route(
            "/admin/users/{user}/limits",
            get(get_user_limits).patch(update_user_limits),
        )
        .route("/admin/users/{user}/usage", get(user_usage))
        .route("/admin/events", get(list_events))
        .route("/admin/usage", get(usage))
        .route(
            "/admin/stages",
            get(|| async { axum::Json(crate::stages::snapshot()) }),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .merge(protected)
        .route(
            "/openapi.json",
            get(|| async { ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|| async { GatewayError::NotFound })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .layer(middleware::from_fn(crate::http::edge))
        .with_state(app)
}

/// `GET /metrics`: open on the admin listener, or behind `[metrics]
/// token_env`'s token when one is configured.
async fn metrics(State(app): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    if let Some(token) = &app.metrics_token {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
            return GatewayError::AdminUnauthorized.into_response();
        }
    }
    let capacity = app.config.usage_queue;
    let body = crate::metrics::render(app.ledger.queued(), capacity);
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn require_token(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.admin_token else {
        return GatewayError::AdminDisabled.into_response();
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
        tracing::warn!(target: "halberd::admin", "admin token rejected");
        return GatewayError::AdminUnauthorized.into_response();
    }
    next.run(req).await
}

/// Who did it: `admin-api`, plus the operator's name from `x-halberd-actor`
/// when it is a plain identifier.
fn actor(headers: &HeaderMap) -> String {
    match headers.get("x-halberd-actor").and_then(|v| v.to_str().ok()) {
        Some(a)
            if (1..=64).contains(&a.len())
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) =>
        {
            format!("admin-api:{a}")
        }
        _ => "admin-api".into(),
    }
}

fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::NotFound(id) => GatewayError::KeyNotFound { id },
        StoreError::Revoked(id) => GatewayError::Conflict {
            message: format!("key {id} is revoked"),
        },
        StoreError::Invalid { field, reason } => GatewayError::InvalidRequest {
            message: format!("{field}: {reason}"),
            param: Some(field.to_owned()),
        },
        other => {
            tracing::error!(error = %other, "admin store operation failed");
            GatewayError::Unavailable {
                message: "the key store is unavailable".into(),
            }
        }
    }
}

/// Parses a JSON body with errors in the API's shape.
fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, GatewayError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| GatewayError::InvalidRequest {
        message: format!("invalid request body: {e}"),
        param: None,
    })
}

fn expires_at(expires_in: Option<&str>, now: i64) -> Result<Option<i64>, GatewayError> {
    expires_in
        .map(|s| {
            let d = parse_duration(s).map_err(|m| GatewayError::InvalidRequest {
                message: m,
                param: Some("expires_in".into()),
            })?;
            Ok(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        })
        .transpose()
}

/// A key may only name a policy the configuration in force has: a typo
/// would otherwise make every request of the key fail at run time.
fn known_policy(app: &AppState, policy: Option<&str>) -> Result<(), GatewayError> {
    app.config
        .known_policy(policy)
        .map_err(|message| GatewayError::InvalidRequest {
            message,
            param: Some("policy".into()),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    user: Option<String>,
    /// Also accepted as `allowed_models`, the name the key record uses.
    #[serde(default, alias = "allowed_models")]
    models: Vec<String>,
    #[serde(default, alias = "allowed_endpoints")]
    endpoints: Vec<String>,
    expires_in: Option<String>,
    policy: Option<String>,
    metadata: Option<Value>,
    #[serde(default)]
    limits: halberd_store::KeyLimits,
}

async fn create_key(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, GatewayError> {
    let req: CreateKey = json_body(&body)?;
    known_policy(&app, req.policy.as_deref())?;
    let now = now_unix();
    let spec = KeySpec {
        name: req.name,
        user: req.user,
        expires_at: expires_at(req.expires_in.as_deref(), now)?,
        allowed_models: req.models,
        allowed_endpoints: req.endpoints,
        policy: req.policy,
        metadata: req.metadata,
        limits: req.limits,
    };
    let actor = actor(&headers);
    let issued = app
        .keyring
        .create(spec, &actor, now)
        .await
        .map_err(store_error)?;
    events::AdminAction {
        action: "key.create",
        key_id: &issued.record.id,
        actor: &actor,
    }
    .emit();
    Ok((http::StatusCode::CREATED, axum::Json(issued)).into_response())
}

async fn list_keys(State(app): State<Arc<AppState>>) -> Result<Response, GatewayError> {
    let keys = app.keyring.list().await.map_err(store_error)?;
    Ok(axum::Json(json!({"data": keys})).into_response())
}

async fn key_usage(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    // 404 for a key that does not exist, not an empty report.
    app.keyring.get(&id).await.map_err(store_error)?;
    let report = crate::usage_report(
        app.keyring.store(),
        halberd_store::UsageScope::Key(&id),
        now_unix(),
    )
    .await
    .map_err(store_error)?;
    Ok(axum::Json(json!({"key_id": id, "usage": report})).into_response())
}

/// `GET /admin/usage?by=key|user|model|day&since=T&until=T`: the usage
/// records summed per group (`crate::usage`); `since` defaults to 30 days
/// ago, `until` to now.
async fn usage(
    State(app): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, GatewayError> {
    let bad = |param: &str, message: String| GatewayError::InvalidRequest {
        message,
        param: Some(param.into()),
    };
    let by = q.get("by").map_or("key", String::as_str);
    let by = halberd_store::UsageGroup::parse(by).ok_or_else(|| {
        bad(
            "by",
            format!("by must be key, user, model or day, not {by:?}"),
        )
    })?;
    let now = now_unix();
    let since = match q.get("since") {
        Some(s) => crate::usage::parse_bound(s, now).map_err(|e| bad("since", e))?,
        None => now - 30 * 86_400,
    };
    let until = match q.get("until") {
        Some(s) => crate::usage::parse_bound(s, now).map_err(|e| bad("until", e))?,
        None => now + 1,
    };
    let rows = app
        .keyring
        .store()
        .usage_report(by, since, until)
        .await
        .map_err(store_error)?;
    let rows: Vec<_> = rows.iter().map(|r| crate::usage::row_json(by, r)).collect();
    Ok(
        axum::Json(json!({"by": by.as_str(), "since": since, "until": until, "rows": rows}))
            .into_response(),
    )
}

async fn user_usage(
    State(app): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Response, GatewayError> {
    let report = crate::usage_report(
        app.keyring.store(),
        halberd_store::UsageScope::User(&user),
        now_unix(),
    )
    .await
    .map_err(store_error)?;
    Ok(axum::Json(json!({"user": user, "usage": report})).into_response())
}

async fn list_users(State(app): State<Arc<AppState>>) -> Result<Response, GatewayError> {
    let all = app
        .keyring
        .store()
        .list_user_limits()
        .await
        .map_err(store_error)?;
    let data: Vec<Value> = all
        .iter()
        .map(|(user, limits)| json!({"user": user, "limits": limits}))
        .collect();
    Ok(axum::Json(json!({"data": data})).into_response())
}

async fn get_user_limits(
    State(app): State<Arc<AppState>>,
    Path(user): Path<String>,
) -> Result<Response, GatewayError> {
    let limits = app
        .keyring
        .store()
        .user_limits(&user)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!({"user": user, "limits": limits})).into_response())
}

async fn update_user_limits(
    State(app): State<Arc<AppState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, GatewayError> {
    let change: halberd_store::KeyLimits = json_body(&body)?;
    let actor = actor(&headers);
    let limits = app
        .keyring
        .set_user_limits(&user, &change, &actor, now_unix())
        .await
        .map_err(store_error)?;
    events::AdminAction {
        action: "user.limits",
        key_id: "-",
        actor: &actor,
    }
    .emit();
    Ok(axum::Json(json!({"user": user, "limits": limits})).into_response())
}

async fn get_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    Ok(axum::Json(app.keyring.get(&id).await.map_err(store_error)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    name: Option<String>,
    user: Option<String>,
    #[serde(alias = "allowed_models")]
    models: Option<Vec<String>>,
    #[serde(alias = "allowed_endpoints")]
    endpoints: Option<Vec<String>>,
    expires_in: Option<String>,
    policy: Option<String>,
    metadata: Option<Value>,
    /// Limits to set; `0` removes one; absent fields stay as they are.
    limits: Option<halberd_store::KeyLimits>,
}

async fn update_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, GatewayError> {
    let req: UpdateKey = json_body(&body)?;
    known_policy(&app, req.policy.as_deref())?;
    let now = now_unix();
    let change = KeyUpdate {
        name: req.name,
        user: req.user.map(Some),
        expires_at: expires_at(req.expires_in.as_deref(), now)?.map(Some),
        allowed_models: req.models,
        allowed_endpoints: req.endpoints,
        policy: req.policy.map(Some),
        metadata: req.metadata,
        limits: req.limits,
    };
    let actor = actor(&headers);
    let record = app
        .keyring
        .update(&id, change, &actor, now)
        .await
        .map_err(store_error)?;
    events::AdminAction {
        action: "key.update",
        key_id: &id,
        actor: &actor,
    }
    .emit();
    Ok(axum::Json(record).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    grace: Option<String>,
}

async fn rotate_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, GatewayError> {
    let req: RotateKey = json_body(&body)?;
    let grace = parse_duration(req.grace.as_deref().unwrap_or("24h")).map_err(|m| {
        GatewayError::InvalidRequest {
            message: m,
            param: Some("grace".into()),
        }
    })?;
    let actor = actor(&headers);
    let issued = app
        .keyring
        .rotate(
            &id,
            i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            &actor,
            now_unix(),
        )
        .await
        .map_err(store_error)?;
    events::AdminAction {
        action: "key.rotate",
        key_id: &id,
        actor: &actor,
    }
    .emit();
    Ok((http::StatusCode::CREATED, axum::Json(issued)).into_response())
}

async fn revoke_key(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let actor = actor(&headers);
    let record = app
        .keyring
        .revoke(&id, &actor, now_unix())
        .await
        .map_err(store_error)?;
    events::AdminAction {
        action: "key.revoke",
        key_id: &id,
        actor: &actor,
    }
    .emit();
    Ok(axum::Json(record).into_response())
}

async fn list_events(
    State(app): State<Arc<AppState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, GatewayError> {
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| GatewayError::InvalidRequest {
                message: "limit must be a whole number from 1 to 1000".into(),
                param: Some("limit".into()),
            })?,
    };
    let events = app.keyring.events(limit).await.map_err(store_error)?;
    Ok(axum::Json(json!({"data": events})).into_response())
}
