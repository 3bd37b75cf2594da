//! Budgets, user limits and usage records through the gateway (in-process
//! counters, SQLite store): the 402 in each dialect, the settled spend, the
//! usage of a stream that never reported usage, user limits set through the
//! admin API, and the rate headers on errors after admission.

use std::time::Duration;

use halberd_store::{KeyLimits, KeySpec, Usd};
use halberd_testkit::{ADMIN_TOKEN, TestGateway};
use serde_json::{Value, json};

use crate::client;

async fn key_with(gw: &TestGateway, user: Option<&str>, limits: KeyLimits) -> (String, String) {
    let issued = gw
        .key(KeySpec {
            name: "budgeted".into(),
            user: user.map(Into::into),
            limits,
            ..KeySpec::default()
        })
        .await;
    (issued.record.id, issued.key)
}

fn chat(max_tokens: u64) -> Value {
    json!({"model": "mock-1", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
}

async fn send(gw: &TestGateway, key: &str, body: &Value, usage: &str) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-mock-usage", usage)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A streamed chat request with these mock knobs.
async fn stream(
    gw: &TestGateway,
    key: &str,
    headers: &[(&str, &str)],
    content: &str,
) -> reqwest::Response {
    let mut request = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .json(&json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap()
}

async fn admin_get(gw: &TestGateway, path: &str) -> (u16, Value) {
    let resp = client()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// The key's usage report once `requests` records are written (they are
/// written when each exchange's guard drops, in the background).
async fn usage_after(gw: &TestGateway, key_id: &str, requests: u64) -> Value {
    for _ in 0..100 {
        let (_, v) = admin_get(gw, &format!("/admin/keys/{key_id}/usage")).await;
        if v["usage"]["daily"]["requests"] == requests {
            return v["usage"]["daily"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("usage of {key_id} never reached {requests} records");
}

/// The key's newest usage record, once `requests` records are written.
async fn last_record(gw: &TestGateway, key_id: &str, requests: u64) -> halberd_store::UsageRecord {
    usage_after(gw, key_id, requests).await;
    let mut records = gw
        .state
        .keyring
        .store()
        .usage_records(key_id, 1)
        .await
        .unwrap();
    records.remove(0)
}

#[tokio::test]
async fn a_cost_budget_is_spent_exactly_then_refused_with_402_in_each_dialect() {
    let gw = TestGateway::start("").await;
    // The built-in mock price: $1 per million input tokens, $2 per million
    // output tokens. Each request really uses 1 + 1 tokens: $0.000003. Its
    // worst case (its prompt plus 10 output tokens) is above $0.00002.
    let budget: Usd = "0.00005".parse().unwrap();
    let (id, key) = key_with(
        &gw,
        None,
        KeyLimits {
            budget_usd_daily: Some(budget),
            ..KeyLimits::default()
        },
    )
    .await;
    let mut admitted = 0u64;
    let refused = loop {
        let resp = send(&gw, &key, &chat(10), "1,1").await;
        if resp.status() != 200 {
            break resp;
        }
        admitted += 1;
        assert!(admitted < 50, "the budget never ran out");
    };
    assert!(admitted >= 2, "only {admitted} requests fit");
    assert_eq!(refused.status(), 402);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&retry_after),
        "renews at midnight UTC: {retry_after}"
    );
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("daily cost budget of this API key"),
        "{message}"
    );
    assert!(message.contains("$0.00005"), "{message}");

    // The recorded spend is exactly what was settled: admitted × $0.000003,
    // never above the budget.
    let daily = usage_after(&gw, &id, admitted).await;
    let spent: Usd = daily["cost_usd"].as_str().unwrap().parse().unwrap();
    assert_eq!(spent, Usd(3_000 * admitted));
    assert!(spent <= budget);
    assert_eq!(daily["input_tokens"], admitted);
    assert_eq!(daily["estimated_records"], 0);

    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("x-mock-usage", "1,1")
        .json(&json!({"model": "mock-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "billing_error");
    assert_eq!(v["error"]["code"], "budget_exceeded");
}

#[tokio::test]
async fn a_budget_survives_a_restart_through_the_usage_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\npath = \"{}\"\n",
        dir.path().join("shared.db").display()
    );
    let limits = KeyLimits {
        budget_tokens_daily: Some(100),
        ..KeyLimits::default()
    };
    let gw = TestGateway::start(&config).await;
    let (id, key) = key_with(&gw, None, limits).await;
    // 30 tokens settled per request; the reservation is prompt + 10.
    for _ in 0..2 {
        assert_eq!(send(&gw, &key, &chat(10), "20,10").await.status(), 200);
    }
    usage_after(&gw, &id, 2).await;
    gw.shutdown().await;
    // A new process starts with empty counters, seeded from the store: 60 of
    // 100 are spent, so one more request fits (60 + 30) and the next does not.
    let gw = TestGateway::start(&config).await;
    assert_eq!(send(&gw, &key, &chat(10), "20,10").await.status(), 200);
    let resp = send(&gw, &key, &chat(10), "20,10").await;
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("daily token budget of this API key"),
        "{v}"
    );
    assert!(message.contains("too little left"), "{v}");
    // A worst case larger than the whole budget says so, on an untouched key.
    let (_, fresh) = key_with(&gw, None, limits).await;
    let resp = send(&gw, &fresh, &chat(500), "20,10").await;
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("alone is more than the whole"), "{v}");
    assert!(message.contains("lower max_tokens"), "{v}");
}

#[tokio::test]
async fn a_stream_without_reported_usage_is_metered_from_what_was_relayed() {
    let gw = TestGateway::start("").await;
    let (id, key) = key_with(
        &gw,
        None,
        KeyLimits {
            tpm: Some(1_000_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let reply = "The quarterly numbers look steady; shipping resumes on Monday.";
    let resp = stream(
        &gw,
        &key,
        &[
            ("x-mock-usage", "none"),
            ("x-mock-reply", reply),
            ("x-mock-chunk-bytes", "4096"),
        ],
        "status?",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = halberd_testkit::chat_delta_text(&halberd_testkit::sse_data(resp).await);
    assert_eq!(text, reply);
    let r = &last_record(&gw, &id, 1).await;
    assert!(r.estimated);
    let encoding = halberd_guard::tokens::Encoding::for_model(false, "mock-1");
    assert_eq!(
        r.output_tokens,
        encoding.count(reply),
        "the relayed text, counted"
    );
    assert_eq!(
        r.input_tokens,
        encoding.count_parts(["status?"]),
        "the prompt as counted for the reservation"
    );
    assert_eq!(r.outcome, "completed");

    // A key without limits has its prompt counted only now, at the end, and
    // gets the same figures.
    let (free_id, free) = key_with(&gw, None, KeyLimits::default()).await;
    let resp = stream(
        &gw,
        &free,
        &[
            ("x-mock-usage", "none"),
            ("x-mock-reply", reply),
            ("x-mock-chunk-bytes", "4096"),
        ],
        "status?",
    )
    .await;
    assert_eq!(
        halberd_testkit::chat_delta_text(&halberd_testkit::sse_data(resp).await),
        reply
    );
    let f = &last_record(&gw, &free_id, 1).await;
    assert_eq!(
        (f.input_tokens, f.output_tokens, f.estimated),
        (r.input_tokens, r.output_tokens, true)
    );

    // A client that did not ask for usage is still metered with the
    // provider's figures (the gateway asks for them and hides the chunk).
    let resp = stream(&gw, &key, &[("x-mock-usage", "7,11")], "again").await;
    let data = halberd_testkit::sse_data(resp).await;
    assert!(
        !data.iter().any(|d| d.contains("\"usage\":{")),
        "no usage chunk for this client"
    );
    let r = &last_record(&gw, &id, 2).await;
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.estimated),
        (7, 11, false)
    );
    // Mock price: 7 × $1/M + 11 × $2/M.
    assert_eq!(r.cost, Usd(7_000 + 22_000));
}

#[tokio::test]
async fn user_limits_from_the_admin_api_apply_across_the_users_keys() {
    let gw = TestGateway::start("").await;
    let resp = client()
        .patch(gw.admin_url("/admin/users/ann/limits"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"rpm": 3, "budget_usd_monthly": "12.5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["limits"]["rpm"], 3);
    assert_eq!(v["limits"]["budget_usd_monthly"], "12.50");
    let (_, a) = key_with(&gw, Some("ann"), KeyLimits::default()).await;
    let (_, b) = key_with(&gw, Some("ann"), KeyLimits::default()).await;
    let (_, other) = key_with(&gw, Some("bob"), KeyLimits::default()).await;
    for key in [&a, &b, &a] {
        assert_eq!(send(&gw, key, &chat(5), "1,1").await.status(), 200);
    }
    let resp = send(&gw, &b, &chat(5), "1,1").await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user \"ann\""),
        "{v}"
    );
    assert_eq!(
        send(&gw, &other, &chat(5), "1,1").await.status(),
        200,
        "bob has no limits"
    );

    let (status, v) = admin_get(&gw, "/admin/users").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["user"], "ann");
    let (_, v) = admin_get(&gw, "/admin/users/ann/usage").await;
    assert!(v["usage"]["monthly"]["requests"].as_u64().unwrap() <= 3);
    let (status, _) = admin_get(&gw, "/admin/keys/NOSUCHKEY000/usage").await;
    assert_eq!(status, 404);
    // Bad limits are a 400, and nothing changes.
    let resp = client()
        .patch(gw.admin_url("/admin/users/ann/limits"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"budget_usd_daily": "-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (_, v) = admin_get(&gw, "/admin/users/ann/limits").await;
    assert_eq!(v["limits"]["rpm"], 3);
}

#[tokio::test]
async fn rate_headers_are_on_error_responses_after_admission() {
    let gw = TestGateway::start("").await;
    let (_, key) = key_with(
        &gw,
        None,
        KeyLimits {
            rpm: Some(5),
            ..KeyLimits::default()
        },
    )
    .await;
    let resp = send(
        &gw,
        &key,
        &json!({"model": "mock-1", "messages": "not a list"}),
        "1,1",
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "5");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "4");
    assert!(resp.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn a_cost_budget_on_a_model_without_a_price_is_refused_clearly() {
    let gw = TestGateway::start(
        "[[providers]]\nname = \"local\"\nkind = \"mock\"\n[[models]]\nname = \"house-model\"\nprovider = \"local\"\nupstream = \"house-llm-7b\"",
    )
    .await;
    let (_, key) = key_with(
        &gw,
        None,
        KeyLimits {
            budget_usd_daily: Some("1".parse().unwrap()),
            ..KeyLimits::default()
        },
    )
    .await;
    let resp = send(
        &gw,
        &key,
        &json!({"model": "house-model", "messages": [{"role": "user", "content": "hi"}]}),
        "1,1",
    )
    .await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_priced");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("house-llm-7b")
    );
    // A token budget needs no price.
    let (_, key) = key_with(
        &gw,
        None,
        KeyLimits {
            budget_tokens_daily: Some(10_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let resp = send(
        &gw,
        &key,
        &json!({"model": "house-model", "messages": [{"role": "user", "content": "hi"}]}),
        "1,1",
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_is_charged_for_what_was_relayed() {
    let gw = TestGateway::start("").await;
    let (id, key) = key_with(
        &gw,
        None,
        KeyLimits {
            budget_tokens_daily: Some(1_000_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let reply = "word ".repeat(200);
    let mut resp = stream(
        &gw,
        &key,
        &[
            ("x-mock-reply", reply.trim_end()),
            ("x-mock-chunk-bytes", "10"),
            ("x-mock-delay-ms", "20"),
        ],
        "talk",
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Read a few events, then go away.
    let mut seen = 0;
    while seen < 300 {
        seen += resp.chunk().await.unwrap().unwrap().len();
    }
    drop(resp);
    let r = &last_record(&gw, &id, 1).await;
    assert_eq!(r.outcome, "client_disconnected");
    assert!(r.estimated);
    let full = halberd_guard::tokens::Encoding::for_model(false, "mock-1").count(reply.trim_end());
    assert!(
        r.output_tokens > 0 && r.output_tokens < full,
        "charged {} of {full} tokens for a stream cut short",
        r.output_tokens
    );
}
