//! The shared limiter: the same checks as the in-process executor, decided by
//! one server-side Lua script per decision, so every replica sees one count.
//! The script reads the clock from Redis (`TIME`), never from a replica, and
//! decides and takes in one atomic step: every check first, then, only if all
//! have room, every update. There is no read-modify-write from the client.
//!
//! Key names carry a version (`hb2`), so replicas of two releases never read
//! each other's state during a rolling upgrade (`hb1`, the previous layout, had
//! no user scopes or budgets). They also carry the hash tag `{hb}`, so that on a
//! Redis Cluster every key one script touches is on one slot.
//!
//! Concurrency slots are leases in a sorted set scored by their expiry: a slot
//! is given back when the exchange ends, and a replica that dies holding slots
//! loses them when their lease expires instead of leaking them for ever. A
//! lease is short (a minute) and renewed while its exchange runs, so a dead
//! replica's slots come back within a minute, not after the longest exchange
//! a provider allows. Releases and settlements that Redis could not take are
//! kept (bounded) and done when it answers again; settlements carry an id, so
//! one retried after a lost reply is applied once (within two minutes; one
//! kept longer is dropped and its exchange stays charged at the worst case).
//! Budget counters expire a day after their period ends.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{Check, Outcome, Refund};

/// Version of the key layout and script semantics.
const PREFIX: &str = "halberd:hb2:{hb}:";

