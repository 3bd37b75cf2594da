//! Sensitive-data inspection through the gateway: requests redacted before they
//! go upstream, responses redacted streamed and not, pseudonyms restored,
//! blocks in the caller's dialect, for every endpoint that carries text.

use halberd_store::KeySpec;
use halberd_testkit::{TestGateway, sse_data};
use serde_json::{Value, json};

use crate::client;

const PROMPT: &str = "Mail jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, \
key AKIAUJZDEGXDNCF32EPF, token ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN, from 192.168.1.20.";
const REDACTED: &str = "Mail [EMAIL] or call [PHONE]; card [CREDIT_CARD], \
key [SECRET:aws_access_key_id], token [SECRET:github_token], from [IP_ADDRESS].";
const VALUES: &[&str] = &[
    "jane.doe@example.com",
    "7946 0958",
    "4111 1111 1111 1111",
    "AKIAUJZDEGXDNCF32EPF",
    "ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN",
    "192.168.1.20",
];

const POLICIES: &str = r#"
[[policies]]
name = "pseudo"
[policies.sensitive]
input = { default = "redact", email = "pseudonymize", phone = "pseudonymize" }

[[policies]]
name = "strict"
[policies.sensitive]
input = { default = "redact", secret = "block" }
output = { default = "redact", "secret:github_token" = "block" }

[[policies]]
name = "outonly"
[policies.sensitive]
input = { default = "off" }
output = { default = "redact" }

[[policies]]
name = "open"
[policies.sensitive]
input = { default = "off" }
output = { default = "off" }
"#;

async fn gateway() -> TestGateway {
    TestGateway::start(POLICIES).await
}

/// A key under `policy` (the default policy when `None`).
pub(crate) async fn key(gw: &TestGateway, policy: Option<&str>) -> String {
    gw.key(KeySpec {
        name: "t".into(),
        policy: policy.map(str::to_owned),
        ..KeySpec::default()
    })
    .await
    .key
}

fn assert_clean(raw: &str) {
    for value in VALUES {
        assert!(!raw.contains(value), "{value} reached the client: {raw}");
    }
}

