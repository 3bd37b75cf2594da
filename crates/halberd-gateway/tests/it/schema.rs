//! Structured output: an answer to a request that asked for a JSON schema
//! is checked against it, whole and streamed, on chat completions and
//! Responses; strict requests are refused on a violation, others pass.

use halberd_testkit::TestGateway;
use serde_json::{Value, json};

use crate::client;

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["city"], "additionalProperties": false})
}

fn body(path: &str, strict: bool, stream: bool) -> Value {
    if path == "/v1/responses" {
        json!({"model": "mock-1", "stream": stream, "input": "weather?",
            "text": {"format": {"type": "json_schema", "name": "w", "strict": strict, "schema": schema()}}})
    } else {
        json!({"model": "mock-1", "stream": stream, "messages": [{"role": "user", "content": "weather?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": strict, "schema": schema()}}})
    }
}

async fn ask(
    gw: &TestGateway,
    key: &str,
    path: &str,
    strict: bool,
    stream: bool,
    reply: &str,
) -> (u16, String) {
    let resp = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .header("x-mock-reply", reply)
        .header("x-mock-chunk-bytes", "4")
        .json(&body(path, strict, stream))
        .send()
        .await
        .unwrap();
    crate::status_and_text(resp, stream).await
}

#[tokio::test]
async fn answers_that_break_the_requested_schema_are_refused_when_strict() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    for path in ["/v1/chat/completions", "/v1/responses"] {
        for stream in [false, true] {
            // A conforming answer passes.
            let (status, raw) =
                ask(&gw, &key, path, true, stream, r#"{"city": "Lyon", "n": 3}"#).await;
            assert_eq!(status, 200, "{path} {stream}: {raw}");
            assert!(!raw.contains("output_schema_violation"), "{raw}");

            // A wrong type: refused, naming where, never the content.
            let (status, raw) = ask(
                &gw,
                &key,
                path,
                true,
                stream,
                r#"{"city": "Lyon", "n": "SECRET-three"}"#,
            )
            .await;
            assert!(
                raw.contains("output_schema_violation"),
                "{path} {stream}: {raw}"
            );
            assert!(raw.contains("/n"), "{path} {stream}: {raw}");
            if stream {
                assert_eq!(status, 200);
                // The stream's last event is the error.
                let last: Value = serde_json::from_str(raw.lines().last().unwrap()).unwrap();
                assert!(
                    last.to_string().contains("output_schema_violation"),
                    "{raw}"
                );
            } else {
                assert_eq!(status, 502);
                assert!(!raw.contains("SECRET-three"), "{raw}");
                let v: Value = serde_json::from_str(&raw).unwrap();
                assert_eq!(v["error"]["code"], "output_schema_violation");
            }

            // Not JSON at all: refused.
            let (_, raw) = ask(&gw, &key, path, true, stream, "Sure! Here it is: city Lyon").await;
            assert!(
                raw.contains("output_schema_violation"),
                "{path} {stream}: {raw}"
            );

            // Not strict: the same answer passes (flagged in the guard log).
            let (status, raw) = ask(
                &gw,
                &key,
                path,
                false,
                stream,
                r#"{"city": "Lyon", "n": "three"}"#,
            )
            .await;
            assert_eq!(status, 200, "{path} {stream}: {raw}");
            assert!(!raw.contains("output_schema_violation"), "{raw}");
        }
    }
}

#[tokio::test]
async fn anthropic_structured_output_is_checked_whole_and_streamed() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    for stream in [false, true] {
        let send = |reply: &'static str| {
            client()
                .post(gw.url("/v1/messages"))
                .header("x-api-key", &key)
                .header("x-mock-reply", reply)
                .header("x-mock-chunk-bytes", "4")
                .json(
                    &json!({"model": "mock-1", "max_tokens": 100, "stream": stream,
                    "messages": [{"role": "user", "content": "weather?"}],
                    "output_config": {"format": {"type": "json_schema", "schema": schema()}}}),
                )
                .send()
        };
        let resp = send(r#"{"city": "Lyon", "n": 3}"#).await.unwrap();
        assert_eq!(resp.status(), 200);
        let raw = resp.text().await.unwrap();
        assert!(!raw.contains("output_schema_violation"), "{raw}");

        let resp = send(r#"{"city": "Lyon", "n": "SECRET-three"}"#)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let raw = resp.text().await.unwrap();
        assert!(
            raw.contains("output_schema_violation") && raw.contains("/n"),
            "{stream}: {raw}"
        );
        if stream {
            assert_eq!(status, 200);
            assert!(
                !raw.contains("message_stop"),
                "the stream ended normally: {raw}"
            );
        } else {
            assert_eq!(status, 502);
            assert!(!raw.contains("SECRET-three"), "{raw}");
        }
    }
}
