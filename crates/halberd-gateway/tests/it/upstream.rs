//! The client that speaks to network providers: TLS with the system's trust
//! store and a provider's own CA file, connections kept and reused between
//! exchanges, and a connection the provider closed replaced without the
//! client noticing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use halberd_testkit::TestGateway;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{post, status_and_text};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The mock upstream behind TLS with a certificate for `localhost` and
/// 127.0.0.1 issued by the test CA (`tests/fixtures/tls`, made for these
/// tests). Counts the connections it accepts; with `keep_alive` off it
/// closes each after one response.
async fn upstream(tls: bool, keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    let acceptor = tls.then(|| {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(fixture("localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(fixture("localhost.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    listen(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let service = TowerToHyperService::new(halberd_gateway::mock_server::router());
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().keep_alive(keep_alive);
            let _ = match acceptor {
                Some(a) => {
                    let Ok(tls) = a.accept(tcp).await else { return };
                    builder.serve_connection(TokioIo::new(tls), service).await
                }
                None => builder.serve_connection(TokioIo::new(tcp), service).await,
            };
        }
    })
    .await
}

/// Listens on an ephemeral port and serves every connection with `serve`,
/// each on a task of its own; counts the connections accepted.
async fn listen<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp));
        }
    });
    (addr, accepted)
}

fn provider(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nallow_http = true\n{extra}\n[[models]]\nname = \"{name}-model\"\nprovider = \"{name}\"\nupstream = \"mock-1\"\n"
    )
}

/// The error of building `toml` (in `dir`), which must fail.
fn config_error(toml: &str, dir: &std::path::Path) -> String {
    halberd_gateway::config::ConfigFile::parse(toml)
        .unwrap()
        .build(dir, &|_| None)
        .err()
        .unwrap()
        .to_string()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "a plain question about tides"}]})
}

#[tokio::test]
async fn a_provider_behind_a_private_ca_is_reached_over_tls_and_an_untrusted_one_is_not() {
    let (addr, accepted) = upstream(true, true).await;
    let ca = fixture("ca.pem");
    let toml = [
        provider(
            "named",
            &format!("https://localhost:{}/v1", addr.port()),
            &format!("ca_file = {:?}", ca.to_str().unwrap()),
        ),
        provider(
            "ip",
            &format!("https://127.0.0.1:{}/v1", addr.port()),
            &format!("ca_file = {:?}", ca.to_str().unwrap()),
        ),
        provider(
            "stranger",
            &format!("https://localhost:{}/v1", addr.port()),
            "",
        ),
    ]
    .concat();
    let gw = TestGateway::start(&toml).await;
    let key = gw.any_key().await;
    let url = gw.url("/v1/chat/completions");
    for model in ["named-model", "ip-model"] {
        for stream in [false, true] {
            let resp = post(&url, &key, chat(model, stream)).await;
            let (status, text) = status_and_text(resp, stream).await;
            assert_eq!(status, 200, "{model} stream={stream}: {text}");
            assert!(text.contains("tides"), "{model} stream={stream}: {text}");
        }
    }
    // One connection per provider, each reused by its second to fourth
    // exchange.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Without the CA file the certificate is not trusted: nothing is sent.
    let resp = post(&url, &key, chat("stranger-model", false)).await;
    let (status, text) = status_and_text(resp, false).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("upstream_unreachable"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_ca_file_that_is_missing_or_holds_no_certificate_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (file, says) in [
        (dir.path().join("absent.pem"), "cannot read"),
        (empty, "holds no certificate"),
    ] {
        let toml = provider(
            "p",
            "https://localhost:1/v1",
            &format!("ca_file = {:?}", file.to_str().unwrap()),
        );
        let err = config_error(&toml, dir.path());
        assert!(
            err.contains("providers[0].ca_file") && err.contains(says),
            "{err}"
        );
    }
    // Plain HTTP has no certificates to check.
    let toml = provider("p", "http://127.0.0.1:1/v1", "ca_file = \"x.pem\"");
    std::fs::write(
        dir.path().join("x.pem"),
        std::fs::read(fixture("ca.pem")).unwrap(),
    )
    .unwrap();
    let err = config_error(&toml, dir.path());
    assert!(err.contains("https:// base_url only"), "{err}");
}

/// The answer of [`closes_when_idle`], pretty-printed the way some servers
/// write theirs.
const IDLE_ANSWER: &str = r#"{
  "id": "c1",
  "object": "chat.completion",
  "created": 0,
  "model": "mock-1",
  "choices": [
    {
      "index": 0,
      "message": { "role": "assistant", "content": "tides are slow" },
      "finish_reason": "stop"
    }
  ],
  "usage": { "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8 }
}"#;

/// A provider that answers one request per connection with keep-alive
/// (no `Connection: close`) and then closes the connection 50 ms later,
/// while the gateway holds it idle in its pool.
async fn closes_when_idle() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listen(|mut tcp| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The head, then as much body as it announces.
        let body_len = loop {
            let Ok(n) = tcp.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                break end + 4 + len;
            }
        };
        while buf.len() < body_len {
            let Ok(n) = tcp.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = IDLE_ANSWER;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(resp.as_bytes()).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    })
    .await
}

