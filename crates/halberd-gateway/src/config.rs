//! Configuration in two steps: [`ConfigFile`] is the TOML as written (every field
//! documented in `config/halberd.example.toml`, unknown fields refused), and
//! [`ConfigFile::build`] validates it into a [`Config`] whose values are ready to
//! use, so nothing is parsed or checked again per request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::duration::parse_duration;

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub providers: Vec<ProviderFile>,
    #[serde(default)]
    pub models: Vec<ModelFile>,
    #[serde(default)]
    pub policies: Vec<PolicyFile>,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Prices per model, in USD per million tokens, for cost budgets and
    /// usage records. Keys are provider model ids or prefixes of them.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceFile>,
    #[serde(default)]
    pub metrics: MetricsFile,
}

/// `GET /metrics` on the admin listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsFile {
    /// An environment variable holding a token `/metrics` then asks for
    /// (`Authorization: Bearer …`); unset, `/metrics` is open on the admin
    /// listener, which is loopback-only unless made public.
    pub token_env: Option<String>,
}

/// A model's price, in USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    pub input: halberd_store::Usd,
    pub output: halberd_store::Usd,
    /// Prompt tokens read from the provider's cache; default: `input`.
    pub cached_input: Option<halberd_store::Usd>,
}

/// Where per-key limits are counted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Share limits across replicas through this Redis (`redis://host:6379`).
    pub redis_url: Option<String>,
    /// How many replicas share the limits; while Redis is unreachable each
    /// replica enforces its share (limit / replicas). Default 1.
    pub replicas: Option<u32>,
    /// While Redis is unreachable: `local` (default), `closed` or `open`.
    pub rate_fail_mode: Option<String>,
    /// How long the limiter waits for Redis before falling back. Default 250ms.
    pub redis_timeout: Option<String>,
    /// For keys with a token limit: the output cap reserved per request, set
    /// as the request's max_tokens when the client sets none or more. Default 4096.
    pub max_output_tokens: Option<u64>,
    /// Token and cost budgets while Redis is unreachable: `closed` (default)
    /// or `open`.
    pub budget_fail_mode: Option<String>,
}

/// A named policy; a key names the policy it runs under (`default` when it
/// names none).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub name: String,
    #[serde(default)]
    pub sensitive: SensitiveFile,
    #[serde(default)]
    pub content: ContentLimits,
    #[serde(default)]
    pub injection: InjectionFile,
    #[serde(default)]
    pub sanitize: SanitizeFile,
    #[serde(default)]
    pub tools: ToolsFile,
    #[serde(default)]
    pub links: LinksFile,
    #[serde(default)]
    pub prompt_leak: PromptLeakFile,
    /// Limits for every key under this policy; a limit set on the key itself
    /// takes precedence.
    #[serde(default)]
    pub limits: halberd_store::KeyLimits,
}

/// Which tools requests under a policy may declare, and how many calls one
/// answer may make. Names or patterns with `*`; `deny` wins over `allow`;
/// without `allow` every tool not denied may be declared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsFile {
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
    pub max_calls: Option<u32>,
    /// Rules on the calls in answers (see
    /// [`crate::pipeline::tool_rules`]).
    pub rules: Vec<crate::pipeline::tool_rules::CallRuleFile>,
}

/// Links and images in answers that could carry data to another host (see
/// [`halberd_guard::links`]). Actions `off`, `flag`, `strip`, `block`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksFile {
    /// Hosts never acted on: `docs.example.com` (exactly) or
    /// `*.example.com` (any subdomain).
    pub allow: Vec<String>,
    /// Auto-loading references (images, iframes, scripts...) carrying data.
    /// Default `strip`.
    pub images: Option<String>,
    /// Clickable links carrying data. Default `flag`.
    pub links: Option<String>,
    /// Any reference to a host not on `allow`. Default `off`.
    pub unlisted: Option<String>,
    /// The output feeds an HTML page: script tags, event handlers and
    /// `javascript:` URLs. Default `off`.
    pub html: Option<String>,
}

/// Answers that reproduce the operator's prompt (see
/// [`halberd_guard::leak`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptLeakFile {
    /// `flag` (default), `block` or `off`.
    pub action: Option<String>,
    /// The share of the prompt's word 6-grams an answer must reproduce,
    /// above 0 and at most 1. Default 0.5.
    pub share: Option<f32>,
}

/// What a policy does about answers that reproduce the operator's prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptLeakPolicy {
    /// `None`: not checked.
    pub block: Option<bool>,
    pub share: f32,
}

impl PromptLeakPolicy {
    /// Flagged, at half the prompt: an operator's prompt often carries
    /// documents the model is meant to quote (retrieval context), so copying
    /// is not refused unless the policy says so.
    pub const DEFAULT: PromptLeakPolicy = PromptLeakPolicy {
        block: Some(false),
        share: 0.5,
    };

    pub fn describe(&self) -> String {
        match self.block {
            None => "off".into(),
            Some(block) => format!("{} at {}", if block { "block" } else { "flag" }, self.share),
        }
    }
}

/// What a policy removes from the text it forwards (see
/// [`halberd_guard::sanitize`]): each class `remove` or `keep`. Defaults:
/// tag characters and bidi controls removed, other invisible characters kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitizeFile {
    pub tags: Option<String>,
    pub bidi: Option<String>,
    pub invisible: Option<String>,
}

/// Prompt-injection settings of a policy. Thresholds are scores in [0, 1] per
/// trust level: `user` (what the end user typed, and replayed model turns),
/// `untrusted` (tool results, documents, tool definitions' text is `user`),
/// `operator` (system and developer prompts). Absent values take the
/// defaults chosen for the shipped model (see docs/injection.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionFile {
    /// `block` (block at or above a block threshold, flag at or above a flag
    /// threshold), `flag` (never block) or `off`. Default `block`.
    pub action: Option<String>,
    pub user: ThresholdFile,
    pub untrusted: ThresholdFile,
    pub operator: ThresholdFile,
    /// Add a per-request canary to the system prompt; seeing it in a response
    /// means the system prompt leaked.
    pub canary: bool,
    /// What a leaked canary does to the response: `block` (default: the
    /// response ends with an error), `flag` (passes; logged) or `redact`.
    pub canary_leak: Option<String>,
    /// Wrap tool results and documents in per-request random delimiters and
    /// tell the model, in the system prompt, that text inside them is data.
    pub spotlight: bool,
}

