//! Two gateways sharing one Postgres store and one Redis, as two replicas
//! behind a load balancer: rates, budgets and revocation hold across them, and
//! when Redis goes away budgets fail closed and sharing resumes when it is
//! back. These need `HALBERD_TEST_POSTGRES_URL` and `HALBERD_TEST_REDIS_URL`
//! (set by `.ci/run`, which runs them with `--ignored`).

use std::time::{Duration, Instant};

use halberd_store::{KeyLimits, KeySpec, Store, Usd};
use halberd_testkit::{ADMIN_TOKEN, TestGateway};
use serde_json::{Value, json};

use crate::{Switch, client};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} must be set for this test"))
}

/// A fresh Postgres database and the config of a replica using it and `redis`.
/// Replicas share the pepper (the directory holds its file), as they must.
async fn shared_config(redis: &str, extra: &str) -> (String, tempfile::TempDir) {
    let db = Store::create_test_database(&env("HALBERD_TEST_POSTGRES_URL"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\nurl = \"{db}\"\n[auth]\nkey_cache_ttl = \"1s\"\npepper_file = \"{}\"\n[limits]\nredis_url = \"{redis}\"\nreplicas = 2\n{extra}\n",
        dir.path().join("halberd.pepper").display()
    );
    (config, dir)
}

async fn pair(extra: &str) -> (TestGateway, TestGateway, tempfile::TempDir) {
    let (config, dir) = shared_config(&env("HALBERD_TEST_REDIS_URL"), extra).await;
    (
        TestGateway::start(&config).await,
        TestGateway::start(&config).await,
        dir,
    )
}

fn chat() -> Value {
    json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
#[ignore = "needs Postgres and Redis"]
async fn a_rate_limit_holds_across_replicas_on_postgres() {
    let (a, b, _pepper) = pair("").await;
    assert_eq!(a.state.keyring.store().backend(), "postgres");
    let key = crate::limited_key(
        &a,
        "shared",
        KeyLimits {
            rpm: Some(20),
            ..KeyLimits::default()
        },
    )
    .await;
    let requests = (0..60).map(|i| {
        let url = if i % 2 == 0 {
            a.url("/v1/chat/completions")
        } else {
            b.url("/v1/chat/completions")
        };
        let key = key.clone();
        async move { crate::post(&url, &key, chat()).await.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (20, 40), "{statuses:?}");
    let ready: Value = client()
        .get(b.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["limits"], "redis");
    assert_eq!(ready["checks"]["store"], "ok");
}

#[tokio::test]
#[ignore = "needs Postgres and Redis"]
async fn fifty_concurrent_streams_never_overrun_a_cost_budget() {
    let (a, b, _pepper) = pair("").await;
    let issued = a
        .key(KeySpec {
            name: "budget".into(),
            limits: KeyLimits {
                budget_usd_daily: Some("0.0003".parse().unwrap()),
                ..KeyLimits::default()
            },
            ..KeySpec::default()
        })
        .await;
    let (id, key) = (issued.record.id.clone(), issued.key);
    // Each request reserves its prompt and 10 output tokens at the mock price
    // ($1/M in, $2/M out) and reports a prompt of that size and 5 output
    // tokens: it costs 10 000 nano-dollars less than it reserved.
    let encoding = halberd_guard::tokens::Encoding::for_model(false, "mock-1");
    let prompt = encoding.count_parts(["hi"]);
    let reservation = prompt * 1_000 + 10 * 2_000;
    let requests = (0..50).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        let url = gw.url("/v1/chat/completions");
        let key = key.clone();
        async move {
            let resp = client()
                .post(url)
                .bearer_auth(&key)
                .header("x-mock-usage", format!("{prompt},5"))
                .header("x-mock-delay-ms", "10")
                .header("x-mock-chunk-bytes", "1")
                .json(&json!({"model": "mock-1", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            (status, body)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count() as u64;
    let refused = results.iter().filter(|(s, _)| *s == 402).count() as u64;
    assert_eq!(
        admitted + refused,
        50,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s == 200)
            .all(|(_, b)| b.contains("[DONE]"))
    );
    let budget = 300_000u64;
    assert!(
        admitted >= budget / reservation,
        "at least the worst-case count fits: {admitted}"
    );
    assert!(refused > 0, "the budget ran out");

    // Every exchange is recorded in Postgres; the spend is the sum of the
    // settled usage, and it never passed the budget.
    let store = a.state.keyring.store();
    let mut totals = Default::default();
    for _ in 0..100 {
        totals = store
            .usage_totals(halberd_store::UsageScope::Key(&id), 0)
            .await
            .unwrap();
        if totals.requests == admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(totals.requests, admitted);
    let per_request = prompt * 1_000 + 5 * 2_000;
    assert_eq!(totals.cost, Usd(per_request * admitted));
    assert!(
        totals.cost.nanos() <= budget,
        "spent {} of {budget}",
        totals.cost.nanos()
    );
    // The shared counter in Redis holds the same figure once every
    // settlement has landed.
    let client = redis::Client::open(env("HALBERD_TEST_REDIS_URL")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, _, day) =
        halberd_gateway::pipeline::admit::budget::Period::Day.window(halberd_store::now_unix());
    let name = format!("halberd:hb2:{{hb}}:k:{id}:usd:{day}");
    let mut counter = 0u64;
    for _ in 0..100 {
        counter = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        if counter == totals.cost.nanos() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter, totals.cost.nanos(), "counter and records agree");
}

#[tokio::test]
#[ignore = "needs Postgres and Redis"]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_within_the_cache_ttl() {
    let (a, b, _pepper) = pair("").await;
    let issued = a
        .key(KeySpec {
            name: "revoke-me".into(),
            ..KeySpec::default()
        })
        .await;
    assert_eq!(
        crate::post(&b.url("/v1/chat/completions"), &issued.key, chat())
            .await
            .status(),
        200
    );
    let resp = client()
        .post(a.admin_url(&format!("/admin/keys/{}/revoke", issued.record.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let revoked_at = Instant::now();
    assert_eq!(
        crate::post(&a.url("/v1/chat/completions"), &issued.key, chat())
            .await
            .status(),
        401,
        "at once on the replica that revoked it"
    );
    loop {
        let status = crate::post(&b.url("/v1/chat/completions"), &issued.key, chat())
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1_500),
            "still admitted {:?} after revocation (key_cache_ttl is 1s)",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs Postgres and Redis"]
async fn redis_going_away_fails_budgets_closed_and_sharing_resumes() {
    let switch = Switch::start(&env("HALBERD_TEST_REDIS_URL")).await;
    let (config, _pepper) = shared_config(
        &format!("redis://{}", switch.addr),
        "redis_timeout = \"200ms\"",
    )
    .await;
    let gw = TestGateway::start(&config).await;
    let budgeted = crate::limited_key(
        &gw,
        "budgeted",
        KeyLimits {
            budget_tokens_daily: Some(100_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let rated = crate::limited_key(
        &gw,
        "rated",
        KeyLimits {
            rpm: Some(100),
            ..KeyLimits::default()
        },
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    assert_eq!(crate::post(&url, &budgeted, chat()).await.status(), 200);

    switch.set(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = crate::post(&url, &budgeted, chat()).await;
    assert_eq!(resp.status(), 503, "budgets fail closed");
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budgets cannot be checked"),
        "{v}"
    );
    assert_eq!(
        crate::post(&url, &rated, chat()).await.status(),
        200,
        "rates fall back to local shares"
    );
    let free = gw.any_key().await;
    assert_eq!(
        crate::post(&url, &free, chat()).await.status(),
        200,
        "keys without limits are unaffected"
    );

    switch.set(true);
    let status = crate::post_until_ok(&url, &budgeted, chat(), 100).await;
    assert_eq!(status, 200, "budgets are enforced through Redis again");
}
