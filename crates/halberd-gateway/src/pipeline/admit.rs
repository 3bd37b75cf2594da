//! Stage 2, admit: the authenticated key in, a [`Permit`] out, or a 429.
//!
//! Two limits per key, both optional, both enforced in this process:
//! - `max_concurrent`: requests in flight at once. The permit holds a slot until
//!   the exchange ends (it rides in the [`Finish`](super::finish::Finish) guard,
//!   so a streamed exchange holds it until the stream ends or the client goes
//!   away).
//! - `rpm`: requests per minute, as a GCRA (generic cell rate algorithm): a key
//!   may send its whole minute at once, then one request per `60 s / rpm`. One
//!   number of state per key (the theoretical arrival time), no timers, and the
//!   decision and the update happen under one lock, so concurrent requests can
//!   never exceed the limit.
//!
//! Concurrency is checked first and its slot given back if the rate refuses, so
//! a refused request never uses up a rate token it did not use.
//!
//! With `[limits] redis_url`, the same decisions are made by one Lua script on
//! the Redis server ([`redis`]), so all replicas share one count. When Redis
//! cannot be reached, the limiter follows `[limits] rate_fail_mode`: `local`
//! (the default) enforces each limit in this process divided by
//! `[limits] replicas`, `closed` refuses, `open` admits; it says so in the log
//! and in `/readyz`, and tries Redis again after one second.

pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use halberd_store::{KeyLimits, KeyRecord};

use self::redis::{Decision, RedisLimiter};
use crate::error::GatewayError;

/// What to do with rate limits while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Enforce in this process, each limit divided by the replica count.
    Local,
    /// Refuse requests of keys that have limits.
    Closed,
    /// Admit them.
    Open,
}

/// Per-key counters: in this process, or shared through Redis.
#[derive(Debug)]
pub struct Limiter {
    keys: Mutex<HashMap<String, KeyState>>,
    redis: Option<RedisLimiter>,
    replicas: u32,
    fail_mode: FailMode,
    /// Redis failed recently: use the fail mode until then.
    redis_down_until: Mutex<Option<Instant>>,
    redis_ok: AtomicBool,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(None, 1, FailMode::Local)
    }
}

/// How long the limiter skips Redis after a failure before trying again.
const REDIS_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct KeyState {
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    in_flight: u32,
    /// Token GCRA theoretical arrival time.
    token_tat: Option<Instant>,
}

/// Tokens reserved for one exchange; settled when it ends.
#[derive(Debug)]
pub struct TokenGrant {
    limiter: Arc<Limiter>,
    key_id: String,
    tpm: u32,
    /// Prompt plus maximum output.
    pub reserved: u64,
    /// The prompt alone, counted before the call.
    pub prompt: u64,
    pub rate: RateInfo,
    shared: bool,
}

impl TokenGrant {
    /// Gives back what was reserved but not used.
    pub fn settle(&self, used: u64) {
        let refund = self.reserved.saturating_sub(used);
        if refund == 0 {
            return;
        }
        match (&self.limiter.redis, self.shared) {
            (Some(redis), true) => redis.settle_tokens(&self.key_id, self.tpm, refund),
            _ => self.limiter.settle_local(&self.key_id, self.tpm, refund),
        }
    }
}

/// One minute: the burst a token limit allows.
const WINDOW: Duration = Duration::from_secs(60);

/// The request rate state reported in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub unit: RateUnit,
    pub limit: u32,
    pub remaining: u32,
    /// Until the key could send its whole minute again.
    pub reset: Duration,
}

/// What a per-minute limit counts; names its `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Requests,
    Tokens,
}

/// Admission of one request; gives its concurrency slot back when dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    key_id: String,
    slot: Slot,
    pub rate: Option<RateInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    None,
    Local,
    /// A lease in Redis, named by the request id.
    Redis(String),
}

impl Drop for Permit {
    fn drop(&mut self) {
        match &self.slot {
            Slot::None => {}
            Slot::Local => self.limiter.release(&self.key_id),
            Slot::Redis(request_id) => {
                if let Some(redis) = &self.limiter.redis {
                    redis.release(&self.key_id, request_id);
                }
            }
        }
    }
}