/// Flag and block thresholds of one trust level.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdFile {
    pub flag: Option<f32>,
    pub block: Option<f32>,
    /// `true` turns blocking off for this trust level.
    pub never_block: bool,
}

/// Size and complexity limits on a request, checked after decoding; absent
/// means no limit beyond `[server] max_body_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentLimits {
    /// Prompt tokens (counted as for token limits).
    pub max_prompt_tokens: Option<u64>,
    /// Messages (chat, messages) or input items (responses).
    pub max_messages: Option<u64>,
    /// Tool definitions.
    pub max_tools: Option<u64>,
    /// Text-bearing parts the gateway inspects.
    pub max_parts: Option<u64>,
    /// Images, audio, files and other parts without readable text.
    pub max_opaque_parts: Option<u64>,
    /// Request body size in bytes.
    pub max_request_bytes: Option<u64>,
    /// Output tokens a request may ask for: a larger `max_tokens` is lowered
    /// to this, and it is set when the client sets none. For keys with token
    /// limits or budgets, the lower of this and `[limits] max_output_tokens`.
    pub max_output_tokens: Option<u64>,
}

/// Actions on sensitive data, per finding type, for each direction. Keys are
/// `default`, a type (`email`, `phone`, `credit_card`, `us_ssn`, `iban`,
/// `ip_address`, `secret`, `private_key`, `jwt`, `uninspected`) or a secret family
/// (`secret:aws_access_key_id`); values are `redact`, `mask`, `hash`,
/// `pseudonymize` (input only), `block`, `flag` or `off`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensitiveFile {
    pub input: std::collections::BTreeMap<String, String>,
    pub output: std::collections::BTreeMap<String, String>,
    /// Environment variable holding the key of the `hash` action (any string;
    /// without it, hashes are unkeyed and can be reversed for short values).
    pub hash_key_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: String,
    pub admin_listen: String,
    /// Serve the admin API on an address other than loopback. Refused unless
    /// set, and then only with an admin token of at least 32 characters.
    pub admin_allow_public: bool,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: String,
    /// A keep-alive connection with no request in flight for this long is
    /// closed.
    pub idle_timeout: String,
    /// Time for a request body: this, plus one second per
    /// `body_min_rate` bytes the body declares.
    pub body_read_timeout: String,
    pub body_min_rate: u64,
    pub max_json_depth: usize,
    pub max_connections: usize,
    pub shutdown_grace: String,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: "127.0.0.1:8787".into(),
            admin_listen: "127.0.0.1:8788".into(),
            admin_allow_public: false,
            max_body_bytes: 8 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            body_read_timeout: "10s".into(),
            body_min_rate: 65_536,
            max_json_depth: 64,
            max_connections: 4096,
            shutdown_grace: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    /// SQLite database file.
    pub path: String,
    /// A Postgres URL (`postgres://user:password@host/db`) instead of the
    /// SQLite file. `HALBERD_STORE_URL` overrides it, so a password need not
    /// sit in the file.
    pub url: Option<String>,
    /// Most usage records waiting to be written (and exchanges in flight that
    /// will write one); past it new requests wait `usage_queue_wait` for room,
    /// then get 503.
    pub usage_queue: usize,
    pub usage_queue_wait: String,
    /// Usage records older than this are deleted (at least 32 days, so the
    /// current month's budgets always have their records); "0s" keeps them
    /// for ever.
    pub usage_retention: String,
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile {
            path: "halberd.db".into(),
            url: None,
            usage_queue: 65_536,
            usage_queue_wait: "2s".into(),
            usage_retention: "400d".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFile {
    /// Where the key-hashing pepper lives; default: `halberd.pepper` beside the
    /// database. `HALBERD_PEPPER` (hex) overrides the file.
    pub pepper_file: Option<String>,
    /// Environment variable that holds the admin API token.
    pub admin_token_env: Option<String>,
    /// How long the gateway trusts a key record it has read; the bound on how
    /// long a change made elsewhere (CLI, another replica) takes to apply.
    pub key_cache_ttl: Option<String>,
    /// While the store is unreachable, cached keys are served this much longer
    /// past `key_cache_ttl`; "0s" refuses them (fail closed).
    pub key_cache_stale_if_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    /// Allow a plain-HTTP base URL (a local vLLM or Ollama, the mock upstream).
    #[serde(default)]
    pub allow_http: bool,
    /// Send the key in this header instead of `Authorization: Bearer`
    /// (Azure OpenAI: `api-key`).
    pub api_key_header: Option<String>,
    /// Pass the client's `x-mock-*` headers on (for `halberd mock-upstream`).
    #[serde(default)]
    pub mock_headers: bool,
    /// PEM file of CA certificates trusted for this provider besides the
    /// system's (a self-hosted server behind a private CA).
    pub ca_file: Option<String>,
    /// An HTTP proxy (`http://[user:password@]host:port`) reached providers
    /// through, by CONNECT tunnels; https base URLs only.
    pub proxy: Option<String>,
    pub connect_timeout: Option<String>,
    pub first_byte_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub total_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The public name clients use. A trailing `*` matches any suffix.
    pub name: String,
    pub provider: String,
    /// The provider's model id; default: the public name.
    pub upstream: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_allow_public: bool,
    pub limits: Limits,
    pub store_path: PathBuf,
    /// Postgres instead of the SQLite file; may hold a password: never print.
    pub store_url: Option<SecretString>,
    /// Capacity of the usage queue (records waiting plus slots reserved).
    pub usage_queue: usize,
    /// How long a request waits for room in a full usage queue before 503.
    pub usage_queue_wait: Duration,
    /// Usage records older than this are deleted; `None`: kept for ever.
    pub usage_retention: Option<Duration>,
    pub pepper_file: PathBuf,
    pub admin_token_env: String,
    pub metrics_token_env: Option<String>,
    pub key_cache_ttl: Duration,
    pub key_cache_stale_if_error: Duration,
    pub providers: Vec<Provider>,
    pub models: Vec<ModelRoute>,
    pub rate_limits: RateLimits,
    /// Policies by name; `default` always exists.
    pub policies: std::collections::BTreeMap<String, std::sync::Arc<GuardPolicy>>,
}

/// Shortest key the `hash` action accepts.
const MIN_HASH_KEY: usize = 16;

/// Shortest admin token accepted on an admin API that is not on loopback.
pub const PUBLIC_ADMIN_TOKEN_MIN: usize = 32;

impl Config {
    /// Whether a key may name `policy` (none: the default policy).
    pub fn known_policy(&self, policy: Option<&str>) -> Result<(), String> {
        match policy {
            Some(name) if !self.policies.contains_key(name) => Err(format!(
                "no policy named {name:?} in the configuration in force (known: {})",
                self.policies
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// An admin API reachable from other hosts holds every key of the
    /// gateway: it is refused unless `admin_allow_public` says it is meant,
    /// and then only with a token long enough not to be guessed.
    pub fn check_admin_exposure(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        if self.admin_listen.ip().is_loopback() {
            return Ok(());
        }
        if !self.admin_allow_public {
            return Err(format!(
                "server.admin_listen: {} is not a loopback address; the admin API manages every key, so set server.admin_allow_public = true if it must be reachable from other hosts (behind TLS and a firewall)",
                self.admin_listen
            ));
        }
        let token = env(&self.admin_token_env).unwrap_or_default();
        if token.trim().chars().count() < PUBLIC_ADMIN_TOKEN_MIN {
            return Err(format!(
                "server.admin_listen: the admin API on {} (not loopback) needs an admin token ({}) of at least {PUBLIC_ADMIN_TOKEN_MIN} random characters",
                self.admin_listen, self.admin_token_env
            ));
        }
        Ok(())
    }
}

/// Where per-key limits are counted, validated.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub redis_url: Option<String>,
    pub replicas: u32,
    pub fail_mode: crate::pipeline::admit::FailMode,
    pub redis_timeout: Duration,
    pub max_output_tokens: u64,
    /// Budgets while Redis is unreachable: refuse (`true`, the default) or admit.
    pub budgets_fail_closed: bool,
    pub prices: crate::pipeline::admit::budget::PriceTable,
}

/// A compiled policy: what the inspection stages do.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    pub name: String,
    pub sensitive_input: std::sync::Arc<halberd_guard::sensitive::Policy>,
    pub sensitive_output: std::sync::Arc<halberd_guard::sensitive::Policy>,
    pub content: ContentLimits,
    pub injection: InjectionPolicy,
    pub sanitize: halberd_guard::sanitize::Sanitize,
    pub tools: crate::pipeline::tool_policy::ToolRules,
    pub links: std::sync::Arc<halberd_guard::links::LinkPolicy>,
    pub prompt_leak: PromptLeakPolicy,
    pub limits: halberd_store::KeyLimits,
}

/// What a policy does about prompt injection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InjectionPolicy {
    /// `false`: the detector does not run.
    pub enabled: bool,
    pub operator: halberd_guard::injection::Thresholds,
    pub user: halberd_guard::injection::Thresholds,
    pub untrusted: halberd_guard::injection::Thresholds,
    pub canary: bool,
    pub spotlight: bool,
}

impl InjectionPolicy {
    /// DESIGN.md's default: block above a high-confidence threshold, flag below.
    pub fn builtin_default() -> InjectionPolicy {
        use halberd_guard::injection::{Trust, default_thresholds};
        InjectionPolicy {
            enabled: true,
            operator: default_thresholds(Trust::Operator),
            user: default_thresholds(Trust::User),
            untrusted: default_thresholds(Trust::Untrusted),
            canary: false,
            spotlight: false,
        }
    }

    /// `off`, or the thresholds per trust level and the transforms:
    /// `user flag>=0.73 block>=0.95, untrusted …, canary, spotlight`.
    pub fn describe(&self) -> String {
        use halberd_guard::injection::Trust;
        if !self.enabled {
            return "off".into();
        }
        let mut parts: Vec<String> = [Trust::Operator, Trust::User, Trust::Untrusted]
            .into_iter()
            .map(|trust| {
                let t = self.thresholds(trust);
                let show = |what: &str, v: Option<f32>| match v {
                    Some(v) => format!(" {what}>={v}"),
                    None => format!(" {what}=never"),
                };
                format!(
                    "{}{}{}",
                    trust.as_str(),
                    show("flag", t.flag),
                    show("block", t.block)
                )
            })
            .collect();
        if self.canary {
            parts.push("canary".into());
        }
        if self.spotlight {
            parts.push("spotlight".into());
        }
        parts.join(", ")
    }

    pub fn thresholds(
        &self,
        trust: halberd_guard::injection::Trust,
    ) -> halberd_guard::injection::Thresholds {
        use halberd_guard::injection::Trust;
        match trust {
            Trust::Operator => self.operator,
            Trust::User => self.user,
            Trust::Untrusted => self.untrusted,
        }
    }
}

impl GuardPolicy {
    /// DESIGN.md's default: secrets and structured PII redacted both ways.
    pub fn builtin_default() -> GuardPolicy {
        GuardPolicy {
            name: "default".into(),
            sensitive_input: std::sync::Arc::new(halberd_guard::sensitive::Policy::redact_all()),
            sensitive_output: std::sync::Arc::new(with_canary_leak(
                halberd_guard::sensitive::Policy::redact_all(),
                halberd_guard::sensitive::Action::Block,
            )),
            content: ContentLimits::default(),
            injection: InjectionPolicy::builtin_default(),
            sanitize: halberd_guard::sanitize::Sanitize::DEFAULT,
            tools: crate::pipeline::tool_policy::ToolRules::default(),
            links: std::sync::Arc::new(halberd_guard::links::LinkPolicy::default()),
            prompt_leak: PromptLeakPolicy::DEFAULT,
            limits: halberd_store::KeyLimits::default(),
        }
    }
}

/// Edge limits, all enforced before a request reaches the pipeline.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub body_min_rate: u64,
    pub max_json_depth: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Absent only for the in-process mock.
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub api_key_header: Option<http::HeaderName>,
    pub mock_headers: bool,
    /// Trust roots from `ca_file`, besides the system's.
    pub ca_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The proxy providers are reached through, parsed once here.
    pub proxy: Option<crate::upstream::client::Proxy>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub name: String,
    pub provider: usize,
    pub upstream: Option<String>,
}

impl ModelRoute {
    pub fn is_pattern(&self) -> bool {
        self.name.ends_with('*')
    }

    pub fn matches(&self, model: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix) && model.len() > prefix.len(),
            None => self.name == model,
        }
    }
}