const RUN: &str = r#"
-- KEYS[i]: the state of check i. ARGV[1]: lease id (server-made), ARGV[2]: lease (us),
-- then five arguments per check: kind, a, b, c, d.
--   r (rate, GCRA):  a = limit, b = period (us), c = cost
--   s (slot):        a = max
--   b (budget):      a = limit, b = amount, c = period end (unix s), d = seed (-1: unknown)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local unix = tonumber(t[1])
local lease = tonumber(ARGV[2])
local n = #KEYS
local out = {1}
local next_tat = {}
local budget_value = {}
local need = {}
for i = 1, n do
  local at = 2 + (i - 1) * 5
  local kind = ARGV[at + 1]
  local key = KEYS[i]
  if kind == 'r' then
    local limit = tonumber(ARGV[at + 2])
    local period = tonumber(ARGV[at + 3])
    local cost = tonumber(ARGV[at + 4])
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local nxt = tat + math.floor(period * cost / limit)
    if nxt - now > period then
      return {0, i, nxt - now - period, tat - now}
    end
    next_tat[i] = nxt
    out[#out + 1] = math.floor((period - (nxt - now)) * limit / period)
    out[#out + 1] = nxt - now
  elseif kind == 's' then
    local max = tonumber(ARGV[at + 2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local used = redis.call('ZCARD', key)
    if used >= max then
      return {0, i, 1000000, 0}
    end
    out[#out + 1] = max - used - 1
    out[#out + 1] = 0
  else
    local limit = tonumber(ARGV[at + 2])
    local amount = tonumber(ARGV[at + 3])
    local finish = tonumber(ARGV[at + 4])
    local seed = tonumber(ARGV[at + 5])
    local v = redis.call('GET', key)
    if v then
      v = tonumber(v)
    elseif seed >= 0 then
      v = seed
    else
      need[#need + 1] = i
    end
    if v then
      local until_end = (finish - unix) * 1000000
      if v + amount > limit then
        return {0, i, until_end, until_end}
      end
      budget_value[i] = v + amount
      out[#out + 1] = limit - v - amount
      out[#out + 1] = until_end
    end
  end
end
if #need > 0 then
  local reply = {2}
  for _, i in ipairs(need) do reply[#reply + 1] = i end
  return reply
end
for i = 1, n do
  local at = 2 + (i - 1) * 5
  local kind = ARGV[at + 1]
  local key = KEYS[i]
  if kind == 'r' then
    local ttl = math.ceil((next_tat[i] - now) / 1000) + 1000
    redis.call('SET', key, string.format('%d', next_tat[i]), 'PX', ttl)
  elseif kind == 's' then
    redis.call('ZADD', key, now + lease, ARGV[1])
    redis.call('PEXPIRE', key, math.ceil(lease / 1000) + 1000)
  else
    redis.call('SET', key, string.format('%d', budget_value[i]), 'EXAT', tonumber(ARGV[at + 4]) + 86400)
  end
end
return out
"#;

const REFUND: &str = r#"
-- KEYS[1]: this settlement's marker; KEYS[i + 1]: state of item i; four
-- arguments per item: kind, a, b, c.
--   r (rate):   a = limit, b = period (us), c = signed correction (units;
--               negative gives back, positive charges)
--   b (budget): a = signed correction
-- A settlement retried after a reply was lost must not apply twice: the
-- marker says it was applied. It lives SETTLED_TTL (120 s): one marker per
-- exchange for a day filled Redis (600,000 keys in a 30-minute soak).
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', 120) == false then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 2, #KEYS do
  local at = (i - 2) * 4
  local kind = ARGV[at + 1]
  local key = KEYS[i]
  if kind == 'r' then
    local tat = tonumber(redis.call('GET', key) or now)
    local d = tonumber(ARGV[at + 4])
    local shift = math.floor(math.abs(d) * tonumber(ARGV[at + 3]) / tonumber(ARGV[at + 2]))
    if d < 0 then
      local back = tat - shift
      if back > now then
        redis.call('SET', key, string.format('%d', back), 'PX', math.ceil((back - now) / 1000) + 1000)
      else
        redis.call('DEL', key)
      end
    else
      if tat < now then tat = now end
      local nxt = tat + shift
      redis.call('SET', key, string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
    end
  elseif redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, ARGV[at + 2])
  end
end
return 1
"#;

const RENEW: &str = r#"
-- KEYS: slot sets holding lease ARGV[1]; ARGV[2]: lease (us). Pushes the
-- lease's expiry on, if it is still held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then
    redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[1])
    redis.call('PEXPIRE', KEYS[i], math.ceil(lease / 1000) + 1000)
  end
end
return 1
"#;

/// Work that Redis must still do: slots to give back, settlements to apply.
/// Kept (bounded) while Redis is away and done when it answers again, so a
/// slot or a reservation never stays taken because Redis was down at the
/// moment an exchange ended.
#[derive(Debug, Clone)]
enum Pending {
    Release {
        slots: Vec<String>,
        lease: String,
    },
    Settle {
        id: String,
        refunds: Vec<Refund>,
        /// When it was first tried: its marker, if that try reached Redis,
        /// lives [`SETTLED_TTL`] from about then.
        first: std::time::Instant,
    },
}

/// How long a settlement's marker lives in Redis (the `120` of `REFUND`).
/// A settlement still pending after most of it is dropped, not retried: its
/// first try may have been applied with the reply lost, and once the marker
/// is gone a retry could apply it twice. Its exchange then keeps the
/// reservation (the worst case) charged; docs/limits.md says so.
const SETTLED_TTL: Duration = Duration::from_secs(120);

/// Most pending items kept; past it the oldest are dropped (their leases and
/// budget periods expire on their own).
const PENDING_MAX: usize = 100_000;

/// How often pending work is tried while Redis is away.
const PENDING_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    run: redis::Script,
    refund: redis::Script,
    renew: redis::Script,
    pending: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Pending>>>,
    /// A task is retrying the pending work.
    retrying: std::sync::Arc<std::sync::atomic::AtomicBool>,
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

fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
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
            run: redis::Script::new(RUN),
            refund: redis::Script::new(REFUND),
            renew: redis::Script::new(RENEW),
            pending: std::sync::Arc::default(),
            retrying: std::sync::Arc::default(),
            lease,
            timeout,
        })
    }

    /// A call within the configured timeout; errors as text for the fail-mode
    /// log line.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "redis did not answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// Runs the checks in one script call.
    pub async fn run(&self, checks: &[Check], lease: &str) -> Result<Outcome, String> {
        let mut invocation = self.run.prepare_invoke();
        invocation.arg(lease).arg(micros_of(self.lease));
        for c in checks {
            match c {
                Check::Rate {
                    name,
                    limit,
                    period,
                    cost,
                    ..
                } => {
                    invocation
                        .key(format!("{PREFIX}{name}"))
                        .arg("r")
                        .arg(*limit)
                        .arg(micros_of(*period))
                        .arg(*cost)
                        .arg(0);
                }
                Check::Slot { name, max, .. } => {
                    invocation
                        .key(format!("{PREFIX}{name}"))
                        .arg("s")
                        .arg(*max)
                        .arg(0)
                        .arg(0)
                        .arg(0);
                }
                Check::Budget {
                    name,
                    limit,
                    amount,
                    end,
                    seed,
                    ..
                } => {
                    invocation
                        .key(format!("{PREFIX}{name}"))
                        .arg("b")
                        .arg(*limit)
                        .arg(*amount)
                        .arg(*end)
                        .arg(seed.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)));
                }
            }
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = self
            .bounded(async { invocation.invoke_async(&mut conn).await })
            .await?;
        let index = |i: i64| usize::try_from(i - 1).unwrap_or(0);
        match reply.as_slice() {
            [1, rest @ ..] if rest.len() == 2 * checks.len() => Ok(Outcome::Admitted(
                rest.chunks(2)
                    .map(|p| (u64::try_from(p[0]).unwrap_or(0), micros(p[1])))
                    .collect(),
            )),
            [0, i, retry, reset] => Ok(Outcome::Refused {
                index: index(*i),
                retry_after: micros(*retry),
                reset: micros(*reset),
            }),
            [2, need @ ..] if !need.is_empty() => {
                Ok(Outcome::NeedSeed(need.iter().map(|i| index(*i)).collect()))
            }
            other => Err(format!(
                "unexpected reply from the limiter script: {other:?}"
            )),
        }
    }

    /// Applies settlement corrections (in the background: called from a
    /// drop); kept for later if Redis does not answer.
    pub fn refund(&self, refunds: Vec<Refund>) {
        let id = format!("{:032x}", rand::random::<u128>());
        self.submit(Pending::Settle {
            id,
            refunds,
            first: std::time::Instant::now(),
        });
    }

    /// Gives concurrency slots back (in the background: called from a
    /// drop); kept for later if Redis does not answer.
    pub fn release(&self, slots: &[String], lease: &str) {
        self.submit(Pending::Release {
            slots: slots.to_vec(),
            lease: lease.to_owned(),
        });
    }

    /// Pushes the expiry of a lease on while its exchange runs.
    pub async fn renew(&self, slots: &[String], lease: &str) -> bool {
        let mut invocation = self.renew.prepare_invoke();
        for name in slots {
            invocation.key(format!("{PREFIX}{name}"));
        }
        invocation.arg(lease).arg(micros_of(self.lease));
        let mut conn = self.conn.clone();
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .is_ok()
    }

    /// How long a lease lives without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Items waiting for Redis.
    pub fn pending(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    fn submit(&self, item: Pending) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            // Behind earlier work that is still waiting, to keep the order.
            let queued = this.pending.lock().is_ok_and(|p| !p.is_empty());
            if !queued && this.apply(&item).await {
                return;
            }
            this.keep(item);
        });
    }

    fn keep(&self, item: Pending) {
        if let Ok(mut pending) = self.pending.lock() {
            if pending.len() >= PENDING_MAX {
                pending.pop_front();
                tracing::warn!(target: "halberd::limits", "too much redis work pending; the oldest is dropped (its lease or budget period expires on its own)");
            }
            pending.push_back(item);
        }
        if !self
            .retrying
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::warn!(target: "halberd::limits", "redis did not answer: slot releases and settlements are kept and retried");
            let this = self.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { this.retry().await });
            }
        }
    }

    /// Does the pending work in order, waiting while Redis is away.
    async fn retry(&self) {
        let mut dropped = 0u64;
        loop {
            let next = self.pending.lock().ok().and_then(|p| p.front().cloned());
            let Some(item) = next else {
                self.retrying
                    .store(false, std::sync::atomic::Ordering::Release);
                // Work kept between the check and the flag is picked up.
                if self.pending() > 0
                    && !self
                        .retrying
                        .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    continue;
                }
                if dropped > 0 {
                    tracing::warn!(target: "halberd::limits", dropped, "pending redis work done; settlements that waited over two minutes were dropped, their exchanges stay charged at their reservations");
                } else {
                    tracing::info!(target: "halberd::limits", "pending redis work done");
                }
                return;
            };
            if let Pending::Settle { first, .. } = &item
                && first.elapsed() + Duration::from_secs(10) > SETTLED_TTL
            {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.pop_front();
                }
                dropped += 1;
                continue;
            }
            if self.apply(&item).await {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.pop_front();
                }
            } else {
                tokio::time::sleep(PENDING_RETRY).await;
            }
        }
    }

    /// One item, within the timeout; whether Redis did it.
    async fn apply(&self, item: &Pending) -> bool {
        let mut conn = self.conn.clone();
        match item {
            Pending::Release { slots, lease } => {
                let mut pipe = redis::pipe();
                for name in slots {
                    pipe.cmd("ZREM")
                        .arg(format!("{PREFIX}{name}"))
                        .arg(lease)
                        .ignore();
                }
                self.bounded(pipe.query_async::<()>(&mut conn))
                    .await
                    .is_ok()
            }
            Pending::Settle { id, refunds, .. } => {
                let mut invocation = self.refund.prepare_invoke();
                invocation.key(format!("{PREFIX}settled:{id}"));
                for r in refunds {
                    match r {
                        Refund::Rate {
                            name,
                            limit,
                            period,
                            delta,
                        } => {
                            invocation
                                .key(format!("{PREFIX}{name}"))
                                .arg("r")
                                .arg(*limit)
                                .arg(micros_of(*period))
                                .arg(*delta);
                        }
                        Refund::Budget { name, delta, .. } => {
                            invocation
                                .key(format!("{PREFIX}{name}"))
                                .arg("b")
                                .arg(*delta)
                                .arg(0)
                                .arg(0);
                        }
                    }
                }
                self.bounded(invocation.invoke_async::<i64>(&mut conn))
                    .await
                    .is_ok()
            }
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
