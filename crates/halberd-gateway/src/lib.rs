//! The Halberd gateway: HTTP server, pipeline stages, upstream clients and
//! streaming. Start at [`pipeline`] for the life of a request, at [`http`] for
//! the routes, at [`config`] for what operators can set.

pub mod admin;
pub mod config;
pub mod duration;
pub mod error;
pub mod events;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod mock;
pub mod mock_server;
pub mod pipeline;
pub mod relay;
pub mod server;
pub mod stages;
pub mod upstream;
pub mod usage;
pub mod wire;

#[cfg(test)]
pub(crate) mod test_logs;

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use halberd_store::{Keyring, Pepper, Store};

use crate::config::Config;
use crate::upstream::Upstreams;

/// Everything a request handler needs, built once at start-up.
pub struct AppState {
    pub config: Config,
    pub keyring: Keyring,
    pub upstreams: Upstreams,
    pub admin_token: Option<SecretString>,
    /// The token `GET /metrics` asks for, when `[metrics] token_env` names one.
    pub metrics_token: Option<SecretString>,
    /// Per-key rate and concurrency counters of this process.
    pub limiter: Arc<pipeline::admit::Limiter>,
    /// Where usage records go to be written in batches.
    pub ledger: ledger::Ledger,
}

/// Opens the configured store and the pepper (`HALBERD_PEPPER` if set, else the
/// pepper file, created on first use). `cache` says whether authentication may
/// use the key cache (the server does; one-shot CLI commands need not).
pub async fn open_keyring(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    cache: bool,
) -> Result<Keyring, String> {
    let pepper = match env("HALBERD_PEPPER") {
        Some(hex) => Pepper::from_hex(&hex).map_err(|e| format!("HALBERD_PEPPER: {e}"))?,
        None => Pepper::load_or_create(&config.pepper_file).map_err(|e| e.to_string())?,
    };
    let path = config
        .store_path
        .to_str()
        .ok_or("store path is not valid UTF-8")?;
    if let Some(dir) = config
        .store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let store = match &config.store_url {
        // The URL may hold a password: errors name the backend, not the URL.
        Some(url) => Store::open_postgres(url.expose_secret())
            .await
            .map_err(|e| {
                format!(
                    "cannot open the Postgres store ([store] url / HALBERD_STORE_URL): {e} ({:?})",
                    std::error::Error::source(&e).map(ToString::to_string)
                )
            })?,
        None => Store::open_sqlite(path).await.map_err(|e| {
            format!(
                "cannot open store {path}: {e} ({:?})",
                std::error::Error::source(&e).map(ToString::to_string)
            )
        })?,
    };
    let ttl = if cache {
        config.key_cache_ttl
    } else {
        std::time::Duration::ZERO
    };
    let keyring = Keyring::with_cache(store, pepper, ttl)
        .with_stale_if_error(config.key_cache_stale_if_error);
    keyring.check_pepper().await.map_err(|e| e.to_string())?;
    Ok(keyring)
}

/// Usage of a key or a user in the current UTC day and month, from the usage
/// records: what budgets are measured against.
pub async fn usage_report(
    store: &Store,
    scope: halberd_store::UsageScope<'_>,
    unix: i64,
) -> Result<serde_json::Value, halberd_store::StoreError> {
    use pipeline::admit::budget::Period;
    let mut report = serde_json::Map::new();
    for period in [Period::Day, Period::Month] {
        let (start, end, _) = period.window(unix);
        let t = store.usage_totals(scope, start).await?;
        report.insert(
            period.as_str().into(),
            serde_json::json!({
                "since": start,
                "until": end,
                "requests": t.requests,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "tokens": t.tokens(),
                "cost_usd": t.cost.to_string(),
                "estimated_records": t.estimated,
            }),
        );
    }
    Ok(serde_json::Value::Object(report))
}

pub async fn build_state(
    config: Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<AppState>, String> {
    // Again here: `--admin-listen` may have changed the address.
    config.check_admin_exposure(env)?;
    if !config.admin_listen.ip().is_loopback() {
        tracing::warn!(admin_listen = %config.admin_listen, "the admin API listens on a non-loopback address over plain HTTP; put it behind TLS and a firewall");
    }
    let keyring = open_keyring(&config, env, true).await?;
    let rl = &config.rate_limits;
    let redis = match &rl.redis_url {
        // A concurrency lease lives a minute and is renewed while its
        // exchange runs (see `admit/redis.rs`).
        Some(url) => Some(pipeline::admit::redis::RedisLimiter::new(
            url,
            std::time::Duration::from_secs(60),
            rl.redis_timeout,
        )?),
        None => None,
    };
    let limiter = pipeline::admit::Limiter::new(
        redis,
        rl.replicas,
        rl.fail_mode,
        rl.budgets_fail_closed,
        Some(keyring.store().clone()),
    );
    // Compile the detectors now, not on the first request.
    let _ = halberd_guard::sensitive::Detector::shared();
    let upstreams = Upstreams::new(&config.providers)?;
    let ledger = ledger::Ledger::start(
        keyring.store().clone(),
        config.usage_queue,
        config.usage_queue_wait,
    );
    let admin_token = env(&config.admin_token_env)
        .filter(|t| !t.trim().is_empty())
        .map(SecretString::from);
    let metrics_token = match &config.metrics_token_env {
        Some(var) => Some(
            env(var)
                .filter(|t| !t.trim().is_empty())
                .map(SecretString::from)
                .ok_or_else(|| {
                    format!("[metrics] token_env: environment variable {var} is not set")
                })?,
        ),
        None => None,
    };
    Ok(Arc::new(AppState {
        config,
        keyring,
        upstreams,
        admin_token,
        metrics_token,
        limiter: Arc::new(limiter),
        ledger,
    }))
}

/// A gateway with its listeners bound, ready to run.
pub struct Gateway {
    state: Arc<AppState>,
    listener: TcpListener,
    admin_listener: TcpListener,
}

impl Gateway {
    pub async fn bind(state: Arc<AppState>) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(state.config.listen).await?;
        let admin_listener = TcpListener::bind(state.config.admin_listen).await?;
        Ok(Gateway {
            state,
            listener,
            admin_listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves both listeners until `shutdown` resolves, then drains: running
    /// exchanges finish and every usage record is written, within the
    /// shutdown grace.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let limits = self.state.config.limits.clone();
        let grace = limits.shutdown_grace;
        let api = server::serve(
            self.listener,
            http::router(self.state.clone()),
            limits.clone(),
            wait(rx.clone()),
        );
        let admin = server::serve(
            self.admin_listener,
            admin::router(self.state.clone()),
            limits,
            wait(rx),
        );
        let stopping = std::sync::Arc::new(std::sync::OnceLock::new());
        let stopped_at = stopping.clone();
        let trigger = async move {
            shutdown.await;
            let _ = stopped_at.set(tokio::time::Instant::now());
            let _ = tx.send(true);
        };
        let prune = self
            .state
            .config
            .usage_retention
            .map(|r| tokio::spawn(ledger::prune(self.state.keyring.store().clone(), r)));
        tokio::join!(api, admin, trigger);
        if let Some(prune) = prune {
            prune.abort();
        }
        // The listeners have drained (or their grace ran out): what is still
        // queued gets the rest of the grace to be written.
        let started = stopping
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        if self.state.ledger.close(started + grace).await {
            tracing::info!(target: "halberd::usage", "usage records written");
        }
    }
}

async fn wait(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