/// A configuration error: where, and what is wrong.
/// What is wrong with a configuration: the first error found, and every
/// other one in `more`, so that one `config check` lists them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: String,
    pub message: String,
    /// Further errors in the same file, in the order found.
    pub more: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)?;
        for e in &self.more {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn err(at: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        at: at.into(),
        message: message.into(),
        more: Vec::new(),
    }
}

/// Collects the errors of independent parts of a configuration, so that
/// one bad field does not hide the next.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn keep<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn push(&mut self, mut e: ConfigError) {
        let more = std::mem::take(&mut e.more);
        self.0.push(e);
        self.0.extend(more);
    }

    fn into_result(self) -> Result<(), ConfigError> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = all.collect();
                Err(first)
            }
        }
    }
}

impl ConfigFile {
    /// Reads and parses a TOML file (no validation yet).
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        ConfigFile::parse(&text).map_err(|e| ConfigError {
            at: format!("{}: {}", path.display(), e.at),
            message: e.message,
            more: Vec::new(),
        })
    }

    pub fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or_else(|| "config".into());
            err(at, e.message().to_string())
        })
    }

    /// Validates everything and resolves secrets from the environment or files.
    /// Relative paths are taken from `base_dir`.
    pub fn build(
        &self,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let s = &self.server;
        let mut errors = Errors::default();
        let dur =
            |field: &str, v: &str| parse_duration(v).map_err(|m| err(format!("server.{field}"), m));
        let addr = |field: &str, v: &str| {
            v.parse::<SocketAddr>().map_err(|_| {
                err(
                    format!("server.{field}"),
                    format!("{v:?} is not an address such as 127.0.0.1:8787"),
                )
            })
        };
        // Each field on its own, so that every bad one is reported; a bad
        // field's place is taken by its default meanwhile.
        let d = ServerFile::default();
        let mut size = |field: &str, v: usize, min: usize, default: usize| {
            errors
                .keep(at_least(&format!("server.{field}"), v, min))
                .unwrap_or(default)
        };
        let max_body_bytes = size("max_body_bytes", s.max_body_bytes, 1024, d.max_body_bytes);
        let max_header_bytes = size(
            "max_header_bytes",
            s.max_header_bytes,
            8192,
            d.max_header_bytes,
        );
        let max_headers = size("max_headers", s.max_headers, 8, d.max_headers);
        let max_json_depth = size("max_json_depth", s.max_json_depth, 4, d.max_json_depth);
        let max_connections = size("max_connections", s.max_connections, 1, d.max_connections);
        let body_min_rate = match s.body_min_rate {
            0 => {
                errors.push(err("server.body_min_rate", "must be at least 1"));
                d.body_min_rate
            }
            n => n,
        };
        let mut timeout = |field: &str, v: &str, default: &str, nonzero: bool| {
            let parsed = dur(field, v).and_then(|t| {
                if nonzero && t.is_zero() {
                    Err(err(format!("server.{field}"), "must be greater than zero"))
                } else {
                    Ok(t)
                }
            });
            errors
                .keep(parsed)
                .unwrap_or_else(|| parse_duration(default).unwrap_or(Duration::from_secs(10)))
        };
        let limits = Limits {
            max_body_bytes,
            max_header_bytes,
            max_headers,
            header_read_timeout: timeout(
                "header_read_timeout",
                &s.header_read_timeout,
                &d.header_read_timeout,
                true,
            ),
            idle_timeout: timeout("idle_timeout", &s.idle_timeout, &d.idle_timeout, true),
            body_read_timeout: timeout(
                "body_read_timeout",
                &s.body_read_timeout,
                &d.body_read_timeout,
                false,
            ),
            body_min_rate,
            max_json_depth,
            max_connections,
            shutdown_grace: timeout(
                "shutdown_grace",
                &s.shutdown_grace,
                &d.shutdown_grace,
                false,
            ),
        };
        if limits.max_json_depth > halberd_protocol::json::MAX_DEPTH {
            errors.push(err(
                "server.max_json_depth",
                format!("must be at most {}", halberd_protocol::json::MAX_DEPTH),
            ));
        }
        let store_path = base_dir.join(&self.store.path);
        let pepper_file = match &self.auth.pepper_file {
            Some(p) => base_dir.join(p),
            None => store_path
                .parent()
                .map(|d| d.join("halberd.pepper"))
                .unwrap_or_else(|| PathBuf::from("halberd.pepper")),
        };

        let provider_files: Vec<ProviderFile> = if self.providers.is_empty() {
            vec![ProviderFile {
                name: "mock".into(),
                kind: ProviderKind::Mock,
                base_url: None,
                api_key_env: None,
                api_key_file: None,
                api_key_header: None,
                allow_http: false,
                mock_headers: true,
                ca_file: None,
                proxy: None,
                connect_timeout: None,
                first_byte_timeout: None,
                idle_timeout: None,
                total_timeout: None,
            }]
        } else {
            self.providers.clone()
        };
        let providers: Vec<Option<Provider>> = provider_files
            .iter()
            .enumerate()
            .map(|(i, p)| errors.keep(build_provider(i, p, base_dir, env)))
            .collect();
        if let Some((i, p)) = provider_files
            .iter()
            .enumerate()
            .find(|(i, p)| provider_files[..*i].iter().any(|q| q.name == p.name))
        {
            errors.push(err(
                format!("providers[{i}].name"),
                format!("duplicate provider name {:?}", p.name),
            ));
        }

        let model_files: Vec<ModelFile> = if self.models.is_empty() && self.providers.is_empty() {
            vec![
                ModelFile {
                    name: "mock-1".into(),
                    provider: "mock".into(),
                    upstream: None,
                },
                ModelFile {
                    name: "mock-*".into(),
                    provider: "mock".into(),
                    upstream: None,
                },
            ]
        } else {
            self.models.clone()
        };
        if model_files.is_empty() {
            errors.push(err(
                "models",
                "no models configured: add at least one [[models]] entry",
            ));
        }
        let mut models = Vec::with_capacity(model_files.len());
        for (i, m) in model_files.iter().enumerate() {
            let at = format!("models[{i}]");
            if m.name.is_empty() || m.name == "*" || m.name[..m.name.len() - 1].contains('*') {
                errors.push(err(
                    format!("{at}.name"),
                    "must be a model name, optionally ending in a single '*'",
                ));
            }
            // Providers by their place in the file, so that a provider with
            // an error of its own is not also reported missing here.
            let provider = provider_files.iter().position(|p| p.name == m.provider);
            if provider.is_none() {
                errors.push(err(
                    format!("{at}.provider"),
                    format!("no provider named {:?}", m.provider),
                ));
            }
            if m.upstream.as_deref().is_some_and(str::is_empty) {
                errors.push(err(format!("{at}.upstream"), "must not be empty"));
            }
            if model_files[..i].iter().any(|r| r.name == m.name) {
                errors.push(err(
                    format!("{at}.name"),
                    format!("duplicate model {:?}", m.name),
                ));
            }
            models.push(ModelRoute {
                name: m.name.clone(),
                provider: provider.unwrap_or_default(),
                upstream: m.upstream.clone(),
            });
        }

        let policies = errors.keep(build_policies(&self.policies, env));
        // The Redis URL may carry a password: `HALBERD_REDIS_URL` keeps it
        // out of the file, as `HALBERD_STORE_URL` does for Postgres.
        let mut limits_file = self.limits.clone();
        if let Some(url) = env("HALBERD_REDIS_URL").filter(|u| !u.trim().is_empty()) {
            limits_file.redis_url = Some(url);
        }
        let rate_limits = errors.keep(build_rate_limits(&limits_file, &self.prices));
        let store_url = match env("HALBERD_STORE_URL").filter(|u| !u.trim().is_empty()) {
            Some(url) => Some(url),
            None => self.store.url.clone(),
        };
        if let Some(url) = &store_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            errors.push(err(
                "store.url",
                "must be a postgres:// URL (leave it out for the SQLite file)",
            ));
        }
        let listen = errors.keep(addr("listen", &s.listen));
        let admin_listen = errors.keep(addr("admin_listen", &s.admin_listen));
        let usage_queue = match self.store.usage_queue {
            0 => {
                errors.push(err("store.usage_queue", "must be at least 1"));
                None
            }
            n => Some(n),
        };
        let usage_queue_wait = errors.keep(
            parse_duration(&self.store.usage_queue_wait)
                .map_err(|m| err("store.usage_queue_wait", m)),
        );
        let usage_retention = errors.keep(
            parse_duration(&self.store.usage_retention)
                .map_err(|m| err("store.usage_retention", m))
                .and_then(|d| match d {
                    d if d.is_zero() => Ok(None),
                    d if d < Duration::from_secs(32 * 86_400) => Err(err(
                        "store.usage_retention",
                        "must be at least 32d (budgets read the current month's records), or 0s to keep every record",
                    )),
                    d => Ok(Some(d)),
                }),
        );
        let key_cache_ttl = errors.keep(
            parse_duration(self.auth.key_cache_ttl.as_deref().unwrap_or("2s"))
                .map_err(|m| err("auth.key_cache_ttl", m)),
        );
        let key_cache_stale_if_error = errors.keep(
            parse_duration(
                self.auth
                    .key_cache_stale_if_error
                    .as_deref()
                    .unwrap_or("60s"),
            )
            .map_err(|m| err("auth.key_cache_stale_if_error", m)),
        );
        let providers: Option<Vec<Provider>> = providers.into_iter().collect();
        let (
            Some(listen),
            Some(admin_listen),
            Some(usage_queue),
            Some(usage_queue_wait),
            Some(usage_retention),
            Some(key_cache_ttl),
            Some(key_cache_stale_if_error),
            Some(providers),
            Some(rate_limits),
            Some(policies),
        ) = (
            listen,
            admin_listen,
            usage_queue,
            usage_queue_wait,
            usage_retention,
            key_cache_ttl,
            key_cache_stale_if_error,
            providers,
            rate_limits,
            policies,
        )
        else {
            // Every `None` above recorded its error.
            errors.into_result()?;
            return Err(err("config", "invalid configuration"));
        };
        errors.into_result()?;
        let config = Config {
            listen,
            admin_listen,
            admin_allow_public: s.admin_allow_public,
            limits,
            store_path,
            store_url: store_url.map(SecretString::from),
            usage_queue,
            usage_queue_wait,
            usage_retention,
            pepper_file,
            admin_token_env: self
                .auth
                .admin_token_env
                .clone()
                .unwrap_or_else(|| "HALBERD_ADMIN_TOKEN".into()),
            metrics_token_env: self.metrics.token_env.clone(),
            key_cache_ttl,
            key_cache_stale_if_error,
            providers,
            models,
            rate_limits,
            policies,
        };
        config.check_admin_exposure(env).map_err(|m| {
            err(
                "server.admin_listen",
                m.trim_start_matches("server.admin_listen: "),
            )
        })?;
        Ok(config)
    }
}

