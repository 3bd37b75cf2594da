//! Every endpoint, streamed and not, through the in-process mock and through
//! the mock upstream over HTTP (OpenAI- and Anthropic-kind providers).

use halberd_testkit::{MockUpstream, TestGateway, config_with_http_mock, sse_data};
use serde_json::{Value, json};

use crate::{client, post};

async fn setup() -> (MockUpstream, TestGateway, String) {
    let up = MockUpstream::start().await;
    let gw = TestGateway::start(&config_with_http_mock(up.addr, "")).await;
    let key = gw.any_key().await;
    (up, gw, key)
}

#[tokio::test]
async fn chat_completions_plain_and_streamed_on_every_provider_kind() {
    let (_up, gw, key) = setup().await;
    for model in ["gpt-test", "mock-1"] {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "héllo there 🌍"}]});
        let resp = post(&gw.url("/v1/chat/completions"), &key, body.clone()).await;
        assert_eq!(resp.status(), 200, "{model}");
        assert_eq!(resp.headers()["x-halberd-ai-generated"], "true");
        assert!(resp.headers().contains_key("x-request-id"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "héllo there 🌍");

        let mut streamed = body;
        streamed["stream"] = json!(true);
        let resp = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-mock-chunk-bytes", "3")
            .json(&streamed)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let data = sse_data(resp).await;
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let text = halberd_testkit::chat_delta_text(&data);
        assert_eq!(text, "héllo there 🌍", "{model}");
        // The gateway asked upstream for usage; this client did not, so it
        // must not see the usage chunk.
        assert!(
            !data.iter().any(|d| d.contains("\"usage\":{")),
            "{model}: usage chunk leaked: {data:?}"
        );
    }
}

#[tokio::test]
async fn usage_chunk_reaches_clients_that_ask_for_it() {
    let (_up, gw, key) = setup().await;
    let body = json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "count me"}]});
    let data = sse_data(post(&gw.url("/v1/chat/completions"), &key, body).await).await;
    let usage: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn responses_plain_and_streamed() {
    let (_up, gw, key) = setup().await;
    for model in ["gpt-test", "mock-1"] {
        let v: Value = post(
            &gw.url("/v1/responses"),
            &key,
            json!({"model": model, "input": "good day"}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(v["output"][0]["content"][0]["text"], "good day", "{model}");
        let data = sse_data(
            post(
                &gw.url("/v1/responses"),
                &key,
                json!({"model": model, "input": "good day", "stream": true}),
            )
            .await,
        )
        .await;
        let events: Vec<Value> = data
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "good day");
        assert_eq!(events.last().unwrap()["type"], "response.completed");
    }
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let (_up, gw, key) = setup().await;
    for model in ["gpt-test", "mock-embed"] {
        let v: Value = post(
            &gw.url("/v1/embeddings"),
            &key,
            json!({"model": model, "input": ["a", "b"], "dimensions": 4}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2, "{model}");
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
        let v: Value = post(
            &gw.url("/v1/embeddings"),
            &key,
            json!({"model": model, "input": "a", "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert!(v["data"][0]["embedding"].is_string());
    }
}

#[tokio::test]
async fn anthropic_messages_plain_and_streamed() {
    let (_up, gw, key) = setup().await;
    for model in ["claude-test", "mock-1"] {
        let body = json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "text", "text": "bonjour"}]}]});
        let resp = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["content"][0]["text"], "bonjour", "{model}");
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let resp = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("x-mock-chunk-bytes", "1")
            .json(&streamed)
            .send()
            .await
            .unwrap();
        let raw = resp.bytes().await.unwrap();
        let text = String::from_utf8(raw.to_vec()).unwrap();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        let deltas: String = halberd_testkit::halberd_protocol_sse_data(&raw)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(deltas, "bonjour");
    }
}

