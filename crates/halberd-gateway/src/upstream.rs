//! The only module that speaks to providers.
//!
//! One connection pool per provider ([`client`]: HTTP/1.1, each connection
//! driven by the exchange that uses it): no redirects followed (a redirect from
//! a provider is an error, never a reason to send credentials elsewhere), a
//! connect timeout, and a first-byte timeout on the response head. Idle and
//! total timeouts on the body are the relay's ([`crate::relay`]), which reads
//! it. Dropping an [`UpstreamResponse`] drops the connection, which is how a
//! client that goes away cancels the upstream request.
//!
//! The built-in mock provider answers in-process through the same
//! [`UpstreamResponse`], so every later stage treats it exactly like a network
//! provider.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

use halberd_protocol::{Api, Exchange};

use crate::config::{Provider, ProviderKind};
use crate::error::GatewayError;
use crate::mock;

pub mod client;

/// A body failure after the response head arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Read,
    Timeout,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    pub body: BodyStream,
}

/// Request headers a client may send that mean something to the provider and
/// carry no credentials. Everything else the client sent stays with us.
const FORWARDED_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta", "openai-beta"];

const ANTHROPIC_DEFAULT_VERSION: &str = "2023-06-01";

/// Clients for every configured provider, in config order.
#[derive(Clone)]
pub struct Upstreams {
    providers: Arc<[Provider]>,
    targets: Arc<[Option<Target>]>,
}

/// What a network provider needs per request, prepared once: parsing a URL
/// (with its IDNA pass) and building the credential header per request showed
/// in profiles.
struct Target {
    client: Arc<client::Client>,
    /// The request target (path and query) per [`Api`], in [`API_ORDER`].
    paths: [http::Uri; 4],
    host: HeaderValue,
    credential: Option<(http::HeaderName, HeaderValue)>,
}

const API_ORDER: [Api; 4] = [
    Api::ChatCompletions,
    Api::Responses,
    Api::Embeddings,
    Api::Messages,
];

fn api_slot(api: Api) -> usize {
    match api {
        Api::ChatCompletions => 0,
        Api::Responses => 1,
        Api::Embeddings => 2,
        Api::Messages => 3,
    }
}

impl Target {
    fn new(p: &Provider) -> Result<Target, String> {
        let base = p.base_url.as_deref().unwrap_or_default();
        let url = |api| {
            url::Url::parse(&endpoint_url(p.kind, base, api))
                .map_err(|e| format!("provider {}: base_url is not a valid URL: {e}", p.name))
        };
        let urls = [
            url(API_ORDER[0])?,
            url(API_ORDER[1])?,
            url(API_ORDER[2])?,
            url(API_ORDER[3])?,
        ];
        let origin = &urls[0];
        let tls = match origin.scheme() {
            "https" => Some(
                client::tls_config(p.ca_roots.clone())
                    .map_err(|e| format!("provider {}: {e}", p.name))?,
            ),
            _ => None,
        };
        let client = client::Client::new(origin, tls, p.proxy.clone(), p.timeouts.connect)
            .map_err(|e| format!("provider {}: {e}", p.name))?;
        let host = client::host_header(origin).map_err(|e| format!("provider {}: {e}", p.name))?;
        let path = |u: &url::Url| {
            u[url::Position::BeforePath..]
                .parse::<http::Uri>()
                .map_err(|_| format!("provider {}: base_url has an invalid path", p.name))
        };
        let paths = [
            path(&urls[0])?,
            path(&urls[1])?,
            path(&urls[2])?,
            path(&urls[3])?,
        ];
        let invalid = |_| {
            format!(
                "provider {}: the API key is not a valid header value",
                p.name
            )
        };
        let credential = match (p.kind, &p.api_key, &p.api_key_header) {
            (_, None, _) => None,
            (ProviderKind::Anthropic, Some(k), _) => Some((
                http::HeaderName::from_static("x-api-key"),
                secret_header(k.expose_secret()).map_err(invalid)?,
            )),
            // Azure-style deployments take the key in a header of their own.
            (_, Some(k), Some(name)) => Some((
                name.clone(),
                secret_header(k.expose_secret()).map_err(invalid)?,
            )),
            (_, Some(k), None) => Some((
                http::header::AUTHORIZATION,
                secret_header(&format!("Bearer {}", k.expose_secret())).map_err(invalid)?,
            )),
        };
        let client = Arc::new(client);
        client.reap_idle(client::REAP_EVERY);
        Ok(Target {
            client,
            paths,
            host,
            credential,
        })
    }
}

