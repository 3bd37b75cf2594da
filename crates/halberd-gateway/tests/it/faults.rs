//! Faults and abuse on the request path: streams cut by either side, streams
//! that close without their final event, and what each is recorded and billed
//! as. A scripted upstream serves exactly the bytes a test needs.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use halberd_store::{KeyLimits, KeySpec, UsageRecord};
use halberd_testkit::TestGateway;
use serde_json::{Value, json};

use crate::client;

/// A provider error that quotes the prompt back.
const LEAKY_ERROR: &str = r#"{"error": {"message": "invalid content near 'reach jane.doe@example.com, card 4111 1111 1111 1111'", "type": "invalid_request_error", "param": null, "code": null}}"#;

const TEXT: &str = "The tide came in slowly over the flats while the gulls argued about nothing. ";

/// An Anthropic stream that reports the placeholder `output_tokens: 1` at its
/// start and then stops after its text, without `message_delta` or
/// `message_stop`.
fn anthropic_cut() -> String {
    let mut out = String::new();
    let mut ev = |v: Value| {
        let ty = v["type"].as_str().unwrap().to_owned();
        out.push_str(&format!("event: {ty}\ndata: {v}\n\n"));
    };
    ev(
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    ev(
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for _ in 0..20 {
        ev(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}}),
        );
    }
    out
}