/// One request on `endpoint`, streamed or not, with the mock splitting text
/// deltas into `chunk` bytes; returns the text the client assembled and the
/// raw body.
async fn ask(
    gw: &TestGateway,
    key: &str,
    endpoint: &str,
    text: &str,
    stream: bool,
    chunk: usize,
    reply: Option<&str>,
) -> (u16, String, String) {
    let body = match endpoint {
        "/v1/messages" => {
            json!({"model": "mock-1", "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": text}]})
        }
        "/v1/responses" => json!({"model": "mock-1", "stream": stream, "input": text}),
        _ => {
            json!({"model": "mock-1", "stream": stream, "messages": [{"role": "user", "content": text}]})
        }
    };
    let mut req = client()
        .post(gw.url(endpoint))
        .header("x-api-key", key)
        .bearer_auth(key)
        .header("x-mock-chunk-bytes", chunk.to_string())
        .json(&body);
    if let Some(reply) = reply {
        req = req.header("x-mock-reply", reply);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if !stream || status != 200 {
        let raw = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        let text = match endpoint {
            "/v1/messages" => v["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "/v1/responses" => v["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            _ => v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        return (status, text, raw);
    }
    let data = sse_data(resp).await;
    let raw = data.join("\n");
    let mut text = String::new();
    for d in &data {
        let Ok(v) = serde_json::from_str::<Value>(d) else {
            continue;
        };
        match endpoint {
            "/v1/messages" if v["type"] == "content_block_delta" => {
                text.push_str(v["delta"]["text"].as_str().unwrap_or_default())
            }
            "/v1/responses" if v["type"] == "response.output_text.delta" => {
                text.push_str(v["delta"].as_str().unwrap_or_default())
            }
            "/v1/chat/completions" => text.push_str(
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            ),
            _ => {}
        }
    }
    (status, text, raw)
}

const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/messages", "/v1/responses"];

#[tokio::test]
async fn the_default_policy_redacts_prompts_and_echoed_responses_on_every_endpoint() {
    let gw = gateway().await;
    let key = key(&gw, None).await;
    for endpoint in ENDPOINTS {
        for stream in [false, true] {
            for chunk in [1, 3, 7] {
                let (status, text, raw) =
                    ask(&gw, &key, endpoint, PROMPT, stream, chunk, None).await;
                assert_eq!(status, 200, "{endpoint} {raw}");
                // The mock echoes what it received: the redacted prompt.
                assert_eq!(text, REDACTED, "{endpoint} stream={stream} chunk={chunk}");
                assert_clean(&raw);
            }
        }
    }
}

#[tokio::test]
async fn responses_are_redacted_even_when_the_prompt_was_clean() {
    let gw = gateway().await;
    let key = key(&gw, None).await;
    for endpoint in ENDPOINTS {
        for stream in [false, true] {
            for chunk in [1, 3, 7] {
                let (status, text, raw) = ask(
                    &gw,
                    &key,
                    endpoint,
                    "say something",
                    stream,
                    chunk,
                    Some(PROMPT),
                )
                .await;
                assert_eq!(status, 200, "{endpoint} {raw}");
                assert_eq!(text, REDACTED, "{endpoint} stream={stream} chunk={chunk}");
                assert_clean(&raw);
            }
        }
    }
}

#[tokio::test]
async fn input_summary_header_names_types_never_values() {
    let gw = gateway().await;
    let key = key(&gw, None).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    let header = resp.headers()["x-halberd-sensitive-input"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.contains("email=1:redact"), "{header}");
    assert!(
        header.contains("secret:aws_access_key_id=1:redact"),
        "{header}"
    );
    assert_clean(&header);
}

#[tokio::test]
async fn pseudonyms_hide_values_from_the_provider_and_come_back_restored() {
    let gw = gateway().await;
    let key = key(&gw, Some("pseudo")).await;
    let prompt = "Write to jane.doe@example.com and jane.doe@example.com, call +44 20 7946 0958.";
    // The mock echoes the placeholders it received; the client gets the
    // values back, also when a placeholder is split across stream events.
    for endpoint in ENDPOINTS {
        for stream in [false, true] {
            for chunk in [1, 3, 7] {
                let (status, text, raw) =
                    ask(&gw, &key, endpoint, prompt, stream, chunk, None).await;
                assert_eq!(status, 200, "{raw}");
                assert_eq!(text, prompt, "{endpoint} stream={stream} chunk={chunk}");
            }
        }
    }
    // Placeholders the request did not create are left alone.
    let (_, text, _) = ask(
        &gw,
        &key,
        "/v1/messages",
        prompt,
        true,
        2,
        Some("see <EMAIL_1>, not <EMAIL_7> or <b>"),
    )
    .await;
    assert_eq!(text, "see jane.doe@example.com, not <EMAIL_7> or <b>");

    // And the provider never saw the values.
    let (addr, seen) = crate::passthrough::start_capture().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), "sk-x").unwrap();
    let config = format!(
        "[[providers]]\nname = \"cap\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nallow_http = true\napi_key_file = \"{}\"\n[[models]]\nname = \"m\"\nprovider = \"cap\"\n{POLICIES}",
        dir.path().join("k").display()
    );
    let gw = TestGateway::start(&config).await;
    let key = self::key(&gw, Some("pseudo")).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "m", "messages": [{"role": "system", "content": "Reply to +44 20 7946 0958"}, {"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, sent) = seen.lock().unwrap().pop().unwrap();
    assert_eq!(sent["messages"][0]["content"], "Reply to <PHONE_1>");
    assert_eq!(
        sent["messages"][1]["content"],
        "Write to <EMAIL_1> and <EMAIL_1>, call <PHONE_1>."
    );
}

#[tokio::test]
async fn blocked_input_is_refused_in_the_callers_dialect_without_the_value() {
    let gw = gateway().await;
    let key = key(&gw, Some("strict")).await;
    let (status, _, raw) = ask(&gw, &key, "/v1/chat/completions", PROMPT, false, 3, None).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["error"]["code"], "sensitive_data_detected");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret:aws_access_key_id")
    );
    assert_clean(&raw);
    let (status, _, raw) = ask(&gw, &key, "/v1/messages", PROMPT, true, 3, None).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["code"], "sensitive_data_detected");
    assert_clean(&raw);
}