/// Entries kept before idle keys are swept.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    pub fn new(redis: Option<RedisLimiter>, replicas: u32, fail_mode: FailMode) -> Limiter {
        Limiter {
            keys: Mutex::default(),
            redis,
            replicas: replicas.max(1),
            fail_mode,
            redis_down_until: Mutex::new(None),
            redis_ok: AtomicBool::new(true),
        }
    }

    /// For `/readyz`: `None` without Redis, else whether it answers.
    pub async fn redis_health(&self) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let ok = redis.ping().await;
        self.redis_ok.store(ok, Ordering::Relaxed);
        Some(ok)
    }

    /// Admits one request of `key`, in Redis when configured and reachable.
    pub async fn admit(
        self: &Arc<Self>,
        key: &KeyRecord,
        request_id: &str,
        now: Instant,
    ) -> Result<Permit, GatewayError> {
        let limits = key.limits;
        let unlimited = Permit {
            limiter: self.clone(),
            key_id: key.id.clone(),
            slot: Slot::None,
            rate: None,
        };
        if limits.is_empty() {
            return Ok(unlimited);
        }
        if self.redis.is_none() {
            return self.admit_local(key, limits, now);
        }
        if let Some(redis) = self.redis_to_try(now) {
            let decided = redis
                .admit(
                    &key.id,
                    limits.rpm.unwrap_or(0),
                    limits.max_concurrent.unwrap_or(0),
                    request_id,
                )
                .await;
            match decided {
                Ok(decision) => {
                    self.redis_answered();
                    return self.permit_from(key, limits, request_id, decision);
                }
                Err(error) => self.redis_failed(&error, now),
            }
        }
        match self.fail_mode {
            FailMode::Open => Ok(unlimited),
            FailMode::Closed => Err(limits_unavailable()),
            FailMode::Local => {
                let share = |n: Option<u32>| n.map(|n| n.div_ceil(self.replicas).max(1));
                let local = KeyLimits {
                    rpm: share(limits.rpm),
                    max_concurrent: share(limits.max_concurrent),
                    tpm: share(limits.tpm),
                };
                self.admit_local(key, local, now)
            }
        }
    }

    /// Redis, unless there is none or it failed less than `REDIS_RETRY` ago.
    fn redis_to_try(&self, now: Instant) -> Option<&RedisLimiter> {
        let cooling = self
            .redis_down_until
            .lock()
            .map(|until| until.is_some_and(|t| now < t))
            .unwrap_or(false);
        if cooling { None } else { self.redis.as_ref() }
    }

    fn redis_answered(&self) {
        if !self.redis_ok.swap(true, Ordering::Relaxed) {
            tracing::info!(target: "halberd::limits", "redis is back: limits are shared again");
        }
    }

    /// Logs the change once and skips Redis for `REDIS_RETRY`.
    fn redis_failed(&self, error: &str, now: Instant) {
        if self.redis_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(target: "halberd::limits", %error, fail_mode = ?self.fail_mode, "redis unreachable: limits follow the fail mode");
        }
        if let Ok(mut until) = self.redis_down_until.lock() {
            *until = Some(now + REDIS_RETRY);
        }
    }

    fn permit_from(
        self: &Arc<Self>,
        key: &KeyRecord,
        limits: KeyLimits,
        request_id: &str,
        decision: Decision,
    ) -> Result<Permit, GatewayError> {
        match decision {
            Decision::Admitted {
                remaining,
                reset,
                holds_slot,
            } => Ok(Permit {
                limiter: self.clone(),
                key_id: key.id.clone(),
                slot: if holds_slot {
                    Slot::Redis(request_id.to_owned())
                } else {
                    Slot::None
                },
                rate: limits.rpm.map(|limit| RateInfo {
                    unit: RateUnit::Requests,
                    limit,
                    remaining: remaining.unwrap_or(0),
                    reset,
                }),
            }),
            Decision::TooManyConcurrent => Err(GatewayError::RateLimited {
                what: "concurrent requests",
                retry_after: Duration::from_secs(1),
                rate: None,
            }),
            Decision::TooFast { retry_after, reset } => Err(GatewayError::RateLimited {
                what: "requests per minute",
                retry_after,
                rate: limits.rpm.map(|limit| RateInfo {
                    unit: RateUnit::Requests,
                    limit,
                    remaining: 0,
                    reset,
                }),
            }),
        }
    }

    fn admit_local(
        self: &Arc<Self>,
        key: &KeyRecord,
        limits: KeyLimits,
        now: Instant,
    ) -> Result<Permit, GatewayError> {
        let mut keys = self.keys.lock().map_err(|_| GatewayError::Internal)?;
        if keys.len() >= SWEEP_AT {
            keys.retain(|_, s| s.in_flight > 0 || s.tat.is_some_and(|t| t > now));
        }
        let state = keys.entry(key.id.clone()).or_insert(KeyState {
            tat: None,
            in_flight: 0,
            token_tat: None,
        });
        if let Some(max) = limits.max_concurrent
            && state.in_flight >= max
        {
            return Err(GatewayError::RateLimited {
                what: "concurrent requests",
                retry_after: Duration::from_secs(1),
                rate: None,
            });
        }
        let mut rate = None;
        if let Some(rpm) = limits.rpm {
            let interval = Duration::from_secs(60) / rpm;
            let tolerance = interval * (rpm - 1);
            let tat = state.tat.map_or(now, |t| t.max(now));
            let ahead = tat - now;
            if ahead > tolerance {
                let wait = ahead - tolerance;
                return Err(GatewayError::RateLimited {
                    what: "requests per minute",
                    retry_after: wait,
                    rate: Some(RateInfo {
                        unit: RateUnit::Requests,
                        limit: rpm,
                        remaining: 0,
                        reset: ahead,
                    }),
                });
            }
            let next = tat + interval;
            state.tat = Some(next);
            let used = next - now;
            let remaining =
                ((tolerance + interval).saturating_sub(used)).as_nanos() / interval.as_nanos();
            rate = Some(RateInfo {
                unit: RateUnit::Requests,
                limit: rpm,
                remaining: u32::try_from(remaining).unwrap_or(rpm),
                reset: used,
            });
        }
        let holds_slot = limits.max_concurrent.is_some();
        if holds_slot {
            state.in_flight += 1;
        }
        Ok(Permit {
            limiter: self.clone(),
            key_id: key.id.clone(),
            slot: if holds_slot { Slot::Local } else { Slot::None },
            rate,
        })
    }

    /// Reserves `prompt + max_output` tokens of the key's per-minute budget
    /// before the upstream call; `None` when the key has no token limit.
    pub async fn reserve_tokens(
        self: &Arc<Self>,
        key: &KeyRecord,
        prompt: u64,
        max_output: u64,
        now: Instant,
    ) -> Result<Option<TokenGrant>, GatewayError> {
        let Some(tpm) = key.limits.tpm else {
            return Ok(None);
        };
        let tokens = prompt + max_output;
        if tokens > u64::from(tpm) {
            return Err(GatewayError::InvalidRequest {
                message: format!(
                    "this request needs up to {tokens} tokens ({prompt} prompt + {max_output} output), more than this key's limit of {tpm} tokens per minute; lower max_tokens or shorten the prompt"
                ),
                param: None,
            });
        }
        if self.redis.is_some() {
            if let Some(redis) = self.redis_to_try(now) {
                match redis.reserve_tokens(&key.id, tpm, tokens).await {
                    Ok(redis::TokenDecision::Reserved { remaining, reset }) => {
                        self.redis_answered();
                        return Ok(Some(
                            self.grant(key, tpm, tokens, prompt, remaining, reset, true),
                        ));
                    }
                    Ok(redis::TokenDecision::TooMany { retry_after, reset }) => {
                        self.redis_answered();
                        return Err(tokens_refused(tpm, retry_after, reset));
                    }
                    Err(error) => self.redis_failed(&error, now),
                }
            }
            match self.fail_mode {
                FailMode::Open => return Ok(None),
                FailMode::Closed => return Err(limits_unavailable()),
                FailMode::Local => {
                    let share = tpm.div_ceil(self.replicas).max(1);
                    return self
                        .reserve_local(key, share, tokens, prompt, now)
                        .map(Some);
                }
            }
        }
        self.reserve_local(key, tpm, tokens, prompt, now).map(Some)
    }

    #[allow(clippy::too_many_arguments)]
    fn grant(
        self: &Arc<Self>,
        key: &KeyRecord,
        tpm: u32,
        tokens: u64,
        prompt: u64,
        remaining: u64,
        reset: Duration,
        shared: bool,
    ) -> TokenGrant {
        TokenGrant {
            limiter: self.clone(),
            key_id: key.id.clone(),
            tpm,
            reserved: tokens,
            prompt,
            rate: RateInfo {
                unit: RateUnit::Tokens,
                limit: tpm,
                remaining: u32::try_from(remaining).unwrap_or(tpm),
                reset,
            },
            shared,
        }
    }

    fn reserve_local(
        self: &Arc<Self>,
        key: &KeyRecord,
        tpm: u32,
        tokens: u64,
        prompt: u64,
        now: Instant,
    ) -> Result<TokenGrant, GatewayError> {
        let per_token = WINDOW / tpm;
        let mut keys = self.keys.lock().map_err(|_| GatewayError::Internal)?;
        let state = keys.entry(key.id.clone()).or_insert(KeyState {
            tat: None,
            in_flight: 0,
            token_tat: None,
        });
        let tat = state.token_tat.map_or(now, |t| t.max(now));
        let cost = per_token * u32::try_from(tokens).unwrap_or(u32::MAX);
        let next = tat + cost;
        if next - now > WINDOW {
            return Err(tokens_refused(tpm, next - now - WINDOW, tat - now));
        }
        state.token_tat = Some(next);
        let remaining = (WINDOW - (next - now)).as_nanos() / per_token.as_nanos().max(1);
        drop(keys);
        Ok(self.grant(
            key,
            tpm,
            tokens,
            prompt,
            u64::try_from(remaining).unwrap_or(0),
            next - now,
            false,
        ))
    }

    fn settle_local(&self, key_id: &str, tpm: u32, refund: u64) {
        let per_token = WINDOW / tpm;
        let back = per_token * u32::try_from(refund).unwrap_or(u32::MAX);
        if let Ok(mut keys) = self.keys.lock()
            && let Some(state) = keys.get_mut(key_id)
            && let Some(tat) = state.token_tat
        {
            let now = Instant::now();
            state.token_tat = Some(tat.checked_sub(back).map_or(now, |t| t.max(now)));
        }
    }

    fn release(&self, key_id: &str) {
        if let Ok(mut keys) = self.keys.lock()
            && let Some(state) = keys.get_mut(key_id)
        {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

fn limits_unavailable() -> GatewayError {
    GatewayError::Unavailable {
        message: "rate limits cannot be checked right now; retry shortly".into(),
    }
}

fn tokens_refused(tpm: u32, retry_after: Duration, reset: Duration) -> GatewayError {
    GatewayError::RateLimited {
        what: "tokens per minute",
        retry_after,
        rate: Some(RateInfo {
            unit: RateUnit::Tokens,
            limit: tpm,
            remaining: 0,
            reset,
        }),
    }
}

/// `x-ratelimit-limit-{unit}`, `-remaining-{unit}`, `-reset-{unit}`, where the
/// unit is `requests` or `tokens`.
pub fn set_rate_headers(headers: &mut http::HeaderMap, rate: &RateInfo) {
    let (limit, remaining, reset) = match rate.unit {
        RateUnit::Requests => (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        RateUnit::Tokens => (
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ),
    };
    headers.insert(limit, http::HeaderValue::from(rate.limit));
    headers.insert(remaining, http::HeaderValue::from(rate.remaining));
    if let Ok(v) = http::HeaderValue::from_str(&reset_text(rate.reset)) {
        headers.insert(reset, v);
    }
}

/// OpenAI's duration notation for `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64().ceil() as u64;
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests;

/// The output cap reserved for a request of a token-limited key: the client's
/// own cap, lowered to `cap`, or `cap` when it set none. The body is changed so
/// the provider cannot produce more than was reserved.
pub fn cap_output(
    body: &mut serde_json::Value,
    exchange: &halberd_protocol::Exchange,
    cap: u64,
) -> u64 {
    use halberd_protocol::Api;
    let field = match exchange.api {
        Api::Embeddings => return 0,
        Api::Messages => "max_tokens",
        Api::Responses => "max_output_tokens",
        Api::ChatCompletions => {
            if body.get("max_tokens").is_some() && body.get("max_completion_tokens").is_none() {
                "max_tokens"
            } else {
                "max_completion_tokens"
            }
        }
    };
    let effective = exchange
        .max_output_tokens
        .map_or(cap, |asked| asked.min(cap));
    if exchange.max_output_tokens != Some(effective)
        && let Some(object) = body.as_object_mut()
    {
        object.insert(field.into(), serde_json::Value::from(effective));
    }
    effective
}
