//! Per-key limits through the gateway: requests per minute and concurrency,
//! the 429 in each dialect, and the `x-ratelimit-*` headers.

use halberd_store::{KeyLimits, KeySpec};
use halberd_testkit::TestGateway;
use serde_json::{Value, json};

use crate::client;

async fn key(gw: &TestGateway, rpm: Option<u32>, max_concurrent: Option<u32>) -> String {
    gw.key(KeySpec {
        name: "limited".into(),
        limits: KeyLimits {
            rpm,
            max_concurrent,
        },
        ..KeySpec::default()
    })
    .await
    .key
}

fn chat() -> Value {
    json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn requests_per_minute_with_headers_then_429_in_each_dialect() {
    let gw = TestGateway::start("").await;
    let key = key(&gw, Some(3), None).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "3");
        assert!(resp.headers().contains_key("x-ratelimit-reset-requests"));
        remaining.push(
            resp.headers()["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);

    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "mock-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn concurrency_slot_is_held_until_the_stream_ends() {
    let gw = TestGateway::start("").await;
    let key = key(&gw, None, Some(1)).await;
    // A slow stream: 40 deltas 25 ms apart holds the only slot for about a second.
    let slow = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "25")
        .header("x-mock-chunk-bytes", "1")
        .json(&json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "a slow answer of forty bytes, roughly..."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let second = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    let v: Value = second.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent")
    );
    // Read the stream to its end; the slot comes back.
    let body = slow.text().await.unwrap();
    assert!(body.contains("[DONE]"));
    let mut status = 0;
    for _ in 0..50 {
        status = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_client_that_goes_away_gives_its_slot_back() {
    let gw = TestGateway::start("").await;
    let key = key(&gw, None, Some(1)).await;
    let slow = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "200")
        .json(&json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "one two three four five"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    drop(slow);
    let mut status = 0;
    for _ in 0..100 {
        status = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 200,
        "the slot was not given back after the client left"
    );
}

#[tokio::test]
async fn limits_are_set_and_removed_through_the_admin_api() {
    let gw = TestGateway::start("").await;
    let resp = client()
        .post(gw.admin_url("/admin/keys"))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .json(&json!({"name": "a", "limits": {"rpm": 1, "max_concurrent": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["limits"], json!({"rpm": 1, "max_concurrent": 2}));
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::post(&gw.url("/v1/chat/completions"), &key, chat())
            .await
            .status(),
        200
    );
    assert_eq!(
        crate::post(&gw.url("/v1/chat/completions"), &key, chat())
            .await
            .status(),
        429
    );

    let resp = client()
        .patch(gw.admin_url(&format!("/admin/keys/{id}")))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .json(&json!({"limits": {"rpm": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["limits"], json!({"max_concurrent": 2}));
    assert_eq!(
        crate::post(&gw.url("/v1/chat/completions"), &key, chat())
            .await
            .status(),
        200
    );

    let resp = client()
        .patch(gw.admin_url(&format!("/admin/keys/{id}")))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .json(&json!({"limits": {"rpn": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "unknown limit names are refused");
}
