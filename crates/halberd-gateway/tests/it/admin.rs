//! The admin API: token required, key lifecycle over HTTP, every action
//! recorded, the OpenAPI document complete.

use halberd_testkit::{ADMIN_TOKEN, TestGateway};
use serde_json::{Value, json};

use crate::{client, post};

async fn admin(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-halberd-actor", "ops-alice");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn token_is_required() {
    let gw = TestGateway::start("").await;
    let r = client()
        .get(gw.admin_url("/admin/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(gw.admin_url("/admin/keys"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_admin_token"
    );
    // The client port does not serve the admin API.
    assert_eq!(
        client()
            .get(gw.url("/admin/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn key_lifecycle_over_http() {
    let gw = TestGateway::start("").await;
    let (status, created) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "svc", "user": "u1", "models": ["mock-1"], "expires_in": "30d"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    let chat = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status(),
        200
    );

    let (status, listed) = admin(&gw, reqwest::Method::GET, "/admin/keys", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(
        !listed.to_string().contains(&key),
        "listing must not contain secrets"
    );

    let (status, rotated) = admin(
        &gw,
        reqwest::Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        Some(json!({"grace": "1h"})),
    )
    .await;
    assert_eq!(status, 201);
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status(),
        200,
        "old key valid during grace"
    );
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), &new_key, chat.clone())
            .await
            .status(),
        200
    );

    let (status, _) = admin(
        &gw,
        reqwest::Method::POST,
        &format!("/admin/keys/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status(),
        401
    );

    let (status, updated) = admin(
        &gw,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{}", rotated["id"].as_str().unwrap()),
        Some(json!({"models": ["mock-2"]})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), &new_key, chat)
            .await
            .status(),
        403
    );

    let (_, events) = admin(&gw, reqwest::Method::GET, "/admin/events?limit=10", None).await;
    let actions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["key.update", "key.revoke", "key.rotate", "key.create"]
    );
    assert!(
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "admin-api:ops-alice")
    );
    assert!(!events.to_string().contains(&key) && !events.to_string().contains(&new_key));
}

#[tokio::test]
async fn bad_admin_input_gets_clear_errors() {
    let gw = TestGateway::start("").await;
    let (s, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": ""})),
    )
    .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("name")));
    let (s, _) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "x", "unknown": 1})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "x", "expires_in": "soon"})),
    )
    .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("expires_in")));
    let (s, v) = admin(&gw, reqwest::Method::POST, "/admin/keys/nope/revoke", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("key_not_found"))
    );
    let (s, _) = admin(&gw, reqwest::Method::GET, "/admin/events?limit=0", None).await;
    assert_eq!(s, 400);
    // A policy the configuration does not have is refused at creation and
    // on update, not at every request of the key.
    let (s, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "typo", "policy": "stirct"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("policy")),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("default"));
    // `allowed_models`, the record's own name, is accepted on input too.
    let (s, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json!({"name": "scoped", "allowed_models": ["mock-1"], "policy": "default"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["allowed_models"], json!(["mock-1"]), "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(json!({"policy": "nope"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("policy")),
        "{v}"
    );
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let gw = TestGateway::start("").await;
    let doc: Value = client()
        .get(gw.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/admin/keys", "get"),
        ("/admin/keys", "post"),
        ("/admin/keys/{id}", "get"),
        ("/admin/keys/{id}", "patch"),
        ("/admin/keys/{id}/rotate", "post"),
        ("/admin/keys/{id}/revoke", "post"),
        ("/admin/keys/{id}/usage", "get"),
        ("/admin/users", "get"),
        ("/admin/users/{user}/limits", "get"),
        ("/admin/users/{user}/limits", "patch"),
        ("/admin/users/{user}/usage", "get"),
        ("/admin/events", "get"),
        ("/admin/stages", "get"),
        ("/metrics", "get"),
        ("/admin/usage", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_another_within_the_cache_ttl() {
    // Two gateways on one store, as two replicas on one database.
    let shared = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\npath = \"{}\"\n[auth]\nkey_cache_ttl = \"1s\"\n",
        shared.path().join("shared.db").display()
    );
    let a = TestGateway::start(&config).await;
    let b = TestGateway::start(&config).await;
    let created: Value = client()
        .post(a.admin_url("/admin/keys"))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .json(&json!({"name": "replicated"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let chat = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    // B has now read (and cached) the key.
    assert_eq!(
        crate::post(&b.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status(),
        200
    );

    let revoked = std::time::Instant::now();
    let resp = client()
        .post(a.admin_url(&format!("/admin/keys/{id}/revoke")))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A evicted its own cache entry: refused at once.
    assert_eq!(
        crate::post(&a.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status(),
        401
    );
    // B refuses within the documented bound (the cache TTL).
    loop {
        let status = crate::post(&b.url("/v1/chat/completions"), &key, chat.clone())
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_millis(1500),
            "B still accepts after the TTL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The per-stage breakdown counts what ran, in pipeline order, behind the
/// admin token. (The totals are per process, shared by the tests running
/// beside this one: only lower bounds are certain.)
#[tokio::test]
async fn stages_report_where_the_time_went() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(gw.admin_url("/admin/stages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = client()
        .get(gw.admin_url("/admin/stages"))
        .bearer_auth(halberd_testkit::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stages: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "authenticate",
            "admit",
            "read",
            "decode",
            "inspect",
            "route",
            "upstream",
            "handler"
        ]
    );
    for s in v["data"].as_array().unwrap() {
        assert!(s["count"].as_u64().unwrap() >= 1, "{s}");
        assert!(s["mean_us"].as_f64().unwrap() > 0.0, "{s}");
    }
}

#[tokio::test]
async fn usage_reports_group_the_usage_records() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    for model in ["mock-usage-a", "mock-usage-a", "mock-usage-b"] {
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-mock-usage", "10,2")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let get = |query: &'static str| {
        client()
            .get(gw.admin_url(&format!("/admin/usage{query}")))
            .bearer_auth(halberd_testkit::ADMIN_TOKEN)
            .send()
    };
    // The usage writer batches: wait for the three records.
    let mut report = Value::Null;
    for _ in 0..100 {
        report = get("?by=model&since=1h")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["rows"].as_array().map(Vec::len) == Some(2) && report["rows"][0]["requests"] == 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(report["by"], "model");
    assert_eq!(
        report["rows"],
        json!([
            {"model": "mock-usage-a", "requests": 2, "input_tokens": 20, "output_tokens": 4, "cost_usd": report["rows"][0]["cost_usd"], "estimated": 0, "failed": 0},
            {"model": "mock-usage-b", "requests": 1, "input_tokens": 10, "output_tokens": 2, "cost_usd": report["rows"][1]["cost_usd"], "estimated": 0, "failed": 0}
        ])
    );
    let by_key: Value = get("").await.unwrap().json().await.unwrap();
    assert_eq!(by_key["by"], "key");
    assert_eq!(by_key["rows"][0]["requests"], 3);
    let empty: Value = get("?until=2020-01-01")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty["rows"], json!([]));
    // Bad parameters are 400s naming the parameter; no token, no report.
    let resp = get("?by=colour").await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "by");
    assert_eq!(get("?since=yesterday").await.unwrap().status(), 400);
    let resp = client()
        .get(gw.admin_url("/admin/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