fn build_rate_limits(
    file: &LimitsFile,
    prices: &BTreeMap<String, PriceFile>,
) -> Result<RateLimits, ConfigError> {
    use crate::pipeline::admit::FailMode;
    if let Some(url) = &file.redis_url
        && !(url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        return Err(err(
            "limits.redis_url",
            "must be a redis:// or rediss:// URL",
        ));
    }
    let replicas = file.replicas.unwrap_or(1);
    if replicas == 0 {
        return Err(err("limits.replicas", "must be at least 1"));
    }
    let fail_mode = match file.rate_fail_mode.as_deref().unwrap_or("local") {
        "local" => FailMode::Local,
        "closed" => FailMode::Closed,
        "open" => FailMode::Open,
        other => {
            return Err(err(
                "limits.rate_fail_mode",
                format!("{other:?} is not local, closed or open"),
            ));
        }
    };
    let redis_timeout = parse_duration(file.redis_timeout.as_deref().unwrap_or("250ms"))
        .map_err(|m| err("limits.redis_timeout", m))?;
    if redis_timeout.is_zero() {
        return Err(err("limits.redis_timeout", "must be greater than zero"));
    }
    let max_output_tokens = file.max_output_tokens.unwrap_or(4096);
    if max_output_tokens == 0 {
        return Err(err("limits.max_output_tokens", "must be at least 1"));
    }
    let budgets_fail_closed = match file.budget_fail_mode.as_deref().unwrap_or("closed") {
        "closed" => true,
        "open" => false,
        other => {
            return Err(err(
                "limits.budget_fail_mode",
                format!("{other:?} is not closed or open"),
            ));
        }
    };
    let mut table = crate::pipeline::admit::budget::PriceTable::builtin();
    for (model, p) in prices {
        if model.is_empty() {
            return Err(err("prices", "a model name must not be empty"));
        }
        table.set(
            model,
            crate::pipeline::admit::budget::Price {
                input: p.input,
                output: p.output,
                cached_input: p.cached_input.unwrap_or(p.input),
            },
        );
    }
    Ok(RateLimits {
        redis_url: file.redis_url.clone(),
        replicas,
        fail_mode,
        redis_timeout,
        max_output_tokens,
        budgets_fail_closed,
        prices: table,
    })
}

