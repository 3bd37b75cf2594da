//! Test support: a real gateway (and a real mock upstream) on ephemeral
//! loopback ports, each with its own store in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use halberd_gateway::config::ConfigFile;
use halberd_gateway::{AppState, Gateway};
use halberd_store::{IssuedKey, KeySpec, now_unix};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// What `HALBERD_TEST_METRICS_TOKEN` holds for gateways started here (name it
/// in `[metrics] token_env` to put `/metrics` behind a token).
pub const METRICS_TOKEN: &str = "test-metrics-token-9876543210";

/// A running gateway. Dropping it stops it.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway from `toml` (listen addresses are replaced by
    /// ephemeral ones; `{dir}` in the text is the temporary directory).
    pub async fn start(toml: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let text = toml.replace("{dir}", dir.path().to_str().unwrap());
        let mut file = ConfigFile::parse(&text).unwrap();
        file.server.listen = "127.0.0.1:0".into();
        file.server.admin_listen = "127.0.0.1:0".into();
        let config = file
            .build(dir.path(), &|k| {
                if k == "HALBERD_ADMIN_TOKEN" {
                    Some(ADMIN_TOKEN.into())
                } else {
                    std::env::var(k).ok()
                }
            })
            .unwrap();
        TestGateway::start_config(config, dir).await
    }

    pub async fn start_config(
        config: halberd_gateway::config::Config,
        dir: tempfile::TempDir,
    ) -> TestGateway {
        let env = |k: &str| match k {
            "HALBERD_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
            "HALBERD_TEST_METRICS_TOKEN" => Some(METRICS_TOKEN.to_owned()),
            _ => None,
        };
        let state = halberd_gateway::build_state(config, &env).await.unwrap();
        let gw = Gateway::bind(state.clone()).await.unwrap();
        let (addr, admin_addr) = (gw.local_addr().unwrap(), gw.admin_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(gw.run(async move {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            admin_addr,
            state,
            dir,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    pub async fn key(&self, spec: KeySpec) -> IssuedKey {
        self.state
            .keyring
            .create(spec, "test", now_unix())
            .await
            .unwrap()
    }

    pub async fn any_key(&self) -> String {
        self.key(KeySpec {
            name: "test".into(),
            ..KeySpec::default()
        })
        .await
        .key
    }

    /// Asks the gateway to shut down gracefully and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// `halberd mock-upstream` on an ephemeral port.
pub struct MockUpstream {
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(halberd_gateway::mock_server::run(
            listener,
            std::future::pending(),
        ));
        MockUpstream { addr, handle }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A config with both provider kinds pointing at a mock upstream over real
/// HTTP, plus the in-process mock.
pub fn config_with_http_mock(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "oai"
kind = "openai"
base_url = "http://{upstream}/v1"
allow_http = true
mock_headers = true

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://{upstream}"
allow_http = true
mock_headers = true

[[providers]]
name = "inproc"
kind = "mock"

[[models]]
name = "gpt-test"
provider = "oai"
upstream = "mock-upstream-model"

[[models]]
name = "claude-test"
provider = "claude"

[[models]]
name = "mock-*"
provider = "inproc"
{extra}
"#
    )
}

/// Collects an SSE response body and returns the `data:` payloads.
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let bytes = resp.bytes().await.unwrap();
    halberd_protocol_sse_data(&bytes)
}

pub fn halberd_protocol_sse_data(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.split("\n\n")
        .filter_map(|ev| {
            let lines: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

/// The text a streamed chat completion spelled out, from its `data:` payloads.
pub fn chat_delta_text(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