#[tokio::test]
async fn connections_are_reused_and_one_the_provider_closed_is_replaced() {
    let (kept, kept_accepted) = upstream(false, true).await;
    let (closing, closing_accepted) = upstream(false, false).await;
    let (idle, idle_accepted) = closes_when_idle().await;
    let toml = [
        provider("kept", &format!("http://{kept}/v1"), ""),
        provider("closing", &format!("http://{closing}/v1"), ""),
        provider("idle", &format!("http://{idle}/v1"), ""),
    ]
    .concat();
    let gw = TestGateway::start(&toml).await;
    let key = gw.any_key().await;
    let url = gw.url("/v1/chat/completions");
    for i in 0..6 {
        for model in ["kept-model", "closing-model"] {
            let stream = i % 2 == 1;
            let (status, text) =
                status_and_text(post(&url, &key, chat(model, stream)).await, stream).await;
            assert_eq!(status, 200, "{model} #{i}: {text}");
            assert!(text.contains("tides"), "{model} #{i}: {text}");
        }
    }
    assert_eq!(kept_accepted.load(Ordering::SeqCst), 1);
    // The provider said `Connection: close` each time: a new connection per
    // exchange, and no request failed for it.
    assert_eq!(closing_accepted.load(Ordering::SeqCst), 6);

    // The provider closed the pooled connection while it was idle, without
    // saying so beforehand: the next exchange notices and connects anew.
    for i in 0..3 {
        let (status, text) =
            status_and_text(post(&url, &key, chat("idle-model", false)).await, false).await;
        assert_eq!(status, 200, "#{i}: {text}");
        // Nothing to redact: the provider's bytes as they came, but for the
        // model name the client asked for.
        assert_eq!(
            text,
            IDLE_ANSWER.replace("\"model\": \"mock-1\"", "\"model\": \"idle-model\""),
            "#{i}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(idle_accepted.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

/// An HTTP proxy that opens `CONNECT` tunnels when the request carries
/// `expected_auth` (`Proxy-Authorization`), else answers 407. Records the
/// authorities it was asked for.
async fn connect_proxy(
    expected_auth: &'static str,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    let (addr, _) = listen(move |mut tcp| {
        let record = record.clone();
        async move {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let Ok(b) = tcp.read_u8().await else { return };
                head.push(b);
            }
            let head = String::from_utf8(head).unwrap();
            let authority = head.split(' ').nth(1).unwrap().to_owned();
            record.lock().unwrap().push(authority.clone());
            let authorized = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("proxy-authorization: {expected_auth}")));
            if !head.starts_with("CONNECT ") || !authorized {
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await;
                return;
            }
            tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            let Ok(mut target) =
                tokio::net::TcpStream::connect(authority.replace("localhost", "127.0.0.1")).await
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut target).await;
        }
    })
    .await;
    (addr, asked)
}

#[tokio::test]
async fn a_provider_is_reached_through_a_connect_proxy_and_a_refusing_proxy_fails_cleanly() {
    let (addr, _) = upstream(true, true).await;
    // user "ops", password "s3cret p@ss" (percent-encoded in the URL).
    let (proxy, asked) = connect_proxy("Basic b3BzOnMzY3JldCBwQHNz").await;
    let ca = fixture("ca.pem");
    let ca = format!("ca_file = {:?}\n", ca.to_str().unwrap());
    let toml = [
        provider(
            "proxied",
            &format!("https://localhost:{}/v1", addr.port()),
            &format!("{ca}proxy = \"http://ops:s3cret%20p%40ss@{proxy}\""),
        ),
        provider(
            "refused",
            &format!("https://localhost:{}/v1", addr.port()),
            &format!("{ca}proxy = \"http://ops:wrong@{proxy}\""),
        ),
    ]
    .concat();
    let gw = TestGateway::start(&toml).await;
    let key = gw.any_key().await;
    let url = gw.url("/v1/chat/completions");
    for stream in [false, true, false] {
        let (status, text) = status_and_text(
            post(&url, &key, chat("proxied-model", stream)).await,
            stream,
        )
        .await;
        assert_eq!(status, 200, "stream={stream}: {text}");
        assert!(text.contains("tides"), "{text}");
    }
    // One tunnel, to the provider's host and port, reused.
    assert_eq!(
        *asked.lock().unwrap(),
        vec![format!("localhost:{}", addr.port())]
    );

    let (status, text) =
        status_and_text(post(&url, &key, chat("refused-model", false)).await, false).await;
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("upstream_unreachable") && !text.contains("wrong"),
        "{text}"
    );
    gw.shutdown().await;
}

#[test]
fn a_proxy_must_be_plain_http_for_an_https_provider_and_its_password_is_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    for (base, proxy, says) in [
        (
            "https://llm.example.com/v1",
            "https://ops:hunter2@proxy:3128",
            "must be an http:// proxy URL",
        ),
        (
            "https://llm.example.com/v1",
            "http://ops:hunter2@proxy:3128/path",
            "without a path",
        ),
        (
            "http://127.0.0.1:9/v1",
            "http://ops:hunter2@proxy:3128",
            "https:// base_url only",
        ),
    ] {
        let toml = provider("p", base, &format!("proxy = {proxy:?}"));
        let err = config_error(&toml, dir.path());
        assert!(
            err.contains("providers[0].proxy") && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}