#[tokio::test]
async fn models_lists_what_the_key_may_use_in_both_shapes() {
    let (_up, gw, _) = setup().await;
    let key = gw
        .key(halberd_store::KeySpec {
            name: "scoped".into(),
            allowed_models: vec!["gpt-test".into()],
            ..Default::default()
        })
        .await
        .key;
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-test"]);
    assert_eq!(v["object"], "list");
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["lifecycle"], "active", "{v}");
    assert_eq!(v["has_more"], false);

    // One model, as `client.models.retrieve` asks for it, in each dialect;
    // a model outside the key's scope is as unknown as a missing one.
    let get = |path: &str, anthropic: bool| {
        let mut req = client().get(gw.url(path));
        req = if anthropic {
            req.header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
        } else {
            req.bearer_auth(&key)
        };
        req.send()
    };
    let r = get("/v1/models/gpt-test", false).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("gpt-test"), Some("model"))
    );
    let v: Value = get("/v1/models/gpt-test", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["id"].as_str(), v["type"].as_str()),
        (Some("gpt-test"), Some("model"))
    );
    for (path, anthropic) in [("/v1/models/claude-test", false), ("/v1/models/nope", true)] {
        let r = get(path, anthropic).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{path}: {v}");
        assert_eq!(v["type"] == "error", anthropic, "{path}: {v}");
    }
}

/// A name a pattern route serves is a model to `models.retrieve` as it is
/// to the generation endpoints, within the key's scope.
#[tokio::test]
async fn models_retrieve_knows_names_that_a_pattern_serves() {
    let gw = TestGateway::start("").await;
    let open = gw.any_key().await;
    let scoped = gw
        .key(halberd_store::KeySpec {
            name: "scoped".into(),
            allowed_models: vec!["mock-1".into()],
            ..Default::default()
        })
        .await
        .key;
    let get = |key: String, id: &str| {
        client()
            .get(gw.url(&format!("/v1/models/{id}")))
            .bearer_auth(key)
            .send()
    };
    let r = get(open.clone(), "mock-7").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["id"].as_str(), v["owned_by"].as_str()),
        (Some("mock-7"), Some("mock")),
        "{v}"
    );
    assert_eq!(get(scoped.clone(), "mock-7").await.unwrap().status(), 404);
    assert_eq!(get(scoped, "mock-1").await.unwrap().status(), 200);
    assert_eq!(get(open, "gpt-7").await.unwrap().status(), 404);
}

/// `messages.count_tokens`: counted here, scoped by the key, nothing
/// forwarded; more text counts more, an image adds its estimate.
#[tokio::test]
async fn anthropic_count_tokens_counts_locally_within_the_key_scope() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    let count = |body: Value| {
        client()
            .post(gw.url("/v1/messages/count_tokens"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let short =
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hello there"}]});
    let r = count(short).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let few = v["input_tokens"].as_u64().unwrap();
    assert!((1..20).contains(&few), "{v}");
    let long = json!({"model": "mock-1", "system": "You are terse.", "messages": [
        {"role": "user", "content": "Hello there ".repeat(50)},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}
    ]});
    let v: Value = count(long).await.unwrap().json().await.unwrap();
    let many = v["input_tokens"].as_u64().unwrap();
    assert!(many > few + 1_600, "{few} -> {many}");
    let r = count(json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    let r = client()
        .post(gw.url("/v1/messages/count_tokens"))
        .json(&json!({"model": "mock-1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn health_and_readiness() {
    let (_up, gw, _) = setup().await;
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["checks"]["store"], "ok");
}

/// `gpt-test` is routed to the upstream id `mock-upstream-model`: the client
/// hears the name it asked for, whole and streamed, on chat and Responses.
#[tokio::test]
async fn responses_report_the_model_the_client_asked_for() {
    let (_up, gw, key) = setup().await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/responses", json!({"model": "gpt-test", "input": "hi"})),
    ] {
        let v: Value = crate::post(&gw.url(path), &key, body.clone())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["model"], "gpt-test", "{path}: {v}");
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let resp = crate::post(&gw.url(path), &key, streamed).await;
        let text = resp.text().await.unwrap();
        assert!(!text.contains("mock-upstream-model"), "{path}: {text}");
        assert!(text.contains("\"model\":\"gpt-test\""), "{path}: {text}");
    }
}