/// A chat stream with text and no `[DONE]`.
fn chat_cut() -> String {
    let mut out = String::new();
    for _ in 0..20 {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-x", "choices": [{"index": 0, "delta": {"content": TEXT}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out
}

async fn scripted_upstream() -> std::net::SocketAddr {
    let sse = |body: String| {
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from(body),
        )
    };
    let app = Router::new()
        .route(
            "/ant/v1/messages",
            post(move || async move { sse(anthropic_cut()) }),
        )
        .route(
            "/oai/v1/chat/completions",
            post(move || async move { sse(chat_cut()) }),
        )
        .route(
            "/e400/v1/chat/completions",
            post(|| async { (axum::http::StatusCode::BAD_REQUEST, LEAKY_ERROR) }),
        )
        .route(
            "/e500/v1/chat/completions",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, LEAKY_ERROR) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn gateway(extra: &str) -> TestGateway {
    let addr = scripted_upstream().await;
    TestGateway::start(&format!(
        r#"
[[providers]]
name = "cut-oai"
kind = "openai"
base_url = "http://{addr}/oai/v1"
allow_http = true
[[providers]]
name = "cut-ant"
kind = "anthropic"
base_url = "http://{addr}/ant"
allow_http = true
[[providers]]
name = "e400"
kind = "openai"
base_url = "http://{addr}/e400/v1"
allow_http = true
[[providers]]
name = "e500"
kind = "openai"
base_url = "http://{addr}/e500/v1"
allow_http = true
[[providers]]
name = "inproc"
kind = "mock"
[[models]]
name = "gpt-400"
provider = "e400"
[[models]]
name = "gpt-500"
provider = "e500"
[[models]]
name = "gpt-x"
provider = "cut-oai"
[[models]]
name = "claude-x"
provider = "cut-ant"
[[models]]
name = "mock-*"
provider = "inproc"
[prices]
"claude-x" = {{ input = 3.0, output = 15.0 }}
"gpt-x" = {{ input = 1.0, output = 2.0 }}
{extra}
"#
    ))
    .await
}

async fn key(gw: &TestGateway, limits: KeyLimits, policy: Option<&str>) -> (String, String) {
    let issued = gw
        .key(KeySpec {
            name: "faults".into(),
            limits,
            policy: policy.map(Into::into),
            ..KeySpec::default()
        })
        .await;
    (issued.record.id, issued.key)
}

/// The key's only usage record, once written.
async fn record(gw: &TestGateway, key_id: &str) -> UsageRecord {
    for _ in 0..200 {
        let mut records = gw
            .state
            .keyring
            .store()
            .usage_records(key_id, 2)
            .await
            .unwrap();
        if let Some(r) = records.pop() {
            assert!(records.is_empty(), "one record per exchange");
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no usage record for {key_id}");
}

fn budget() -> KeyLimits {
    KeyLimits {
        budget_tokens_daily: Some(1_000_000),
        ..KeyLimits::default()
    }
}

#[tokio::test]
async fn an_anthropic_stream_without_its_final_usage_is_billed_on_what_was_relayed() {
    let gw = gateway("").await;
    let (id, key) = key(&gw, budget(), None).await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 1000, "stream": true, "messages": [{"role": "user", "content": "tell me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\n"), "{last}");
    let v: Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["code"], "upstream_error", "{v}");
    let r = record(&gw, &id).await;
    let relayed = 20 * halberd_guard::tokens::Encoding::for_model(true, "claude-x").count(TEXT);
    assert_eq!(r.outcome, "upstream_error");
    assert!(r.estimated, "no final usage: the count is ours");
    assert_eq!(r.input_tokens, 12, "the provider's input count stands");
    assert_eq!(
        r.output_tokens, relayed,
        "the relayed text, not the placeholder 1"
    );
    assert!(relayed > 100);
}

#[tokio::test]
async fn an_anthropic_stream_the_client_leaves_is_billed_on_what_was_relayed() {
    let gw = gateway("").await;
    let (id, key) = key(&gw, budget(), None).await;
    let reply = "word ".repeat(300);
    let mut resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-reply", reply.trim_end())
        .header("x-mock-chunk-bytes", "10")
        .header("x-mock-delay-ms", "10")
        .json(&json!({"model": "mock-1", "max_tokens": 1000, "stream": true, "messages": [{"role": "user", "content": "talk"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = 0;
    while seen < 2_000 {
        seen += resp.chunk().await.unwrap().unwrap().len();
    }
    drop(resp);
    let r = record(&gw, &id).await;
    assert_eq!(r.outcome, "client_disconnected");
    assert!(r.estimated);
    let full = halberd_guard::tokens::Encoding::for_model(false, "mock-1").count(reply.trim_end());
    assert!(
        r.output_tokens > 10 && r.output_tokens < full,
        "charged {} of {full} output tokens for a stream cut after {seen} bytes",
        r.output_tokens
    );
}

#[tokio::test]
async fn a_chat_stream_without_done_ends_with_an_error_and_is_recorded_as_one() {
    let gw = gateway("").await;
    let (id, key) = key(&gw, budget(), None).await;
    let resp = crate::post(
        &gw.url("/v1/chat/completions"),
        &key,
        json!({"model": "gpt-x", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let data = halberd_testkit::sse_data(resp).await;
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let r = record(&gw, &id).await;
    assert_eq!(r.outcome, "upstream_error");
    assert!(r.estimated);
    assert_eq!(
        r.output_tokens,
        20 * halberd_guard::tokens::Encoding::for_model(false, "gpt-x").count(TEXT),
        "the relayed deltas, each counted"
    );
}

#[tokio::test]
async fn a_stream_under_a_policy_with_output_off_is_recorded_completed() {
    let gw = gateway(
        r#"
[[policies]]
name = "default"
[[policies]]
name = "quiet"
[policies.sensitive]
output = { default = "off" }
"#,
    )
    .await;
    let (id, key) = key(&gw, KeyLimits::default(), Some("quiet")).await;
    let resp = crate::post(
        &gw.url("/v1/chat/completions"),
        &key,
        json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let data = halberd_testkit::sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let r = record(&gw, &id).await;
    assert_eq!(r.outcome, "completed");
    assert!(!r.estimated);
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_refused_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::start("[server]\nbody_read_timeout = \"300ms\"").await;
    let (_, key) = key(
        &gw,
        KeyLimits {
            max_concurrent: Some(1),
            ..KeyLimits::default()
        },
        None,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the slow body is still being waited for")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // The concurrency slot came back with the refusal.
    let resp = crate::post(
        &gw.url("/v1/chat/completions"),
        &key,
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn provider_error_bodies_are_inspected_like_answers() {
    let gw = gateway("").await;
    let (_, key) = key(&gw, KeyLimits::default(), None).await;
    for (model, status) in [("gpt-400", 400), ("gpt-500", 502)] {
        let resp = crate::post(
            &gw.url("/v1/chat/completions"),
            &key,
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(resp.status(), status, "{model}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("jane.doe@example.com"), "{model}: {text}");
        assert!(!text.contains("4111 1111"), "{model}: {text}");
        assert!(text.contains("[EMAIL]"), "{model}: {text}");
    }
}

/// A fresh test database on `HALBERD_TEST_POSTGRES_URL`, reached through a
/// switch the test can cut: the switch and the URL through it.
async fn proxied_postgres() -> (crate::Switch, String) {
    let server = std::env::var("HALBERD_TEST_POSTGRES_URL")
        .expect("HALBERD_TEST_POSTGRES_URL must point at a Postgres server for this test");
    let db = halberd_store::Store::create_test_database(&server)
        .await
        .unwrap();
    let switch = crate::Switch::start(&db).await;
    let (scheme_user, rest) = db.rsplit_once('@').unwrap();
    let name = rest.split_once('/').unwrap().1;
    let proxied = format!("{scheme_user}@{}/{name}", switch.addr);
    (switch, proxied)
}

/// Postgres goes away under traffic and comes back: exchanges of a cached key
/// keep being served and their usage records wait in the ledger; requests
/// that need the store get 503 with Retry-After (at once, once the outage is
/// known), `/readyz` says so; after recovery every record is written.
#[tokio::test]
#[ignore = "needs Postgres (HALBERD_TEST_POSTGRES_URL)"]
async fn store_outage_under_traffic_loses_no_usage_record() {
    let (switch, proxied) = proxied_postgres().await;
    // A short TTL: the cached key outlives it on `key_cache_stale_if_error`.
    let gw = TestGateway::start(&format!(
        "[store]\nurl = \"{proxied}\"\n[auth]\nkey_cache_ttl = \"300ms\"\n"
    ))
    .await;
    let (cached_id, cached) = key(&gw, KeyLimits::default(), None).await;
    let (_, other) = key(&gw, KeyLimits::default(), None).await;
    let chat = || json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    let url = gw.url("/v1/chat/completions");
    assert_eq!(crate::post(&url, &cached, chat()).await.status(), 200);
    let written = |n: u64| {
        let store = gw.state.keyring.store().clone();
        let id = cached_id.clone();
        async move {
            for _ in 0..500 {
                let got = store
                    .usage_totals(halberd_store::UsageScope::Key(&id), 0)
                    .await
                    .map(|t| t.requests)
                    .unwrap_or(0);
                if got == n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(written(1).await);

    switch.set(false);
    // The cached key is still served, past its TTL; its records wait for
    // the store.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..20 {
        assert_eq!(crate::post(&url, &cached, chat()).await.status(), 200);
    }
    // A key that must be read from the store is refused, in the caller's
    // shape, with Retry-After; once the outage is known, without a wait.
    for _ in 0..3 {
        let resp = crate::post(&url, &other, chat()).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
    }
    assert!(gw.state.keyring.store().is_down());
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    switch.set(true);
    assert!(
        written(21).await,
        "every record admitted during the outage is written"
    );
    assert_eq!(crate::post_until_ok(&url, &other, chat(), 250).await, 200);
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// With `key_cache_stale_if_error = "0s"` a store outage refuses every key
/// once its cache entry ages out (fail closed), and serves it again after.
#[tokio::test]
#[ignore = "needs Postgres (HALBERD_TEST_POSTGRES_URL)"]
async fn store_outage_without_stale_keys_fails_closed() {
    let (switch, proxied) = proxied_postgres().await;
    let gw = TestGateway::start(&format!(
        "[store]\nurl = \"{proxied}\"\n[auth]\nkey_cache_ttl = \"300ms\"\nkey_cache_stale_if_error = \"0s\"\n"
    ))
    .await;
    let (_, key) = key(&gw, KeyLimits::default(), None).await;
    let chat = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    let url = gw.url("/v1/chat/completions");
    assert_eq!(crate::post(&url, &key, chat.clone()).await.status(), 200);
    switch.set(false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(crate::post(&url, &key, chat.clone()).await.status(), 503);
    switch.set(true);
    assert_eq!(crate::post_until_ok(&url, &key, chat, 250).await, 200);
}

fn redis_url() -> String {
    std::env::var("HALBERD_TEST_REDIS_URL")
        .expect("HALBERD_TEST_REDIS_URL must point at a Redis server for this test")
}

/// Redis away when a stream ends: the slot's release and the reservation's
/// settlement are kept and done when Redis answers again, so neither the
/// concurrency slot nor the worst-case budget charge outlives the outage.
#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn redis_away_at_the_end_of_a_stream_releases_and_settles_when_it_returns() {
    let switch = crate::Switch::start(&redis_url()).await;
    let gw = TestGateway::start(&format!(
        "[limits]\nredis_url = \"redis://{}\"\nredis_timeout = \"200ms\"\n",
        switch.addr
    ))
    .await;
    let (_, key) = key(
        &gw,
        KeyLimits {
            max_concurrent: Some(1),
            budget_tokens_daily: Some(3_000),
            ..KeyLimits::default()
        },
        None,
    )
    .await;
    let body = |max: u64| json!({"model": "mock-1", "max_tokens": max, "stream": true, "messages": [{"role": "user", "content": "a slow answer of forty bytes, more or less"}]});
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "30")
        .header("x-mock-chunk-bytes", "4")
        .json(&body(2_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Redis goes away while the stream runs; the stream ends during the
    // outage, so the release and the settlement cannot reach Redis.
    switch.set(false);
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    switch.set(true);
    // Back: the slot is free and the 2,000-token reservation was settled to
    // what was used, so a second one fits the 3,000-token budget.
    let mut status = 0;
    for _ in 0..150 {
        status = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body(2_000))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, 200,
        "the slot or the reservation outlived the outage"
    );
}
