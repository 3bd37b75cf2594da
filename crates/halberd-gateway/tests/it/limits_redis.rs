//! Limits shared through a real Redis by two gateways that share one store:
//! exactly the limit is admitted whichever replica a request reaches, and
//! when Redis goes away the documented fail mode applies and sharing resumes
//! when it is back. These tests need `HALBERD_TEST_REDIS_URL` (set by `.ci/run`,
//! which runs them with `--ignored`).

use halberd_store::KeyLimits;
use halberd_testkit::TestGateway;
use serde_json::{Value, json};

use crate::{Switch, client};

fn redis_url() -> String {
    std::env::var("HALBERD_TEST_REDIS_URL")
        .expect("HALBERD_TEST_REDIS_URL must point at a Redis server for this test")
}

fn config(store: &std::path::Path, redis: &str, extra: &str) -> String {
    format!(
        "[store]\npath = \"{}\"\n[limits]\nredis_url = \"{redis}\"\n{extra}\n",
        store.join("shared.db").display()
    )
}

fn chat() -> Value {
    json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
}

async fn status(gw: &TestGateway, key: &str) -> u16 {
    crate::post(&gw.url("/v1/chat/completions"), key, chat())
        .await
        .status()
        .as_u16()
}

#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn concurrency_slots_are_shared_and_given_back() {
    let shared = tempfile::tempdir().unwrap();
    let redis = redis_url();
    let a = TestGateway::start(&config(shared.path(), &redis, "")).await;
    let b = TestGateway::start(&config(shared.path(), &redis, "")).await;
    let key = crate::limited_key(
        &a,
        "slots",
        KeyLimits {
            max_concurrent: Some(1),
            ..KeyLimits::default()
        },
    )
    .await;
    let slow = client()
        .post(a.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "20")
        .header("x-mock-chunk-bytes", "1")
        .json(&json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "a slow answer, thirty bytes.."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(
        status(&b, &key).await,
        429,
        "the other replica sees the slot taken"
    );
    assert!(slow.text().await.unwrap().contains("[DONE]"));
    let last = crate::post_until_ok(&b.url("/v1/chat/completions"), &key, chat(), 50).await;
    assert_eq!(last, 200, "the slot came back through Redis");
}

/// Concurrency leases are the gateway's own: requests that share a
/// client-chosen `x-request-id` still take one slot each.
#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn a_shared_client_request_id_does_not_share_a_concurrency_slot() {
    let shared = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&config(shared.path(), &redis_url(), "")).await;
    let key = crate::limited_key(
        &gw,
        "same-id",
        KeyLimits {
            max_concurrent: Some(2),
            ..KeyLimits::default()
        },
    )
    .await;
    let send = |_| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-request-id", "the-same-id")
            .header("x-mock-delay-ms", "40")
            .header("x-mock-chunk-bytes", "1")
            .json(&json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": "a slow answer of some forty bytes, or so"}]}))
            .send()
    };
    let responses = futures_util::future::join_all((0..6).map(send)).await;
    let mut statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    for r in responses {
        r.unwrap().text().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn redis_going_away_falls_back_to_local_shares_and_recovers() {
    let switch = Switch::start(&redis_url()).await;
    let shared = tempfile::tempdir().unwrap();
    let url = format!("redis://{}", switch.addr);
    let gw = TestGateway::start(&config(
        shared.path(),
        &url,
        "replicas = 2\nredis_timeout = \"200ms\"",
    ))
    .await;
    let key = crate::limited_key(
        &gw,
        "fallback",
        KeyLimits {
            rpm: Some(4),
            ..KeyLimits::default()
        },
    )
    .await;
    assert_eq!(status(&gw, &key).await, 200, "through Redis");

    switch.set(false);
    // Let the relay cut the open connection before the next request.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // This replica's share of 4 rpm over 2 replicas is 2.
    let statuses = [
        status(&gw, &key).await,
        status(&gw, &key).await,
        status(&gw, &key).await,
    ];
    assert_eq!(
        statuses,
        [200, 200, 429],
        "local fallback with the replica share"
    );
    let ready: Value = client()
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["limits"], "redis_unavailable");

    switch.set(true);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Back on Redis: its count decides again. That count is one or two: the
    // request in flight when the link was cut may have reached Redis although
    // its answer was lost (at-most-once is not knowable across a cut). The
    // local share is used up, so any admission here is Redis's.
    let statuses = [
        status(&gw, &key).await,
        status(&gw, &key).await,
        status(&gw, &key).await,
        status(&gw, &key).await,
    ];
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(statuses[0], 200, "shared count resumed: {statuses:?}");
    assert_eq!(statuses[3], 429, "and still limits: {statuses:?}");
    assert!((2..=3).contains(&admitted), "{statuses:?}");
    let ready: Value = client()
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["limits"], "redis");
}

#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn closed_fail_mode_refuses_while_redis_is_away() {
    let shared = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let gw = TestGateway::start(&config(
        shared.path(),
        "redis://127.0.0.1:1",
        "rate_fail_mode = \"closed\"\nredis_timeout = \"100ms\"",
    ))
    .await;
    let key = crate::limited_key(
        &gw,
        "closed",
        KeyLimits {
            rpm: Some(100),
            ..KeyLimits::default()
        },
    )
    .await;
    let resp = crate::post(&gw.url("/v1/chat/completions"), &key, chat()).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    // Keys without limits are not affected.
    let free = gw.any_key().await;
    assert_eq!(status(&gw, &free).await, 200);
}

#[tokio::test]
#[ignore = "needs Redis (HALBERD_TEST_REDIS_URL)"]
async fn token_reservations_are_shared_and_settled_through_redis() {
    let shared = tempfile::tempdir().unwrap();
    let redis = redis_url();
    let a = TestGateway::start(&config(shared.path(), &redis, "")).await;
    let b = TestGateway::start(&config(shared.path(), &redis, "")).await;
    let key = crate::limited_key(
        &a,
        "tokens",
        KeyLimits {
            tpm: Some(1_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let body = |stream: bool| json!({"model": "mock-1", "stream": stream, "max_completion_tokens": 600, "messages": [{"role": "user", "content": "hi there"}]});
    let slow = client()
        .post(a.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "20")
        .header("x-mock-chunk-bytes", "1")
        .json(&body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let resp = crate::post(&b.url("/v1/chat/completions"), &key, body(false)).await;
    assert_eq!(resp.status(), 429, "the reservation made on A counts on B");
    assert!(slow.text().await.unwrap().contains("[DONE]"));
    let last = crate::post_until_ok(&b.url("/v1/chat/completions"), &key, body(false), 50).await;
    assert_eq!(last, 200, "A's settlement reached Redis");
    // Settled requests leave room: several more fit one after the other.
    for _ in 0..3 {
        let resp = crate::post(&a.url("/v1/chat/completions"), &key, body(false)).await;
        assert_eq!(resp.status(), 200);
    }
    // Each settlement leaves a marker (so a retry applies once), and it
    // expires within two minutes: one per exchange for a day filled Redis.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("halberd:hb2:{hb}:settled:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!markers.is_empty());
    for marker in markers.iter().take(50) {
        let ttl: i64 = redis::cmd("TTL")
            .arg(marker)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((-2..=120).contains(&ttl) && ttl != -1, "{marker}: {ttl}");
    }
}
