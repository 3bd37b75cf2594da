//! Every documented error, in both dialects, with its status and stable code.

use halberd_store::{KeySpec, KeyUpdate, now_unix};
use halberd_testkit::{MockUpstream, TestGateway, config_with_http_mock};
use serde_json::{Value, json};

use crate::{client, post};

const CHAT: &str = "/v1/chat/completions";

fn hello(model: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

/// Checks an OpenAI-shaped error.
async fn check_openai(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status, "expected {code}");
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"]["type"].is_string());
    v
}

/// Checks an Anthropic-shaped error.
async fn check_anthropic(
    resp: reqwest::Response,
    status: u16,
    error_type: &str,
    code: &str,
) -> Value {
    assert_eq!(resp.status(), status, "expected {code}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_"))
    );
    v
}

#[tokio::test]
async fn key_errors_in_both_dialects() {
    let gw = TestGateway::start("").await;
    let url = gw.url(CHAT);
    check_openai(
        client()
            .post(&url)
            .json(&hello("mock-1"))
            .send()
            .await
            .unwrap(),
        401,
        "missing_api_key",
    )
    .await;
    check_openai(
        post(&url, "sk-not-a-halberd-key", hello("mock-1")).await,
        401,
        "invalid_api_key",
    )
    .await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "nope")
        .json(&hello("mock-1"))
        .send()
        .await
        .unwrap();
    check_anthropic(resp, 401, "authentication_error", "invalid_api_key").await;

    let expired = gw
        .key(KeySpec {
            name: "e".into(),
            ..KeySpec::default()
        })
        .await;
    gw.state
        .keyring
        .update(
            &expired.record.id,
            KeyUpdate {
                expires_at: Some(Some(now_unix() - 1)),
                ..KeyUpdate::default()
            },
            "t",
            now_unix(),
        )
        .await
        .unwrap();
    check_openai(
        post(&url, &expired.key, hello("mock-1")).await,
        401,
        "expired_api_key",
    )
    .await;

    let revoked = gw
        .key(KeySpec {
            name: "r".into(),
            ..KeySpec::default()
        })
        .await;
    gw.state
        .keyring
        .revoke(&revoked.record.id, "t", now_unix())
        .await
        .unwrap();
    check_openai(
        post(&url, &revoked.key, hello("mock-1")).await,
        401,
        "revoked_api_key",
    )
    .await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &revoked.key)
        .json(&hello("mock-1"))
        .send()
        .await
        .unwrap();
    check_anthropic(resp, 401, "authentication_error", "revoked_api_key").await;
}

#[tokio::test]
async fn scope_and_routing_errors() {
    let up = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with_http_mock(up.addr, "")).await;
    let scoped = gw
        .key(KeySpec {
            name: "s".into(),
            allowed_models: vec!["mock-1".into()],
            allowed_endpoints: vec!["chat_completions".into()],
            ..KeySpec::default()
        })
        .await
        .key;
    let any = gw.any_key().await;
    check_openai(
        post(&gw.url(CHAT), &scoped, hello("mock-2")).await,
        403,
        "model_not_allowed",
    )
    .await;
    // A scoped key learns nothing about models beyond its own: 403, not 404.
    check_openai(
        post(&gw.url(CHAT), &scoped, hello("does-not-exist")).await,
        403,
        "model_not_allowed",
    )
    .await;
    check_openai(
        post(
            &gw.url("/v1/responses"),
            &scoped,
            json!({"model": "mock-1", "input": "x"}),
        )
        .await,
        403,
        "endpoint_not_allowed",
    )
    .await;
    let v = check_openai(
        post(&gw.url(CHAT), &any, hello("does-not-exist")).await,
        404,
        "model_not_found",
    )
    .await;
    assert_eq!(v["error"]["param"], "model");
    check_openai(
        post(&gw.url(CHAT), &any, hello("claude-test")).await,
        400,
        "model_not_supported_on_endpoint",
    )
    .await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &any)
        .json(&hello("gpt-test"))
        .send()
        .await
        .unwrap();
    check_anthropic(
        resp,
        400,
        "invalid_request_error",
        "model_not_supported_on_endpoint",
    )
    .await;
}

