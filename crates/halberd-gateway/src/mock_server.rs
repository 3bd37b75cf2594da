//! `halberd mock-upstream`: the [`crate::mock`] provider as a real HTTP server
//! speaking the OpenAI and Anthropic APIs, for tests, demos and benchmarks. It
//! accepts any key (it has nothing to protect) but validates bodies with the
//! same decoders as the gateway, so a malformed request fails here too.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use halberd_protocol::Api;

use crate::error::{Dialect, GatewayError};
use crate::mock;
use crate::pipeline::decode;
use crate::upstream;

pub fn router() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(|req: Request| serve(Api::ChatCompletions, req)))
        .route("/v1/responses", post(|req: Request| serve(Api::Responses, req)))
        .route("/v1/embeddings", post(|req: Request| serve(Api::Embeddings, req)))
        .route("/v1/messages", post(|req: Request| serve(Api::Messages, req)))
        .route("/v1/models", get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "created": 0, "owned_by": "mock"}]})) }))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .layer(axum::middleware::from_fn(crate::http::edge))
}

async fn serve(api: Api, req: Request) -> Response {
    let dialect = if api == Api::Messages {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return GatewayError::BodyTooLarge {
                limit: 64 * 1024 * 1024,
            }
            .respond(dialect, "mock");
        }
    };
    let (value, ex) = match decode::decode(
        api,
        &parts.headers,
        &bytes,
        halberd_protocol::json::MAX_DEPTH,
    ) {
        Ok(v) => v,
        Err(e) => return e.respond(dialect, "mock"),
    };
    let knobs = match mock::Knobs::from_headers(&parts.headers) {
        Ok(k) => k,
        Err(m) => {
            return GatewayError::InvalidRequest {
                message: m,
                param: None,
            }
            .respond(dialect, "mock");
        }
    };
    let reply = mock::reply(api, &value, &ex, &knobs);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        mock::ReplyBody::Json(v) => (status, axum::Json(v)).into_response(),
        mock::ReplyBody::Events(events) => {
            let stream = futures_util::StreamExt::map(upstream::paced(events, reply.delay), |r| {
                r.map_err(|_| std::io::Error::other("mock stream"))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            resp
        }
    }
}

/// Runs the mock upstream on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = crate::config::ConfigFile::default()
        .build(std::path::Path::new("."), &|_| None)
        .map(|c| c.limits);
    if let Ok(limits) = limits {
        crate::server::serve(listener, router(), limits, shutdown).await;
    }
}