impl Upstreams {
    pub fn new(providers: &[Provider]) -> Result<Upstreams, String> {
        let targets = providers
            .iter()
            .map(|p| match p.kind {
                ProviderKind::Mock if p.base_url.is_none() => Ok(None),
                _ => Target::new(p).map(Some),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if targets.iter().any(Option::is_some) {
            for var in [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
                "all_proxy",
            ] {
                if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                    // The name only: a proxy URL may carry credentials.
                    tracing::warn!(
                        variable = var,
                        "a proxy variable is set, but it is not read: providers are reached directly unless their `proxy` is set"
                    );
                }
            }
        }
        Ok(Upstreams {
            providers: providers.into(),
            targets: targets.into(),
        })
    }

    pub fn provider(&self, index: usize) -> &Provider {
        &self.providers[index]
    }

    /// Sends `body` (already rewritten for the upstream) and waits for the
    /// response head.
    pub async fn send(
        &self,
        index: usize,
        api: Api,
        body: &Value,
        ex: &Exchange,
        client_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, GatewayError> {
        let provider = &self.providers[index];
        let Some(target) = &self.targets[index] else {
            return mock_in_process(api, body, ex, client_headers);
        };
        let bytes = serde_json::to_vec(body).map_err(|_| GatewayError::Internal)?;
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(target.paths[api_slot(api)].clone())
            .header(http::header::HOST, target.host.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::ACCEPT,
                if ex.stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        for name in FORWARDED_HEADERS {
            if let Some(v) = client_headers.get(*name) {
                req = req.header(*name, v.clone());
            }
        }
        if provider.mock_headers {
            for (name, v) in client_headers
                .iter()
                .filter(|(n, _)| n.as_str().starts_with("x-mock-"))
            {
                req = req.header(name.clone(), v.clone());
            }
        }
        if provider.kind == ProviderKind::Anthropic
            && !client_headers.contains_key("anthropic-version")
        {
            req = req.header("anthropic-version", ANTHROPIC_DEFAULT_VERSION);
        }
        if let Some((name, value)) = &target.credential {
            req = req.header(name.clone(), value.clone());
        }
        let req = req
            .body(http_body_util::Full::new(Bytes::from(bytes)))
            .map_err(|_| GatewayError::Internal)?;
        let sent = tokio::time::timeout(provider.timeouts.first_byte, target.client.send(req));
        let (resp, conn) = match sent.await {
            Err(_) | Ok(Err(client::SendError::ConnectTimeout)) => {
                return Err(GatewayError::UpstreamTimeout);
            }
            Ok(Err(e)) => {
                tracing::warn!(provider = %provider.name, error = %e, "upstream request failed");
                return Err(GatewayError::UpstreamUnreachable);
            }
            Ok(Ok(r)) => r,
        };
        let (head, body) = resp.into_parts();
        Ok(UpstreamResponse {
            status: head.status,
            content_type: head.headers.get(http::header::CONTENT_TYPE).cloned(),
            retry_after: head.headers.get(http::header::RETRY_AFTER).cloned(),
            body: Box::pin(client::DrivenBody::new(body, conn, target.client.clone())),
        })
    }
}

/// The upstream URL of `api` under `base`. OpenAI convention: the base URL ends
/// in the version (`…/v1`) and the endpoint path follows. A query in the base
/// URL (Azure's `?api-version=…`) stays at the end.
fn endpoint_url(kind: ProviderKind, base: &str, api: Api) -> String {
    let (path, query) = match base.split_once('?') {
        Some((p, q)) => (p.trim_end_matches('/'), Some(q)),
        None => (base, None),
    };
    let endpoint = match kind {
        ProviderKind::Anthropic => "/v1/messages",
        _ => api.path().trim_start_matches("/v1"),
    };
    match query {
        Some(q) => format!("{path}{endpoint}?{q}"),
        None => format!("{path}{endpoint}"),
    }
}

fn secret_header(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(value)?;
    v.set_sensitive(true);
    Ok(v)
}

/// The built-in mock provider: the same replies as `halberd mock-upstream`,
/// produced in-process and paced with the requested delay.
fn mock_in_process(
    api: Api,
    body: &Value,
    ex: &Exchange,
    client_headers: &HeaderMap,
) -> Result<UpstreamResponse, GatewayError> {
    let knobs =
        mock::Knobs::from_headers(client_headers).map_err(|m| GatewayError::InvalidRequest {
            message: m,
            param: None,
        })?;
    let reply = mock::reply(api, body, ex, &knobs);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(match reply.body {
        mock::ReplyBody::Json(v) => UpstreamResponse {
            status,
            content_type: Some(HeaderValue::from_static("application/json")),
            retry_after: None,
            body: Box::pin(futures_util::stream::iter([Ok(Bytes::from(v.to_string()))])),
        },
        mock::ReplyBody::Events(events) => UpstreamResponse {
            status,
            content_type: Some(HeaderValue::from_static("text/event-stream")),
            retry_after: None,
            body: paced(events, reply.delay),
        },
    })
}

/// Yields `events`, sleeping `delay` before each one after the first.
pub fn paced(events: Vec<Bytes>, delay: std::time::Duration) -> BodyStream {
    let stream =
        futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(e)
        });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            endpoint_url(
                ProviderKind::Openai,
                "https://api.openai.com/v1",
                Api::Responses
            ),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            endpoint_url(
                ProviderKind::Anthropic,
                "https://api.anthropic.com",
                Api::Messages
            ),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint_url(
                ProviderKind::Openai,
                "https://r.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
                Api::ChatCompletions
            ),
            "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
    }

    fn provider(key: &str) -> Provider {
        let t = std::time::Duration::from_secs(1);
        Provider {
            name: "p".into(),
            kind: ProviderKind::Openai,
            base_url: Some("https://api.example.com/v1".into()),
            api_key: Some(key.to_owned().into()),
            api_key_header: None,
            mock_headers: false,
            ca_roots: Vec::new(),
            proxy: None,
            timeouts: crate::config::Timeouts {
                connect: t,
                first_byte: t,
                idle: t,
                total: t,
            },
        }
    }

    /// Prepared once, a key that cannot travel in a header stops the start
    /// instead of failing every request, and the message never shows it.
    #[test]
    fn targets_are_prepared_at_start() {
        let up = Upstreams::new(&[provider("sk-good")]).unwrap();
        let target = up.targets[0].as_ref().unwrap();
        assert_eq!(target.paths[api_slot(Api::Responses)], "/v1/responses");
        assert_eq!(target.host, "api.example.com");
        let (name, value) = target.credential.as_ref().unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Bearer sk-good");
        assert!(value.is_sensitive());

        let err = Upstreams::new(&[provider("sk-bad\nsecret")]).err().unwrap();
        assert!(err.contains("provider p"), "{err}");
        assert!(!err.contains("sk-bad"), "{err}");
    }
}