#[tokio::test]
async fn body_errors() {
    let gw = TestGateway::start("[server]\nmax_body_bytes = 2048\nmax_json_depth = 8").await;
    let key = gw.any_key().await;
    let url = gw.url(CHAT);
    let send = |body: Vec<u8>, ct: &'static str| {
        client()
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let v = check_openai(
        send(
            b"{\"model\": \"mock-1\",\n \"messages\": [}".to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{v}"
    );
    check_openai(
        send(
            br#"{"model":"mock-1","messages":[{"x":[[[[[[[[[1]]]]]]]]]}]}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let v = check_openai(
        send(
            br#"{"model":"mock-1","messages":[{"role":"robot","content":"x"}]}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(v["error"]["param"], "messages[0].role");
    check_openai(
        send(vec![b' '; 4096], "application/json").await.unwrap(),
        413,
        "request_too_large",
    )
    .await;
    check_openai(
        send(
            b"model=mock-1".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .await
        .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    // A body larger than the limit sent without Content-Length (chunked).
    let chunks =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let resp = client()
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    check_openai(resp, 413, "request_too_large").await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    check_anthropic(resp, 400, "invalid_request_error", "invalid_request").await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let gw = TestGateway::start("").await;
    check_openai(
        client().get(gw.url("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check_openai(
        client().get(gw.url(CHAT)).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn upstream_errors_are_mapped() {
    let up = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with_http_mock(up.addr, "")).await;
    let key = gw.any_key().await;
    let with_status = |model: &'static str, path: &'static str, status: &'static str| {
        client()
            .post(gw.url(path))
            .bearer_auth(&key)
            .header("x-mock-status", status)
            .json(&hello(model))
            .send()
    };
    // Client errors pass through in the provider's shape (which is the caller's).
    let v = check_openai(
        with_status("gpt-test", CHAT, "400").await.unwrap(),
        400,
        "mock_error",
    )
    .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("400"));
    let resp = with_status("gpt-test", CHAT, "429").await.unwrap();
    check_openai(resp, 429, "mock_error").await;
    // Server errors become 502 upstream_error; auth failures do not echo anything.
    check_openai(
        with_status("gpt-test", CHAT, "500").await.unwrap(),
        502,
        "upstream_error",
    )
    .await;
    // A refused credential is refused again: the SDKs must not retry it.
    let resp = with_status("gpt-test", CHAT, "401").await.unwrap();
    assert_eq!(resp.headers()["x-should-retry"], "false");
    check_openai(resp, 502, "upstream_auth_failed").await;
    let resp = with_status("gpt-test", CHAT, "500").await.unwrap();
    assert_eq!(resp.headers()["x-should-retry"], "true");
    check_openai(
        with_status("mock-1", CHAT, "503").await.unwrap(),
        502,
        "upstream_error",
    )
    .await;
    let resp = with_status("claude-test", "/v1/messages", "529")
        .await
        .unwrap();
    check_anthropic(resp, 502, "api_error", "upstream_error").await;
}

#[tokio::test]
async fn unreachable_and_silent_upstreams() {
    // A port with nothing listening, and one that accepts and never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let toml = format!(
        r#"
[[providers]]
name = "closed"
kind = "openai"
base_url = "http://{closed}/v1"
allow_http = true
[[providers]]
name = "silent"
kind = "openai"
base_url = "http://{silent_addr}/v1"
allow_http = true
first_byte_timeout = "300ms"
[[models]]
name = "m-closed"
provider = "closed"
[[models]]
name = "m-silent"
provider = "silent"
"#
    );
    let gw = TestGateway::start(&toml).await;
    let key = gw.any_key().await;
    check_openai(
        post(&gw.url(CHAT), &key, hello("m-closed")).await,
        502,
        "upstream_unreachable",
    )
    .await;
    let started = std::time::Instant::now();
    check_openai(
        post(&gw.url(CHAT), &key, hello("m-silent")).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
