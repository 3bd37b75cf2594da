//! The edge: request ids, header limits and the header-read timeout, stream
//! timeouts, client disconnects cancelling the upstream, graceful shutdown.

use std::time::Duration;

use halberd_testkit::{TestGateway, sse_data};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client;

fn streamed(content: &str) -> Value {
    json!({"model": "mock-1", "stream": true, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn request_id_on_every_response() {
    let gw = TestGateway::start("").await;
    let r = client()
        .get(gw.url("/nope"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc.123");
    let r = client()
        .get(gw.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");
    // An unknown path asked in Anthropic style is answered in its shape.
    let r = client()
        .post(gw.url("/v1/complete"))
        .header("x-api-key", "sk-x")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error")),
        "{body}"
    );
    let r = client().get(gw.url("/v1/nope")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("type").is_none(),
        "OpenAI shape without the header: {body}"
    );
    let r = client()
        .get(gw.admin_url("/admin/keys"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    let gw = TestGateway::start("[server]\nmax_headers = 16\nmax_header_bytes = 8192").await;
    // Over our limits (but under hyper's, twice ours): refused in the
    // caller's error shape with a request id, as every other refusal.
    let mut req = client()
        .post(gw.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01");
    for i in 0..20 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(
        body["error"]["message"],
        "request headers exceed the limit of 8192 bytes or 16 fields"
    );
    // Past our limits, and far past them (past hyper's own bound, twice
    // ours: refused before hyper sees it), in the same shape.
    let too_large = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 431);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    };
    let big = |n: usize| {
        client()
            .get(gw.url("/healthz"))
            .header("x-big", "a".repeat(n))
    };
    too_large(big(9_000)).await;
    too_large(big(40_000)).await;
    let mut req = client().get(gw.url("/healthz"));
    for i in 0..40 {
        req = req.header(format!("x-h{i}"), "v");
    }
    too_large(req).await;
    assert_eq!(
        client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Sends `raw` on a fresh connection and reads until the server closes it.
async fn exchange_raw(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection left open");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The JSON body of the only response in `text`.
fn only_body(text: &str) -> Value {
    let answers = text.lines().filter(|l| l.starts_with("HTTP/1.1 ")).count();
    assert_eq!(answers, 1, "{text}");
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// RFC 9112 §6.1: a request with both `Content-Length` and
/// `Transfer-Encoding` is refused with 400, in the caller's shape, and the
/// connection closed, so nothing smuggled in the body is ever read as a
/// second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let gw = TestGateway::start("").await;
    let smuggled = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    for order in [
        "Content-Length: {n}\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: {n}",
    ] {
        let framing = order.replace("{n}", &body.len().to_string());
        let req = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nanthropic-version: 2023-06-01\r\nx-request-id: smuggle-1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n{body}"
        );
        let text = exchange_raw(gw.addr, req.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("x-request-id: smuggle-1\r\n"), "{text}");
        let body = only_body(&text);
        assert_eq!(body["type"], "error", "Anthropic shape: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("both Content-Length and Transfer-Encoding"),
            "{body}"
        );
    }
}

/// Heads hyper would answer with an empty 400 get a body in the caller's
/// shape and a request id, and the connection ends.
#[tokio::test]
async fn malformed_heads_are_refused_with_a_body() {
    let gw = TestGateway::start("").await;
    let cases: [(&[u8], &str); 6] = [
        (b"hello there\r\n\r\n", "not a valid HTTP/1.1 request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "not a valid HTTP/1.1 request"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "Transfer-Encoding is not supported",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding is not supported",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "Content-Length is not a valid length",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "Content-Length is not a valid length",
        ),
    ];
    for (raw, message) in cases {
        let text = exchange_raw(gw.addr, raw).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("x-request-id: req_"), "{text}");
        let body = only_body(&text);
        assert_eq!(body["error"]["code"], "malformed_request", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{message}: {body}"
        );
    }
}

/// Requests sent back to back on one connection, with bodies framed by
/// length and by chunks (extensions and trailers too), and a head that
/// arrives a byte at a time, are each answered: the check in front of
/// hyper finds every head where it starts.
#[tokio::test]
async fn pipelined_and_trickled_requests_are_all_answered() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{}\r\n{:x}\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n",
        &body[..5],
        body.len() - 5,
        &body[5..]
    );
    let sized = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let last = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let all = format!("{chunked}{sized}{chunked}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{last}");
    let text = exchange_raw(gw.addr, all.as_bytes()).await;
    // Three completions and two health checks, each answered 200.
    assert_eq!(text.matches("HTTP/1.1 200").count(), 5, "{text}");
    assert_eq!(text.matches("chat.completion").count(), 3, "{text}");

    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for b in all.as_bytes() {
        s.write_all(&[*b]).await.unwrap();
    }
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 5, "{text}");
}

/// On a connection that has served a request, a head that never completes
/// is cut at the header-read timeout, not left for the idle timeout.
#[tokio::test]
async fn a_slow_second_head_is_cut_at_the_header_read_timeout() {
    let gw =
        TestGateway::start("[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"30s\"")
            .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a partial second head held the connection");
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
}

#[tokio::test]
async fn header_read_timeout_closes_slow_clients() {
    let gw = TestGateway::start("[server]\nheader_read_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server must end the connection by itself; without an armed timer
    // this read would hang until the test's own limit.
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open after the header-read timeout"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
}

#[tokio::test]
async fn idle_upstream_stream_ends_with_an_error_event() {
    let gw = TestGateway::start("[[providers]]\nname = \"slow\"\nkind = \"mock\"\nidle_timeout = \"200ms\"\n[[models]]\nname = \"mock-1\"\nprovider = \"slow\"").await;
    let key = gw.any_key().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-delay-ms", "2000")
        .json(&streamed("abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = sse_data(resp).await;
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{data:?}");
    assert!(!data.contains(&"[DONE]".to_string()));
}

/// An upstream that streams one event every 50 ms until the gateway hangs up,
/// and reports when it noticed.
async fn endless_upstream() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        loop {
            if s.write_all(chunk.as_bytes()).await.is_err() || s.flush().await.is_err() {
                let _ = tx.send(());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let (addr, cancelled) = endless_upstream().await;
    let gw = TestGateway::start(&format!("[[providers]]\nname = \"e\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nallow_http = true\n[[models]]\nname = \"mock-1\"\nprovider = \"e\"")).await;
    let key = gw.any_key().await;
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&streamed("x"))
        .send()
        .await
        .unwrap();
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    tokio::time::timeout(Duration::from_secs(10), cancelled)
        .await
        .expect("upstream still being read after the client left")
        .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_lets_running_streams_finish() {
    let gw = TestGateway::start("").await;
    let key = gw.any_key().await;
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-chunk-bytes", "1")
        .header("x-mock-delay-ms", "40")
        .json(&streamed("twelve chars"))
        .send()
        .await
        .unwrap();
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    let addr = gw.addr;
    let shutdown = tokio::spawn(gw.shutdown());
    // New connections are soon no longer accepted...
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("still accepting connections after shutdown began");
    // ...but the running stream completes.
    while let Some(c) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    let data = halberd_testkit::halberd_protocol_sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text = halberd_testkit::chat_delta_text(&data);
    assert_eq!(text, "twelve chars");
    shutdown.await.unwrap();
}

#[tokio::test]
async fn connections_past_the_limit_wait_while_every_slot_is_busy() {
    let gw = TestGateway::start("[server]\nmax_connections = 1").await;
    let key = gw.any_key().await;
    // A slow stream takes the only slot: it is in flight, not idle.
    let busy = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-chunk-bytes", "1")
        .header("x-mock-delay-ms", "50")
        .json(&streamed("ten chars."))
        .send()
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let url = gw.url("/healthz");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served past max_connections = 1"
    );
    // The stream was not cut to make room; once it ends, the slot frees.
    let body = busy.text().await.unwrap();
    assert!(body.contains("[DONE]"), "{body}");
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn at_the_limit_the_longest_idle_connection_gives_way() {
    let gw = TestGateway::start("[server]\nmax_connections = 4").await;
    // Four connections that never send a byte hold every slot, the first
    // idle the longest.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Idle connections give way once idle for a second (a connection just
    // accepted may have a request not yet read).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..3 {
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            client().get(gw.url("/healthz")).send(),
        )
        .await
        .expect("a new client waited behind idle connections")
        .unwrap()
        .status();
        assert_eq!(status, 200);
    }
    // The first silent connection was the one closed.
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent[0].read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the oldest idle connection is closed"
    );
}

#[tokio::test]
async fn connections_that_never_send_are_closed_after_the_header_read_timeout() {
    let gw = TestGateway::start("[server]\nheader_read_timeout = \"300ms\"").await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    for mut s in silent {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection that sent nothing is still open"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_quiet_stream_is_not() {
    let gw = TestGateway::start("[server]\nidle_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "keep-alive connection still open when idle");
    assert!(String::from_utf8_lossy(&buf).contains("200 OK"));

    // A stream whose events are further apart than the idle timeout is in
    // flight, not idle: it completes.
    let key = gw.any_key().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-mock-chunk-bytes", "4")
        .header("x-mock-delay-ms", "400")
        .json(&streamed("quiet stream"))
        .send()
        .await
        .unwrap();
    let data = halberd_testkit::sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(halberd_testkit::chat_delta_text(&data), "quiet stream");
}