fn build_policies(
    files: &[PolicyFile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::collections::BTreeMap<String, std::sync::Arc<GuardPolicy>>, ConfigError> {
    let mut errors = Errors::default();
    let mut policies = std::collections::BTreeMap::new();
    for (i, p) in files.iter().enumerate() {
        let at = format!("policies[{i}]");
        if p.name.is_empty() || files[..i].iter().any(|q| q.name == p.name) {
            errors.push(err(
                format!("{at}.name"),
                "must be a unique, non-empty name",
            ));
            continue;
        }
        if let Some(policy) = errors.keep(build_policy(&at, p, env)) {
            policies.insert(p.name.clone(), std::sync::Arc::new(policy));
        }
    }
    errors.into_result()?;
    policies
        .entry("default".to_owned())
        .or_insert_with(|| std::sync::Arc::new(GuardPolicy::builtin_default()));
    Ok(policies)
}

/// One `[[policies]]` entry, at `at`.
fn build_policy(
    at: &str,
    p: &PolicyFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GuardPolicy, ConfigError> {
    use halberd_guard::sensitive::{Action, Policy};
    let hash_key = match &p.sensitive.hash_key_env {
        Some(var) => env(var).ok_or_else(|| {
            err(
                format!("{at}.sensitive.hash_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        None => String::new(),
    };
    // A hash under an empty or short key is a lookup table away from the
    // value (every card number, SSN or phone number can be tried): refuse
    // it rather than pseudo-protect.
    let hashes = p
        .sensitive
        .input
        .values()
        .chain(p.sensitive.output.values())
        .any(|a| a == "hash");
    if hashes && hash_key.len() < MIN_HASH_KEY {
        return Err(err(
            format!("{at}.sensitive.hash_key_env"),
            format!(
                "the hash action needs a secret key of at least {MIN_HASH_KEY} characters from the environment variable this names (an unkeyed hash of a card or phone number can be reversed by trying every number)"
            ),
        ));
    }
    let compile = |direction: &str, map: &std::collections::BTreeMap<String, String>| {
        let default = map.get("default").map(String::as_str).unwrap_or("redact");
        let default_action = Action::parse(default).ok_or_else(|| {
            err(
                format!("{at}.sensitive.{direction}.default"),
                format!("unknown action {default:?}"),
            )
        })?;
        if direction == "output" && default_action == Action::Pseudonymize {
            return Err(err(
                format!("{at}.sensitive.output.default"),
                "pseudonymize applies to input only",
            ));
        }
        let mut policy = Policy::uniform(default_action).with_hash_key(hash_key.as_bytes());
        for (kind, action) in map.iter().filter(|(k, _)| k.as_str() != "default") {
            let field = format!("{at}.sensitive.{direction}.{kind}");
            if direction == "output" && action == "pseudonymize" {
                return Err(err(field, "pseudonymize applies to input only"));
            }
            policy
                .set(kind, action)
                .map_err(|e| err(field, e.to_string()))?;
        }
        Ok::<Policy, ConfigError>(policy)
    };
    let injection = build_injection(&format!("{at}.injection"), &p.injection)?;
    let policy = GuardPolicy {
        name: p.name.clone(),
        sensitive_input: std::sync::Arc::new(compile("input", &p.sensitive.input)?),
        sensitive_output: std::sync::Arc::new({
            let output = compile("output", &p.sensitive.output)?;
            // Only a policy that plants canaries can see one leak. Acting on
            // the family otherwise would make every stream go through the
            // redactor, which holds each word back until the next character
            // arrives, even with every sensitive-data action off.
            let plants_canaries = injection.enabled && injection.canary;
            if p.sensitive.output.contains_key(CANARY_FAMILY) {
                output
            } else {
                let leak = p.injection.canary_leak.as_deref().unwrap_or("block");
                let action = match Action::parse(leak) {
                    Some(a @ (Action::Block | Action::Flag | Action::Redact)) => a,
                    _ => {
                        return Err(err(
                            format!("{at}.injection.canary_leak"),
                            format!("unknown action {leak:?} (block, flag or redact)"),
                        ));
                    }
                };
                if plants_canaries {
                    with_canary_leak(output, action)
                } else {
                    output
                }
            }
        }),
        content: if p.content.max_output_tokens == Some(0) {
            return Err(err(
                format!("{at}.content.max_output_tokens"),
                "must be at least 1",
            ));
        } else {
            p.content
        },
        limits: p.limits,
        injection,
        sanitize: build_sanitize(at, &p.sanitize)?,
        tools: build_tools(at, &p.tools)?,
        links: std::sync::Arc::new(build_links(at, &p.links)?),
        prompt_leak: build_prompt_leak(at, &p.prompt_leak)?,
    };
    Ok(policy)
}

fn build_prompt_leak(at: &str, file: &PromptLeakFile) -> Result<PromptLeakPolicy, ConfigError> {
    let default = PromptLeakPolicy::DEFAULT;
    let block = match file.action.as_deref() {
        None => default.block,
        Some("flag") => Some(false),
        Some("block") => Some(true),
        Some("off") => None,
        Some(other) => {
            return Err(err(
                format!("{at}.prompt_leak.action"),
                format!("unknown action {other:?} (flag, block or off)"),
            ));
        }
    };
    let share = file.share.unwrap_or(default.share);
    if !(share > 0.0 && share <= 1.0) {
        return Err(err(
            format!("{at}.prompt_leak.share"),
            "must be above 0 and at most 1",
        ));
    }
    Ok(PromptLeakPolicy { block, share })
}

fn build_links(
    at: &str,
    file: &LinksFile,
) -> Result<halberd_guard::links::LinkPolicy, ConfigError> {
    use halberd_guard::links::{Action, LinkPolicy};
    let default = LinkPolicy::default();
    let action = |name: &str, value: &Option<String>, default: Action| match value.as_deref() {
        None => Ok(default),
        Some(v) => Action::parse(v).ok_or_else(|| {
            err(
                format!("{at}.links.{name}"),
                format!("unknown action {v:?} (off, flag, strip or block)"),
            )
        }),
    };
    LinkPolicy::new(
        &file.allow,
        action("images", &file.images, default.images)?,
        action("links", &file.links, default.links)?,
        action("unlisted", &file.unlisted, default.unlisted)?,
    )
    .map_err(|e| err(format!("{at}.links.allow"), e))
    .and_then(|p| Ok(p.with_html(action("html", &file.html, default.html)?)))
}

fn build_tools(
    at: &str,
    file: &ToolsFile,
) -> Result<crate::pipeline::tool_policy::ToolRules, ConfigError> {
    let patterns = file.allow.iter().flatten().chain(&file.deny);
    for p in patterns {
        if p.is_empty() || p.len() > 128 || p.chars().any(char::is_control) {
            return Err(err(
                format!("{at}.tools"),
                format!(
                    "{p:?} is not a tool name or pattern (1 to 128 printable characters, `*` for any run)"
                ),
            ));
        }
    }
    if file.max_calls == Some(0) {
        return Err(err(
            format!("{at}.tools.max_calls"),
            "must be at least 1 (to allow no tools, set allow = [])",
        ));
    }
    let calls = file
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            crate::pipeline::tool_rules::CallRule::build(rule)
                .map_err(|e| err(format!("{at}.tools.rules[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::pipeline::tool_policy::ToolRules {
        allow: file.allow.clone(),
        deny: file.deny.clone(),
        max_calls: file.max_calls,
        calls: calls.into(),
    })
}

fn build_sanitize(
    at: &str,
    file: &SanitizeFile,
) -> Result<halberd_guard::sanitize::Sanitize, ConfigError> {
    let default = halberd_guard::sanitize::Sanitize::DEFAULT;
    let class = |name: &str, value: &Option<String>, default: bool| match value.as_deref() {
        None => Ok(default),
        Some("remove") => Ok(true),
        Some("keep") => Ok(false),
        Some(other) => Err(err(
            format!("{at}.sanitize.{name}"),
            format!("unknown value {other:?} (remove or keep)"),
        )),
    };
    Ok(halberd_guard::sanitize::Sanitize {
        tags: class("tags", &file.tags, default.tags)?,
        bidi: class("bidi", &file.bidi, default.bidi)?,
        invisible: class("invisible", &file.invisible, default.invisible)?,
    })
}

/// The sensitive-output name of the canary family.
const CANARY_FAMILY: &str = "secret:halberd_canary";

/// A leaked canary is a leaked system prompt: the output policy acts on the
/// canary family as the injection policy says, unless the sensitive output map
/// names the family itself.
fn with_canary_leak(
    mut policy: halberd_guard::sensitive::Policy,
    action: halberd_guard::sensitive::Action,
) -> halberd_guard::sensitive::Policy {
    // The family exists in the rule table (a test checks it), so this cannot fail.
    let _ = policy.set(CANARY_FAMILY, action.name());
    policy
}

fn build_injection(at: &str, file: &InjectionFile) -> Result<InjectionPolicy, ConfigError> {
    use halberd_guard::injection::Thresholds;
    let mut policy = InjectionPolicy::builtin_default();
    policy.canary = file.canary;
    policy.spotlight = file.spotlight;
    let never_block = match file.action.as_deref().unwrap_or("block") {
        "block" => false,
        "flag" => true,
        "off" => {
            policy.enabled = false;
            false
        }
        other => {
            return Err(err(
                format!("{at}.action"),
                format!("unknown action {other:?} (block, flag or off)"),
            ));
        }
    };
    for (name, given, slot) in [
        ("operator", file.operator, &mut policy.operator),
        ("user", file.user, &mut policy.user),
        ("untrusted", file.untrusted, &mut policy.untrusted),
    ] {
        for (what, value) in [("flag", given.flag), ("block", given.block)] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(err(
                    format!("{at}.{name}.{what}"),
                    "must be a score between 0 and 1",
                ));
            }
        }
        let mut t = Thresholds {
            flag: given.flag.or(slot.flag),
            block: given.block.or(slot.block),
        };
        if let (Some(f), Some(b)) = (t.flag, t.block)
            && f > b
        {
            return Err(err(
                format!("{at}.{name}"),
                "the flag threshold must not be above the block threshold",
            ));
        }
        if never_block || given.never_block {
            // Flag what would have been blocked, so nothing goes unreported.
            t.flag = match (t.flag, t.block) {
                (Some(f), Some(b)) => Some(f.min(b)),
                (f, b) => f.or(b),
            };
            t.block = None;
        }
        *slot = t;
    }
    Ok(policy)
}

fn build_provider(
    i: usize,
    p: &ProviderFile,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let at = format!("providers[{i}]");
    if p.name.is_empty()
        || !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            format!("{at}.name"),
            "must be letters, digits, '-' or '_'",
        ));
    }
    let base_url = match (&p.base_url, p.kind) {
        (None, ProviderKind::Openai) => Some("https://api.openai.com/v1".to_owned()),
        (None, ProviderKind::Anthropic) => Some("https://api.anthropic.com".to_owned()),
        (None, ProviderKind::Mock) => None,
        (Some(u), _) => {
            let u = u.trim_end_matches('/').to_owned();
            // Whether it is a URL first, then its scheme: a typo under
            // `allow_http` is not told to use https.
            let parsed = url::Url::parse(&u).ok().filter(|url| url.host().is_some());
            let Some(parsed) = parsed else {
                return Err(err(
                    format!("{at}.base_url"),
                    format!("{u:?} is not a valid URL (expected https://host[:port][/path])"),
                ));
            };
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(err(
                    format!("{at}.base_url"),
                    "must not carry credentials (user:password@); the provider's key goes in api_key_env or api_key_file",
                ));
            }
            match (parsed.scheme(), p.allow_http) {
                ("https", _) | ("http", true) => {}
                ("http", false) => {
                    return Err(err(
                        format!("{at}.base_url"),
                        "must be an https:// URL (set allow_http = true for a local plain-HTTP upstream)",
                    ));
                }
                (other, _) => {
                    return Err(err(
                        format!("{at}.base_url"),
                        format!(
                            "has scheme {other:?}: must be https:// (or http:// with allow_http = true)"
                        ),
                    ));
                }
            }
            Some(u)
        }
    };
    let api_key = match (&p.api_key_env, &p.api_key_file) {
        (Some(_), Some(_)) => return Err(err(at, "set api_key_env or api_key_file, not both")),
        (Some(var), None) => Some(env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            err(
                format!("{at}.api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    format!("{at}.api_key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Some(text.trim().to_owned())
        }
        (None, None) => None,
    };
    if api_key.is_none()
        && matches!(p.kind, ProviderKind::Openai | ProviderKind::Anthropic)
        && base_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://api."))
    {
        return Err(err(
            at,
            "a hosted provider needs api_key_env or api_key_file",
        ));
    }
    let api_key_header = p
        .api_key_header
        .as_deref()
        .map(|h| {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                err(
                    format!("{at}.api_key_header"),
                    format!("{h:?} is not a header name"),
                )
            })
        })
        .transpose()?;
    if p.kind == ProviderKind::Anthropic && api_key_header.is_some() {
        return Err(err(
            format!("{at}.api_key_header"),
            "applies to openai providers only",
        ));
    }
    let ca_roots = match &p.ca_file {
        None => Vec::new(),
        Some(file) => {
            use rustls::pki_types::pem::PemObject;
            let path = base_dir.join(file);
            let bad = |m: String| err(format!("{at}.ca_file"), m);
            let text = std::fs::read(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let roots = rustls::pki_types::CertificateDer::pem_slice_iter(&text)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{} is not valid PEM: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(bad(format!("{} holds no certificate", path.display())));
            }
            if base_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
            {
                return Err(bad("applies to an https:// base_url only".into()));
            }
            roots
        }
    };
    let proxy = p
        .proxy
        .as_deref()
        .map(crate::upstream::client::Proxy::parse)
        .transpose()
        .map_err(|m| err(format!("{at}.proxy"), m))?;
    if proxy.is_some()
        && base_url
            .as_deref()
            .is_some_and(|u| !u.starts_with("https://"))
    {
        return Err(err(
            format!("{at}.proxy"),
            "applies to an https:// base_url only",
        ));
    }
    let dur = |field: &str, v: &Option<String>, default: u64| match v {
        Some(s) => parse_duration(s).map_err(|m| err(format!("{at}.{field}"), m)),
        None => Ok(Duration::from_secs(default)),
    };
    Ok(Provider {
        name: p.name.clone(),
        kind: p.kind,
        base_url,
        api_key: api_key.map(SecretString::from),
        api_key_header,
        mock_headers: p.mock_headers || p.kind == ProviderKind::Mock,
        ca_roots,
        proxy,
        timeouts: Timeouts {
            connect: dur("connect_timeout", &p.connect_timeout, 10)?,
            first_byte: dur("first_byte_timeout", &p.first_byte_timeout, 120)?,
            idle: dur("idle_timeout", &p.idle_timeout, 120)?,
            total: dur("total_timeout", &p.total_timeout, 900)?,
        },
    })
}

fn at_least(field: &str, v: usize, min: usize) -> Result<usize, ConfigError> {
    if v < min {
        return Err(err(field, format!("must be at least {min}")));
    }
    Ok(v)
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    format!("line {line} column {col}")
}

impl Config {
    /// A summary of the effective configuration (no secrets), for `config
    /// check`: one JSON object, policies spelled out per type and trust.
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let lower = |debug: String| debug.to_ascii_lowercase();
        let policies: serde_json::Map<String, serde_json::Value> = self
            .policies
            .iter()
            .map(|(name, policy)| {
                let render = |p: &halberd_guard::sensitive::Policy| {
                    p.describe()
                        .iter()
                        .map(|(kind, action)| (kind.to_string(), json!(action.to_string())))
                        .collect::<serde_json::Map<_, _>>()
                };
                (
                    name.clone(),
                    json!({
                        "sensitive_input": render(&policy.sensitive_input),
                        "sensitive_output": render(&policy.sensitive_output),
                        "injection": policy.injection.describe(),
                        "sanitize": policy.sanitize.describe(),
                        "tools": policy.tools.describe(),
                        "links": policy.links.describe(),
                        "prompt_leak": policy.prompt_leak.describe(),
                        "limits": policy.limits,
                    }),
                )
            })
            .collect();
        json!({
            "listen": self.listen.to_string(),
            "admin_listen": self.admin_listen.to_string(),
            "store": match &self.store_url {
                Some(_) => "postgres (url set; not shown)".to_owned(),
                None => format!("sqlite {}", self.store_path.display()),
            },
            "pepper_file": self.pepper_file.display().to_string(),
            "limits": {
                "counters": self.rate_limits.redis_url.as_ref().map_or("in-process", |_| "redis (url set; not shown)"),
                "rate_fail_mode": lower(format!("{:?}", self.rate_limits.fail_mode)),
                "budget_fail_mode": if self.rate_limits.budgets_fail_closed { "closed" } else { "open" },
                "priced_models": self.rate_limits.prices.len(),
            },
            "providers": self.providers.iter().map(|p| json!({
                "name": p.name,
                "kind": lower(format!("{:?}", p.kind)),
                // A URL with credentials is refused when the config is built.
                "base_url": p.base_url,
            })).collect::<Vec<_>>(),
            "models": self.models.iter().map(|r| (r.name.clone(), json!(self.providers[r.provider].name))).collect::<serde_json::Map<_, _>>(),
            "policies": policies,
        })
    }
}

#[cfg(test)]
mod tests;
