//! The tool-call policy's default, with no configuration: a call to a tool
//! the request did not declare, or with arguments that are not JSON, is
//! refused on every API, whole and streamed; a declared call passes.

use halberd_testkit::TestGateway;
use serde_json::{Value, json};

use crate::client;

/// A request on `path` offering the tool `lookup`.
fn body(path: &str, stream: bool) -> Value {
    match path {
        "/v1/messages" => json!({"model": "mock-1", "max_tokens": 50, "stream": stream,
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "find order 7"}]}),
        "/v1/responses" => json!({"model": "mock-1", "stream": stream,
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            "input": "find order 7"}),
        _ => json!({"model": "mock-1", "stream": stream,
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "find order 7"}]}),
    }
}

const PATHS: [&str; 3] = ["/v1/chat/completions", "/v1/responses", "/v1/messages"];

/// The mock's call ids: one of them in a stream means a call was relayed.
const CALL_IDS: [&str; 3] = ["call_mock_1", "fc_mock", "toolu_mock_1"];

async fn ask(
    gw: &TestGateway,
    key: &str,
    path: &str,
    stream: bool,
    tool: Option<&str>,
    arguments: Option<&str>,
) -> (u16, String) {
    let mut req = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .header("x-api-key", key)
        .header("x-mock-chunk-bytes", "3")
        .json(&body(path, stream));
    if let Some(tool) = tool {
        req = req.header("x-mock-tool-call", tool);
    }
    if let Some(arguments) = arguments {
        req = req.header("x-mock-tool-arguments", arguments);
    }
    crate::status_and_text(req.send().await.unwrap(), stream).await
}

#[tokio::test]
async fn declared_calls_pass_on_every_api_whole_and_streamed() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    for path in PATHS {
        for stream in [false, true] {
            let (status, raw) = ask(&gw, &key, path, stream, None, None).await;
            assert_eq!(status, 200, "{path} stream={stream}: {raw}");
            assert!(raw.contains("lookup"), "{path} stream={stream}: {raw}");
            assert!(!raw.contains("tool_call_not_allowed"), "{raw}");
        }
    }
}

#[tokio::test]
async fn a_call_to_an_undeclared_tool_is_refused_before_any_of_it_is_relayed() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    for path in PATHS {
        // Whole: a 502 in the caller's error shape, naming the code.
        let (status, raw) = ask(&gw, &key, path, false, Some("wire_money"), None).await;
        assert_eq!(status, 502, "{path}: {raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["error"]["code"], "tool_call_not_allowed", "{path}: {raw}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'wire_money'")
        );
        assert!(CALL_IDS.iter().all(|id| !raw.contains(id)), "{path}: {raw}");

        // Streamed: the stream ends with the error event, and no event of
        // the call went out before it.
        let (status, raw) = ask(&gw, &key, path, true, Some("wire_money"), None).await;
        assert_eq!(status, 200, "{path}");
        assert!(raw.contains("tool_call_not_allowed"), "{path}: {raw}");
        assert!(CALL_IDS.iter().all(|id| !raw.contains(id)), "{path}: {raw}");
    }
}

#[tokio::test]
async fn arguments_that_are_not_json_are_refused() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    // Whole answers carry arguments as a string on the OpenAI APIs
    // (Anthropic's `input` is an object the provider has parsed).
    for path in ["/v1/chat/completions", "/v1/responses"] {
        let (status, raw) = ask(&gw, &key, path, false, Some("lookup"), Some("{\"q\": 7")).await;
        assert_eq!(status, 502, "{path}: {raw}");
        assert!(raw.contains("tool_arguments_invalid"), "{path}: {raw}");
    }
    // Streamed, on all three: the call is held until complete, then refused:
    // the stream ends with the error and nothing of the call went out.
    for path in PATHS {
        let (status, raw) = ask(&gw, &key, path, true, Some("lookup"), Some("{\"q\": 7")).await;
        assert_eq!(status, 200);
        assert!(raw.contains("tool_arguments_invalid"), "{path}: {raw}");
        assert!(CALL_IDS.iter().all(|id| !raw.contains(id)), "{path}: {raw}");
        assert!(
            !raw.contains("\\\"q\\\""),
            "{path}: arguments relayed: {raw}"
        );
        let last: Value = serde_json::from_str(raw.lines().last().unwrap()).unwrap();
        assert!(
            last.to_string().contains("tool_arguments_invalid"),
            "{path}: {raw}"
        );
    }
    // Valid JSON passes, streamed and not.
    for path in PATHS {
        for stream in [false, true] {
            let (status, raw) =
                ask(&gw, &key, path, stream, Some("lookup"), Some("{\"q\": 7}")).await;
            assert_eq!(status, 200, "{path}: {raw}");
            assert!(!raw.contains("tool_arguments_invalid"), "{path}: {raw}");
        }
    }
}

