//! The shared limiter: the same GCRA and concurrency slots as the in-process
//! limiter, decided by one server-side Lua script per request, so every replica
//! sees one count. The script reads the clock from Redis (`TIME`), never from a
//! replica, and decides and updates in one atomic step: there is no
//! read-modify-write from the client. Key names carry a version (`hb1`), so
//! replicas of two releases never interpret each other's state.
//!
//! Concurrency slots are leases in a sorted set scored by their expiry: a slot
//! is given back when the exchange ends, and a replica that dies holding slots
//! loses them when their lease expires instead of leaking them for ever.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Version of the key layout and script semantics.
const VERSION: &str = "hb1";

const ADMIT: &str = r#"
-- KEYS[1]: GCRA theoretical arrival time (microseconds, Redis clock)
-- KEYS[2]: concurrency leases (sorted set: member = request id, score = expiry)
-- ARGV: rpm (0 = none), max_concurrent (0 = none), request id, lease (microseconds)
local rpm = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local lease = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max then
    return {0, 1, 1000000, 0}
  end
end
local remaining = -1
local reset = 0
if rpm > 0 then
  local interval = math.floor(60000000 / rpm)
  local tolerance = interval * (rpm - 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {0, 2, tat - now - tolerance, tat - now}
  end
  local nxt = tat + interval
  redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
  remaining = math.floor((tolerance + interval - (nxt - now)) / interval)
  reset = nxt - now
end
if max > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease / 1000) + 1000)
end
return {1, 0, remaining, reset}
"#;

const RESERVE: &str = r#"
-- KEYS[1]: token GCRA theoretical arrival time (microseconds, Redis clock)
-- ARGV: tpm, tokens to reserve
local tpm = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per_token = 60000000 / tpm
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + tokens * per_token
if nxt - now > 60000000 then
  return {0, math.floor(nxt - now - 60000000), math.floor(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return {1, math.floor((60000000 - (nxt - now)) / per_token), math.floor(nxt - now)}
"#;

const SETTLE: &str = r#"
-- KEYS[1]: token GCRA time; ARGV: tpm, tokens reserved but not used
local tpm = tonumber(ARGV[1])
local refund = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local back = tat - refund * (60000000 / tpm)
if back < now then back = now end
if back > now then
  redis.call('SET', KEYS[1], string.format('%d', back), 'PX', math.ceil((back - now) / 1000) + 1000)
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// What the token script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDecision {
    Reserved {
        remaining: u64,
        reset: Duration,
    },
    TooMany {
        retry_after: Duration,
        reset: Duration,
    },
}

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admitted {
        /// Requests left in the minute; `None` without an rpm limit.
        remaining: Option<u32>,
        reset: Duration,
        holds_slot: bool,
    },
    TooManyConcurrent,
    TooFast {
        retry_after: Duration,
        reset: Duration,
    },
}

#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    reserve: redis::Script,
    settle: redis::Script,
    /// How long a concurrency lease lives if never given back.
    lease: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("lease", &self.lease)
            .finish()
    }
}

fn token_key(key_id: &str) -> String {
    format!("halberd:{VERSION}:{{{key_id}}}:tokens")
}

fn keys(key_id: &str) -> (String, String) {
    // The hash tag keeps both keys of a key on one Redis Cluster slot.
    (
        format!("halberd:{VERSION}:{{{key_id}}}:rate"),
        format!("halberd:{VERSION}:{{{key_id}}}:slots"),
    )
}

impl RedisLimiter {
    /// Connects lazily: a Redis that is down at start-up is a fallback, not a
    /// start-up failure.
    pub fn new(url: &str, lease: Duration, timeout: Duration) -> Result<RedisLimiter, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid redis_url: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(RedisLimiter {
            conn,
            script: redis::Script::new(ADMIT),
            reserve: redis::Script::new(RESERVE),
            settle: redis::Script::new(SETTLE),
            lease,
            timeout,
        })
    }

    /// A script call within the configured timeout; errors as text for the
    /// fail-mode log line.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "redis did not answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    pub async fn admit(
        &self,
        key_id: &str,
        rpm: u32,
        max_concurrent: u32,
        request_id: &str,
    ) -> Result<Decision, String> {
        let (rate_key, slots_key) = keys(key_id);
        let mut conn = self.conn.clone();
        let lease_us = u64::try_from(self.lease.as_micros()).unwrap_or(u64::MAX);
        let call = async {
            self.script
                .key(&rate_key)
                .key(&slots_key)
                .arg(rpm)
                .arg(max_concurrent)
                .arg(request_id)
                .arg(lease_us)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
        };
        let reply = self.bounded(call).await?;
        match reply.as_slice() {
            [1, _, remaining, reset] => Ok(Decision::Admitted {
                remaining: u32::try_from(*remaining).ok(),
                reset: micros(*reset),
                holds_slot: max_concurrent > 0,
            }),
            [0, 1, ..] => Ok(Decision::TooManyConcurrent),
            [0, 2, retry, reset] => Ok(Decision::TooFast {
                retry_after: micros(*retry),
                reset: micros(*reset),
            }),
            other => Err(format!("unexpected reply from the admit script: {other:?}")),
        }
    }

    pub async fn reserve_tokens(
        &self,
        key_id: &str,
        tpm: u32,
        tokens: u64,
    ) -> Result<TokenDecision, String> {
        let key = token_key(key_id);
        let mut conn = self.conn.clone();
        let call = async {
            self.reserve
                .key(&key)
                .arg(tpm)
                .arg(tokens)
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
        };
        let reply = self.bounded(call).await?;
        match reply.as_slice() {
            [1, remaining, reset] => Ok(TokenDecision::Reserved {
                remaining: u64::try_from(*remaining).unwrap_or(0),
                reset: micros(*reset),
            }),
            [0, retry, reset] => Ok(TokenDecision::TooMany {
                retry_after: micros(*retry),
                reset: micros(*reset),
            }),
            other => Err(format!(
                "unexpected reply from the reserve script: {other:?}"
            )),
        }
    }

    /// Gives back tokens reserved but not used (in the background).
    pub fn settle_tokens(&self, key_id: &str, tpm: u32, refund: u64) {
        let key = token_key(key_id);
        let mut conn = self.conn.clone();
        let script = self.settle.clone();
        let timeout = self.timeout;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let call = async {
                    script
                        .key(&key)
                        .arg(tpm)
                        .arg(refund)
                        .invoke_async::<i64>(&mut conn)
                        .await
                };
                if !matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_))) {
                    // The reservation then stands in full: the safe side.
                    tracing::warn!(target: "halberd::limits", "could not settle a token reservation in redis");
                }
            });
        }
    }

    /// Gives a concurrency slot back (in the background: called from a drop).
    pub fn release(&self, key_id: &str, request_id: &str) {
        let (_, slots_key) = keys(key_id);
        let mut conn = self.conn.clone();
        let member = request_id.to_owned();
        let timeout = self.timeout;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let done = tokio::time::timeout(
                    timeout,
                    redis::cmd("ZREM")
                        .arg(&slots_key)
                        .arg(&member)
                        .query_async::<i64>(&mut conn),
                )
                .await;
                if !matches!(done, Ok(Ok(_))) {
                    // The lease expires on its own; the slot is not lost.
                    tracing::warn!(target: "halberd::limits", "could not give a concurrency slot back to redis");
                }
            });
        }
    }

    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        matches!(
            tokio::time::timeout(
                self.timeout,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// Microseconds from a script reply (never negative in practice; 0 if so).
fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}