#[tokio::test]
async fn blocked_output_ends_the_stream_with_an_error_before_the_value() {
    let gw = gateway().await;
    let key = key(&gw, Some("strict")).await;
    let reply = "Here it is: ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN done";
    let (status, _, raw) = ask(
        &gw,
        &key,
        "/v1/chat/completions",
        "hi",
        false,
        3,
        Some(reply),
    )
    .await;
    // Withheld by policy: 403, not the 400 of a bad request.
    assert_eq!(status, 403, "{raw}");
    assert!(raw.contains("sensitive_data_detected"));
    assert!(raw.contains("withheld"), "{raw}");
    assert_clean(&raw);
    for endpoint in ENDPOINTS {
        let (status, text, raw) = ask(&gw, &key, endpoint, "hi", true, 3, Some(reply)).await;
        assert_eq!(status, 200);
        assert!(raw.contains("sensitive_data_detected"), "{endpoint}: {raw}");
        assert!(text.starts_with("Here it is"), "{endpoint}: {text}");
        assert_clean(&raw);
    }
}

#[tokio::test]
async fn a_policy_can_turn_inspection_off() {
    let gw = gateway().await;
    let key = key(&gw, Some("open")).await;
    let (_, text, _) = ask(&gw, &key, "/v1/chat/completions", PROMPT, true, 3, None).await;
    assert_eq!(text, PROMPT);
}

#[tokio::test]
async fn a_key_naming_an_unknown_policy_is_refused() {
    let gw = gateway().await;
    let key = key(&gw, Some("missing")).await;
    let (status, _, raw) = ask(&gw, &key, "/v1/chat/completions", "hi", false, 3, None).await;
    assert_eq!(status, 403);
    assert!(raw.contains("policy_not_found"), "{raw}");
}

#[tokio::test]
async fn tool_results_in_requests_and_tool_arguments_in_responses_are_redacted() {
    let gw = gateway().await;
    // A tool result carrying values: redacted before the provider sees it (the
    // mock answers "tool result: <what it received>").
    let key_default = key(&gw, None).await;
    let body = json!({"model": "mock-1", "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"jane.doe@example.com\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": PROMPT}
    ]});
    let v: Value = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key_default)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("tool result: {REDACTED}")
    );

    // Tool-call arguments the model streams back: the input policy is off, so
    // the mock echoes the raw values into the arguments; the output policy
    // redacts them, also when split across argument deltas.
    let key = key(&gw, Some("outonly")).await;
    let tools_openai = json!([{"type": "function", "function": {"name": "save", "parameters": {"type": "object"}}}]);
    let tools_anthropic = json!([{"name": "save", "input_schema": {"type": "object"}}]);
    for chunk in [1, 3, 7] {
        let data = sse_data(
            client()
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .header("x-mock-chunk-bytes", chunk.to_string())
                .json(&json!({"model": "mock-1", "stream": true, "tools": tools_openai, "messages": [{"role": "user", "content": PROMPT}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_clean(&data.join("\n"));
        let arguments: String = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let parsed: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(parsed["input"], REDACTED, "chunk {chunk}");

        let data = sse_data(
            client()
                .post(gw.url("/v1/messages"))
                .header("x-api-key", &key)
                .header("x-mock-chunk-bytes", chunk.to_string())
                .json(&json!({"model": "mock-1", "max_tokens": 100, "stream": true, "tools": tools_anthropic, "messages": [{"role": "user", "content": PROMPT}]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_clean(&data.join("\n"));
        let partial: String = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        let parsed: Value = serde_json::from_str(&partial).unwrap();
        assert_eq!(parsed["input"], REDACTED, "chunk {chunk}");
    }
    let v: Value = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "mock-1", "max_tokens": 100, "tools": tools_anthropic, "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["input"]["input"], REDACTED);
}

/// A prompt shaped to make the scan quadratic (`key=key=…`, 200 KB) is
/// inspected in linear time on the blocking pool: the part the scan gave up
/// on goes upstream as `[UNINSPECTED]`, never unchecked, and the gateway keeps
/// answering meanwhile.
#[tokio::test]
async fn a_prompt_built_to_make_the_scan_quadratic_is_answered_with_the_rest_uninspected() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    let prompt = format!("reach me at jane.doe@example.com {}", "key=".repeat(50_000));
    let big = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        let key = key.clone();
        async move {
            crate::post(
                &url,
                &key,
                json!({"model": "mock-1", "messages": [{"role": "user", "content": prompt}]}),
            )
            .await
        }
    });
    let health = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let resp = big.await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let echoed = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        echoed.starts_with("reach me at [EMAIL] "),
        "{}",
        &echoed[..80]
    );
    assert!(
        echoed.ends_with("[UNINSPECTED]"),
        "{}",
        &echoed[echoed.len() - 80..]
    );
    assert!(
        echoed.len() < 1_000,
        "the uninspected rest never went upstream"
    );
}