#[tokio::test]
async fn a_policy_limits_which_tools_may_be_declared() {
    let gw = TestGateway::start(
        r#"
[[policies]]
name = "agents"
[policies.tools]
allow = ["lookup", "search_*"]
deny = ["search_private*"]
"#,
    )
    .await;
    let key = gw
        .key(halberd_store::KeySpec {
            name: "agent".into(),
            policy: Some("agents".into()),
            ..halberd_store::KeySpec::default()
        })
        .await
        .key;
    // Allowed tools pass (the mock calls the first one).
    let (status, raw) = ask(&gw, &key, "/v1/messages", false, None, None).await;
    assert_eq!(status, 200, "{raw}");
    // A request declaring a tool outside the rules is refused before it is
    // sent: 403 in the caller's shape, naming the tool.
    for (path, tools) in [
        (
            "/v1/chat/completions",
            json!([{"type": "function", "function": {"name": "lookup"}}, {"type": "function", "function": {"name": "send_email"}}]),
        ),
        (
            "/v1/responses",
            json!([{"type": "function", "name": "search_private_docs"}]),
        ),
        (
            "/v1/messages",
            json!([{"name": "shell", "input_schema": {"type": "object"}}]),
        ),
    ] {
        let mut body = body(path, false);
        body["tools"] = tools;
        let resp = client()
            .post(gw.url(path))
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "tool_not_allowed", "{path}: {v}");
    }
    // Keys under other policies are not limited.
    let open = gw.any_key().await;
    let mut body = body("/v1/messages", false);
    body["tools"] = json!([{"name": "shell", "input_schema": {"type": "object"}}]);
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &open)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn policy_rules_block_calls_whose_arguments_break_their_constraints() {
    let gw = TestGateway::start(
        r#"
[[policies]]
name = "agents"
[[policies.tools.rules]]
tools = ["look*"]
[policies.tools.rules.arguments.url]
hosts = ["api.example.com"]
[policies.tools.rules.arguments.mode]
enum = ["read"]
"#,
    )
    .await;
    let key = crate::policy_key(&gw, "agents").await;
    let allowed = r#"{"url": "https://api.example.com/orders/7", "mode": "read"}"#;
    let exfil = r#"{"url": "https://collector.example/?d=order+7+for+ann", "mode": "read"}"#;
    for path in PATHS {
        for stream in [false, true] {
            let (status, raw) = ask(&gw, &key, path, stream, Some("lookup"), Some(allowed)).await;
            assert_eq!(status, 200, "{path} stream={stream}: {raw}");
            assert!(!raw.contains("tool_call_blocked"), "{raw}");
        }
        // Whole: 403, naming the argument and the constraint, never the value.
        let (status, raw) = ask(&gw, &key, path, false, Some("lookup"), Some(exfil)).await;
        assert_eq!(status, 403, "{path}: {raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["error"]["code"], "tool_call_blocked", "{path}: {raw}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("/url: hosts"), "{message}");
        assert!(!raw.contains("collector"), "{raw}");
        // Streamed: the call is held until complete, then refused; nothing
        // of it went out.
        let (status, raw) = ask(&gw, &key, path, true, Some("lookup"), Some(exfil)).await;
        assert_eq!(status, 200);
        assert!(raw.contains("tool_call_blocked"), "{path}: {raw}");
        assert!(!raw.contains("collector"), "{path}: {raw}");
        assert!(CALL_IDS.iter().all(|id| !raw.contains(id)), "{path}: {raw}");
    }
    // The same call under a key without the rule passes.
    let plain = gw.any_key().await;
    let (status, _) = ask(
        &gw,
        &plain,
        "/v1/chat/completions",
        false,
        Some("lookup"),
        Some(exfil),
    )
    .await;
    assert_eq!(status, 200);
}
