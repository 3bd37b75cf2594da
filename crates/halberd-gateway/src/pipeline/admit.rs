//! Stage 2, admit: limits and budgets of the key and of its user, checked and
//! taken atomically before anything reaches a provider.
//!
//! Limits apply to *scopes*: the key (its own limits over those of its policy)
//! and, when the key belongs to a user with limits, the user across all of that
//! user's keys. Both apply; a request passes only if every limit of every scope
//! has room, and then takes from all of them in the same step.
//!
//! A request meets the limiter twice:
//! 1. [`Limiter::admit`], as soon as the key is known: concurrency slots and
//!    request rates (`rps`, `rpm`, `rpd`). The [`Permit`] holds the slots until
//!    the exchange ends (it rides in the [`Finish`](super::finish::Finish)
//!    guard, so a streamed exchange holds them until the stream ends or the
//!    client goes away).
//! 2. [`Limiter::reserve`], once the prompt is counted and the output capped:
//!    token rates (`tpm`, `tpd`) and budgets (tokens and dollars per UTC day and
//!    month). The [`Reservation`] is the request's worst case (prompt plus
//!    output cap, and what that costs at the model's uncached price); when the
//!    exchange ends it is settled against the provider's usage, or against the
//!    tokens actually relayed when the provider never said. Concurrent requests
//!    therefore cannot push a budget past its limit: each one's worst case was
//!    taken before it started.
//!
//! Every decision is a list of [`Check`]s run by one of two executors with the
//! same semantics: in this process, under one lock, or on the Redis server in
//! one Lua script ([`redis`]). Rates are GCRA (generic cell rate algorithm): a
//! limit of `n` per period lets a key spend the whole period's allowance at
//! once, then refills continuously; one timestamp of state per limit. Budgets
//! are counters per calendar period, seeded from the usage records in the store
//! the first time a period's counter is needed (after a restart, or when Redis
//! lost it), so a budget survives restarts.
//!
//! With `[limits] redis_url`, all replicas share the counters. When Redis cannot
//! be reached, rates and slots follow `[limits] rate_fail_mode` (`local`, the
//! default, enforces each limit in this process divided by `[limits] replicas`;
//! `closed` refuses; `open` admits) and budgets follow `budget_fail_mode`
//! (`closed`, the default, refuses; `open` admits). The limiter says so in the
//! log and in `/readyz`, and tries Redis again after one second.

pub mod budget;
pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use halberd_store::{KeyLimits, KeyRecord, Store, Usd};

use self::budget::{Period, Price};
use self::redis::RedisLimiter;
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

/// Whose limits: a key, or a user across all of that user's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Counter name part: `k:KEYID` or `u:HEX(user)`.
    pub id: String,
    /// For messages: `this API key`, `user "ann"`.
    pub label: String,
    pub limits: KeyLimits,
    /// Whose usage records seed this scope's budgets.
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Key(String),
    User(String),
}

/// The scopes of a request: the key's limits (its own, over its policy's), and
/// its user's when the user has any.
pub fn scopes(key: &KeyRecord, policy: &KeyLimits, user: Option<&KeyLimits>) -> Vec<Scope> {
    let mut own = *policy;
    own.apply(&key.limits);
    let mut scopes = Vec::with_capacity(2);
    if !own.is_empty() {
        scopes.push(Scope {
            id: format!("k:{}", key.id),
            label: "this API key".into(),
            limits: own,
            owner: Owner::Key(key.id.clone()),
        });
    }
    if let (Some(name), Some(limits)) = (&key.user, user)
        && !limits.is_empty()
    {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        scopes.push(Scope {
            id: format!("u:{hex}"),
            label: format!("user {name:?}"),
            limits: *limits,
            owner: Owner::User(name.clone()),
        });
    }
    scopes
}

/// One thing to check and take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GCRA: `cost` units of a limit of `limit` per `period`.
    Rate {
        name: String,
        limit: u64,
        period: Duration,
        cost: u64,
        unit: RateUnit,
        /// Index of the scope it limits.
        scope: usize,
    },
    /// A concurrency slot, of at most `max`.
    Slot {
        name: String,
        max: u32,
        scope: usize,
    },
    /// `amount` more of a per-period counter that must stay within `limit`.
    Budget {
        name: String,
        limit: u64,
        amount: u64,
        /// End of the period, Unix seconds.
        end: i64,
        /// The period's usage so far, from the store; `None` until needed.
        seed: Option<u64>,
        unit: BudgetUnit,
        /// Index of the scope, to find whose usage seeds it.
        scope: usize,
        start: i64,
        period: Period,
    },
}

impl Check {
    /// The limit's short name, as in the key flags (`rpm`, `budget_usd_daily`),
    /// for logs: it names no one.
    pub fn limit(&self) -> &'static str {
        match self {
            Check::Slot { .. } => "max_concurrent",
            Check::Rate { unit, period, .. } => match (unit, period.as_secs()) {
                (RateUnit::Requests, 1) => "rps",
                (RateUnit::Requests, 60) => "rpm",
                (RateUnit::Requests, _) => "rpd",
                (RateUnit::Tokens, 60) => "tpm",
                (RateUnit::Tokens, _) => "tpd",
            },
            Check::Budget { unit, period, .. } => match (unit, period) {
                (BudgetUnit::Tokens, Period::Day) => "budget_tokens_daily",
                (BudgetUnit::Tokens, Period::Month) => "budget_tokens_monthly",
                (BudgetUnit::Usd, Period::Day) => "budget_usd_daily",
                (BudgetUnit::Usd, Period::Month) => "budget_usd_monthly",
            },
        }
    }

    fn scope(&self) -> usize {
        match self {
            Check::Rate { scope, .. } | Check::Slot { scope, .. } | Check::Budget { scope, .. } => {
                *scope
            }
        }
    }

    /// For the caller: `requests per minute of this API key`, `daily cost
    /// budget of user "ann"`. Built only when a check refuses.
    fn describe(&self, scopes: &[Scope]) -> String {
        let of = scopes
            .get(self.scope())
            .map_or("this API key", |s| s.label.as_str());
        match self {
            Check::Slot { .. } => format!("concurrent requests of {of}"),
            Check::Rate { unit, period, .. } => {
                let what = match unit {
                    RateUnit::Requests => "requests",
                    RateUnit::Tokens => "tokens",
                };
                let per = match period.as_secs() {
                    1 => "second",
                    60 => "minute",
                    _ => "day",
                };
                format!("{what} per {per} of {of}")
            }
            Check::Budget { unit, period, .. } => {
                let what = match unit {
                    BudgetUnit::Tokens => "token",
                    BudgetUnit::Usd => "cost",
                };
                format!("{} {what} budget of {of}", period.as_str())
            }
        }
    }
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetUnit {
    Tokens,
    /// Nano-dollars.
    Usd,
}

/// An executor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was taken; per check, what is left and when it is all back.
    Admitted(Vec<(u64, Duration)>),
    /// Nothing was taken: check `index` has no room.
    Refused {
        index: usize,
        retry_after: Duration,
        reset: Duration,
    },
    /// Nothing was taken: these budget counters need their seed.
    NeedSeed(Vec<usize>),
}

/// How the unused part of a reservation goes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refund {
    /// A signed correction of a rate: used minus reserved units (negative
    /// gives back, positive charges what the provider counted beyond the
    /// reservation).
    Rate {
        name: String,
        limit: u64,
        period: Duration,
        delta: i64,
    },
    /// A signed correction of a budget counter (negative gives back).
    Budget { name: String, delta: i64, end: i64 },
}

/// The request rate state reported in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub unit: RateUnit,
    pub limit: u64,
    pub remaining: u64,
    /// Until the whole allowance is back.
    pub reset: Duration,
}

/// What a rate limit counts; names its `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Requests,
    Tokens,
}

/// Where a decision was made, so that what it took goes back to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    Redis,
}

/// Per-process counters: the whole state when there is no Redis, the fallback
/// when Redis is unreachable.
#[derive(Debug, Default)]
struct Local {
    /// GCRA theoretical arrival times.
    tats: HashMap<String, Instant>,
    slots: HashMap<String, u32>,
    /// Budget counters and the end of their period (Unix seconds).
    counters: HashMap<String, (u64, i64)>,
}

/// What a decided check writes once all checks have room.
enum Write<'a> {
    Tat(&'a String, Instant),
    Slot(&'a String),
    Counter(&'a String, u64, i64),
}

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 100_000;

impl Local {
    fn run(&mut self, checks: &[Check], now: Instant, unix: i64) -> Outcome {
        if self.tats.len() + self.counters.len() >= SWEEP_AT {
            self.tats.retain(|_, t| *t > now);
            self.counters.retain(|_, (_, end)| *end > unix);
        }
        // Decide every check first, keeping what each would write...
        let mut out = Vec::with_capacity(checks.len());
        let mut writes = Vec::with_capacity(checks.len());
        let mut need = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            match c {
                Check::Rate {
                    name,
                    limit,
                    period,
                    cost,
                    ..
                } => {
                    let tat = self.tats.get(name).map_or(now, |t| (*t).max(now));
                    let next = tat + cells(*period, *cost, *limit);
                    let ahead = next - now;
                    if ahead > *period {
                        return Outcome::Refused {
                            index: i,
                            retry_after: ahead - *period,
                            reset: tat - now,
                        };
                    }
                    out.push((left(*period, ahead, *limit), ahead));
                    writes.push(Write::Tat(name, next));
                }
                Check::Slot { name, max, .. } => {
                    let used = self.slots.get(name).copied().unwrap_or(0);
                    if used >= *max {
                        return Outcome::Refused {
                            index: i,
                            retry_after: Duration::from_secs(1),
                            reset: Duration::ZERO,
                        };
                    }
                    out.push((u64::from(max - used - 1), Duration::ZERO));
                    writes.push(Write::Slot(name));
                }
                Check::Budget {
                    name,
                    limit,
                    amount,
                    end,
                    seed,
                    ..
                } => {
                    let Some(spent) = self.counters.get(name).map(|(v, _)| *v).or(*seed) else {
                        need.push(i);
                        continue;
                    };
                    let until = Duration::from_secs(u64::try_from(end - unix).unwrap_or(0));
                    if spent.saturating_add(*amount) > *limit {
                        return Outcome::Refused {
                            index: i,
                            retry_after: until,
                            reset: until,
                        };
                    }
                    out.push((limit - spent - amount, until));
                    writes.push(Write::Counter(name, spent + amount, *end));
                }
            }
        }
        if !need.is_empty() {
            return Outcome::NeedSeed(need);
        }
        // ...then, every check having room, write them all.
        for w in writes {
            match w {
                // A key's state is allocated once; later requests update it.
                Write::Tat(name, next) => match self.tats.get_mut(name) {
                    Some(tat) => *tat = next,
                    None => {
                        self.tats.insert(name.clone(), next);
                    }
                },
                Write::Slot(name) => match self.slots.get_mut(name) {
                    Some(n) => *n += 1,
                    None => {
                        self.slots.insert(name.clone(), 1);
                    }
                },
                Write::Counter(name, value, end) => match self.counters.get_mut(name) {
                    Some(c) => *c = (value, end),
                    None => {
                        self.counters.insert(name.clone(), (value, end));
                    }
                },
            }
        }
        Outcome::Admitted(out)
    }

    fn refund(&mut self, refunds: &[Refund], now: Instant) {
        for r in refunds {
            match r {
                Refund::Rate {
                    name,
                    limit,
                    period,
                    delta,
                } => {
                    let shift = cells(*period, delta.unsigned_abs(), *limit);
                    if *delta < 0 {
                        if let Some(tat) = self.tats.get_mut(name) {
                            *tat = tat.checked_sub(shift).map_or(now, |t| t.max(now));
                        }
                    } else {
                        let tat = self.tats.entry(name.clone()).or_insert(now);
                        *tat = (*tat).max(now) + shift;
                    }
                }
                Refund::Budget { name, delta, .. } => {
                    if let Some((v, _)) = self.counters.get_mut(name) {
                        *v = v.saturating_add_signed(*delta);
                    }
                }
            }
        }
    }

    fn release(&mut self, names: &[String]) {
        for name in names {
            if let Some(n) = self.slots.get_mut(name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.slots.remove(name);
                }
            }
        }
    }
}

/// The time `cost` units take to refill at `limit` per `period`, exact to the
/// nanosecond.
fn cells(period: Duration, cost: u64, limit: u64) -> Duration {
    let ns = period.as_nanos() * u128::from(cost) / u128::from(limit.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Units left when the allowance is used up to `ahead` of `period`.
fn left(period: Duration, ahead: Duration, limit: u64) -> u64 {
    let free = period.saturating_sub(ahead).as_nanos();
    u64::try_from(free * u128::from(limit) / period.as_nanos().max(1)).unwrap_or(0)
}

/// Limits and budgets, counted in this process or shared through Redis.
#[derive(Debug)]
pub struct Limiter {
    local: Mutex<Local>,
    redis: Option<RedisLimiter>,
    replicas: u32,
    fail_mode: FailMode,
    budgets_fail_closed: bool,
    /// Seeds budget counters from usage records.
    store: Option<Store>,
    /// Redis failed recently: use the fail modes until then.
    redis_down_until: Mutex<Option<Instant>>,
    redis_ok: AtomicBool,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(None, 1, FailMode::Local, true, None)
    }
}

/// How long the limiter skips Redis after a failure before trying again.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// Admission of one request; gives its concurrency slots back when dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    backend: Backend,
    slots: Vec<String>,
    /// This admission's own lease id, generated here and never taken from the
    /// client (a client-chosen id shared by several requests would let them
    /// share one lease, and so one concurrency slot).
    lease: String,
    /// The tightest request rate, for the `x-ratelimit-*-requests` headers.
    pub rate: Option<RateInfo>,
    /// Renews the Redis lease while the exchange runs.
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        if self.slots.is_empty() {
            return;
        }
        match (self.backend, &self.limiter.redis) {
            (Backend::Redis, Some(redis)) => redis.release(&self.slots, &self.lease),
            _ => {
                if let Ok(mut local) = self.limiter.local.lock() {
                    local.release(&self.slots);
                }
            }
        }
    }
}

/// Tokens and money reserved for one exchange; settled when it ends.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    backend: Backend,
    /// What was taken: token rates and budgets, with their amounts.
    taken: Vec<Check>,
    /// The prompt, counted before the call.
    pub prompt: u64,
    /// Prompt plus output cap.
    pub tokens: u64,
    /// The worst-case cost; zero without a price.
    pub cost: Usd,
    /// The tightest token rate, for the `x-ratelimit-*-tokens` headers.
    pub rate: Option<RateInfo>,
}

impl Reservation {
    /// Corrects every counter from the worst case to what was used: gives back
    /// what was not, and charges any excess (usage above the estimate).
    pub fn settle(&self, tokens: u64, cost: Usd) {
        let refunds: Vec<Refund> = self
            .taken
            .iter()
            .filter_map(|c| match c {
                Check::Rate {
                    name,
                    limit,
                    period,
                    cost: reserved,
                    ..
                } => {
                    let delta = i128::from(tokens) - i128::from(*reserved);
                    (delta != 0).then(|| Refund::Rate {
                        name: name.clone(),
                        limit: *limit,
                        period: *period,
                        delta: i64::try_from(delta).unwrap_or(if delta < 0 {
                            i64::MIN
                        } else {
                            i64::MAX
                        }),
                    })
                }
                Check::Budget {
                    name,
                    amount,
                    unit,
                    end,
                    ..
                } => {
                    let used = match unit {
                        BudgetUnit::Tokens => tokens,
                        BudgetUnit::Usd => cost.nanos(),
                    };
                    let delta = i128::from(used) - i128::from(*amount);
                    (delta != 0).then(|| Refund::Budget {
                        name: name.clone(),
                        delta: i64::try_from(delta).unwrap_or(0),
                        end: *end,
                    })
                }
                Check::Slot { .. } => None,
            })
            .collect();
        if refunds.is_empty() {
            return;
        }
        match (self.backend, &self.limiter.redis) {
            (Backend::Redis, Some(redis)) => redis.refund(refunds),
            _ => {
                if let Ok(mut local) = self.limiter.local.lock() {
                    local.refund(&refunds, Instant::now());
                }
            }
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Request-rate and concurrency checks of the scopes.
pub fn admission_checks(scopes: &[Scope]) -> Vec<Check> {
    let mut checks = Vec::new();
    for (index, s) in scopes.iter().enumerate() {
        let l = &s.limits;
        if let Some(max) = l.max_concurrent {
            checks.push(Check::Slot {
                name: format!("{}:slots", s.id),
                max,
                scope: index,
            });
        }
        for (limit, period, suffix) in [
            (l.rps, SECOND, "rps"),
            (l.rpm, MINUTE, "rpm"),
            (l.rpd, DAY, "rpd"),
        ] {
            if let Some(limit) = limit {
                checks.push(Check::Rate {
                    name: format!("{}:{suffix}", s.id),
                    limit: u64::from(limit),
                    period,
                    cost: 1,
                    unit: RateUnit::Requests,
                    scope: index,
                });
            }
        }
    }
    checks
}

/// Token-rate and budget checks of the scopes for a request of `tokens`
/// costing at most `cost`, at `unix` seconds.
pub fn reservation_checks(scopes: &[Scope], tokens: u64, cost: Usd, unix: i64) -> Vec<Check> {
    let mut checks = Vec::new();
    for (index, s) in scopes.iter().enumerate() {
        let l = &s.limits;
        for (limit, period, suffix) in [(l.tpm.map(u64::from), MINUTE, "tpm"), (l.tpd, DAY, "tpd")]
        {
            if let Some(limit) = limit {
                checks.push(Check::Rate {
                    name: format!("{}:{suffix}", s.id),
                    limit,
                    period,
                    cost: tokens,
                    unit: RateUnit::Tokens,
                    scope: index,
                });
            }
        }
        for (limit, period, unit, amount) in [
            (
                l.budget_tokens_daily,
                Period::Day,
                BudgetUnit::Tokens,
                tokens,
            ),
            (
                l.budget_tokens_monthly,
                Period::Month,
                BudgetUnit::Tokens,
                tokens,
            ),
            (
                l.budget_usd_daily.map(Usd::nanos),
                Period::Day,
                BudgetUnit::Usd,
                cost.nanos(),
            ),
            (
                l.budget_usd_monthly.map(Usd::nanos),
                Period::Month,
                BudgetUnit::Usd,
                cost.nanos(),
            ),
        ] {
            if let Some(limit) = limit {
                let (start, end, window) = period.window(unix);
                let kind = match unit {
                    BudgetUnit::Tokens => "tok",
                    BudgetUnit::Usd => "usd",
                };
                checks.push(Check::Budget {
                    name: format!("{}:{kind}:{window}", s.id),
                    limit,
                    amount,
                    end,
                    seed: None,
                    unit,
                    scope: index,
                    start,
                    period,
                });
            }
        }
    }
    checks
}

impl Limiter {
    pub fn new(
        redis: Option<RedisLimiter>,
        replicas: u32,
        fail_mode: FailMode,
        budgets_fail_closed: bool,
        store: Option<Store>,
    ) -> Limiter {
        Limiter {
            local: Mutex::default(),
            redis,
            replicas: replicas.max(1),
            fail_mode,
            budgets_fail_closed,
            store,
            redis_down_until: Mutex::new(None),
            redis_ok: AtomicBool::new(true),
        }
    }

    /// For `/readyz`: `None` without Redis, else whether it answers.
    pub async fn redis_health(&self) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let ok = redis.ping().await;
        // The change is logged whoever notices it first: a request or this
        // check.
        if ok {
            self.redis_answered();
        } else {
            self.redis_failed("ping failed", Instant::now());
        }
        Some(ok)
    }

    /// Takes a concurrency slot and a request from every rate of every scope,
    /// or refuses with nothing taken.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: &[Scope],
        now: Instant,
    ) -> Result<Permit, GatewayError> {
        let checks = admission_checks(scopes);
        let mut permit = Permit {
            limiter: self.clone(),
            backend: Backend::Local,
            slots: Vec::new(),
            lease: String::new(),
            rate: None,
            heartbeat: None,
        };
        if checks.is_empty() {
            return Ok(permit);
        }
        permit.lease = format!("lease_{:032x}", rand::random::<u128>());
        let (backend, checks, outcome) = match self.run(checks, &permit.lease, now, false).await? {
            Some(done) => done,
            None => return Ok(permit),
        };
        let Outcome::Admitted(results) = outcome else {
            return Err(refusal(&checks, scopes, &outcome));
        };
        permit.backend = backend;
        permit.slots = checks
            .iter()
            .filter_map(|c| match c {
                Check::Slot { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        permit.rate = tightest(&checks, &results, RateUnit::Requests);
        if let (Backend::Redis, Some(redis), false) =
            (backend, &self.redis, permit.slots.is_empty())
        {
            let redis = redis.clone();
            let slots = permit.slots.clone();
            let lease = permit.lease.clone();
            permit.heartbeat = Some(tokio::spawn(async move {
                let every = redis.lease() / 3;
                loop {
                    tokio::time::sleep(every).await;
                    // A renewal Redis missed is tried at the next beat; the
                    // lease outlives two of them.
                    redis.renew(&slots, &lease).await;
                }
            }));
        }
        Ok(permit)
    }

    /// Reserves `prompt + max_output` tokens (and their worst-case `cost`) from
    /// every token rate and budget of every scope, or refuses with nothing
    /// taken. `None` when no scope limits tokens or money.
    pub async fn reserve(
        self: &Arc<Self>,
        scopes: &[Scope],
        prompt: u64,
        max_output: u64,
        cost: Usd,
        now: Instant,
        unix: i64,
    ) -> Result<Option<Reservation>, GatewayError> {
        let tokens = prompt.saturating_add(max_output);
        let mut checks = reservation_checks(scopes, tokens, cost, unix);
        if checks.is_empty() {
            return Ok(None);
        }
        // What can never fit is a clear error, not a wait that never ends.
        for c in &checks {
            match c {
                Check::Rate { limit, cost, .. } if cost > limit => {
                    let what = c.describe(scopes);
                    return Err(GatewayError::InvalidRequest {
                        message: format!(
                            "this request needs up to {tokens} tokens ({prompt} prompt + {max_output} output), more than the limit of {limit} {what}; lower max_tokens or shorten the prompt"
                        ),
                        param: None,
                    });
                }
                _ => {}
            }
        }
        let mut seeded = false;
        loop {
            let Some((backend, taken, outcome)) = self.run(checks, "", now, true).await? else {
                return Ok(None);
            };
            match outcome {
                Outcome::Admitted(results) => {
                    return Ok(Some(Reservation {
                        limiter: self.clone(),
                        backend,
                        rate: tightest(&taken, &results, RateUnit::Tokens),
                        taken,
                        prompt,
                        tokens,
                        cost,
                    }));
                }
                // Only the executor that asked runs them again: a fallback
                // never holds budgets, so it never asks.
                Outcome::NeedSeed(indices) if !seeded => {
                    seeded = true;
                    checks = taken;
                    self.seed(scopes, &mut checks, &indices).await?;
                }
                Outcome::NeedSeed(_) => return Err(GatewayError::Internal),
                refused => return Err(refusal(&taken, scopes, &refused)),
            }
        }
    }

    /// Reads the period's usage so far from the store into the checks.
    async fn seed(
        &self,
        scopes: &[Scope],
        checks: &mut [Check],
        indices: &[usize],
    ) -> Result<(), GatewayError> {
        for &i in indices {
            if let Some(Check::Budget {
                seed,
                unit,
                scope,
                start,
                ..
            }) = checks.get_mut(i)
            {
                let totals = match (&self.store, &scopes[*scope].owner) {
                    (None, _) => halberd_store::UsageTotals::default(),
                    (Some(store), owner) => {
                        let who = match owner {
                            Owner::Key(id) => halberd_store::UsageScope::Key(id),
                            Owner::User(name) => halberd_store::UsageScope::User(name),
                        };
                        store.usage_totals(who, *start).await.map_err(|e| {
                            tracing::error!(target: "halberd::limits", error = %e, "cannot read usage to seed a budget");
                            budgets_unavailable()
                        })?
                    }
                };
                *seed = Some(match unit {
                    BudgetUnit::Tokens => totals.tokens(),
                    BudgetUnit::Usd => totals.cost.nanos(),
                });
            }
        }
        Ok(())
    }

    /// Runs the checks on Redis, or in this process: without Redis, or per the
    /// fail modes when Redis is unreachable. `None`: admit without taking
    /// anything (fail open).
    async fn run(
        &self,
        checks: Vec<Check>,
        lease: &str,
        now: Instant,
        reserve: bool,
    ) -> Result<Option<(Backend, Vec<Check>, Outcome)>, GatewayError> {
        let unix = halberd_store::now_unix();
        let Some(redis) = &self.redis else {
            let outcome = self.run_local(&checks, now, unix)?;
            return Ok(Some((Backend::Local, checks, outcome)));
        };
        if !self.cooling(now) {
            match redis.run(&checks, lease).await {
                Ok(outcome) => {
                    self.redis_answered();
                    return Ok(Some((Backend::Redis, checks, outcome)));
                }
                Err(error) => self.redis_failed(&error, now),
            }
        }
        // Redis is unreachable: budgets first, then rates and slots.
        let has_budget = checks.iter().any(|c| matches!(c, Check::Budget { .. }));
        if has_budget && reserve && self.budgets_fail_closed {
            return Err(budgets_unavailable());
        }
        let rest: Vec<Check> = checks
            .into_iter()
            .filter(|c| !matches!(c, Check::Budget { .. }))
            .collect();
        if rest.is_empty() {
            return Ok(None);
        }
        match self.fail_mode {
            FailMode::Open => Ok(None),
            FailMode::Closed => Err(limits_unavailable()),
            FailMode::Local => {
                let share = |n: u64| n.div_ceil(u64::from(self.replicas)).max(1);
                let mut shared = rest;
                for c in &mut shared {
                    match c {
                        Check::Rate { limit, .. } => *limit = share(*limit),
                        Check::Slot { max, .. } => {
                            *max = u32::try_from(share(u64::from(*max))).unwrap_or(*max);
                        }
                        Check::Budget { .. } => {}
                    }
                }
                let outcome = self.run_local(&shared, now, unix)?;
                Ok(Some((Backend::Local, shared, outcome)))
            }
        }
    }

    fn run_local(
        &self,
        checks: &[Check],
        now: Instant,
        unix: i64,
    ) -> Result<Outcome, GatewayError> {
        let mut local = self.local.lock().map_err(|_| GatewayError::Internal)?;
        Ok(local.run(checks, now, unix))
    }

    fn cooling(&self, now: Instant) -> bool {
        self.redis_down_until
            .lock()
            .map(|until| until.is_some_and(|t| now < t))
            .unwrap_or(false)
    }

    fn redis_answered(&self) {
        if !self.redis_ok.swap(true, Ordering::Relaxed) {
            tracing::info!(target: "halberd::limits", "redis is back: limits are shared again");
        }
    }

    /// Logs the change once and skips Redis for `REDIS_RETRY`.
    fn redis_failed(&self, error: &str, now: Instant) {
        if self.redis_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(target: "halberd::limits", %error, fail_mode = ?self.fail_mode, budgets_fail_closed = self.budgets_fail_closed, "redis unreachable: limits follow the fail modes");
        }
        if let Ok(mut until) = self.redis_down_until.lock() {
            *until = Some(now + REDIS_RETRY);
        }
    }
}

/// The rate of `unit` with the fewest units left, for the headers.
fn tightest(checks: &[Check], results: &[(u64, Duration)], unit: RateUnit) -> Option<RateInfo> {
    checks
        .iter()
        .zip(results)
        .filter_map(|(c, (remaining, reset))| match c {
            Check::Rate { limit, unit: u, .. } if *u == unit => Some(RateInfo {
                unit,
                limit: *limit,
                remaining: *remaining,
                reset: *reset,
            }),
            _ => None,
        })
        .min_by_key(|r| (r.remaining, std::cmp::Reverse(r.reset)))
}

/// The error for a refused check.
fn refusal(checks: &[Check], scopes: &[Scope], outcome: &Outcome) -> GatewayError {
    let Outcome::Refused {
        index,
        retry_after,
        reset,
    } = outcome
    else {
        return GatewayError::Internal;
    };
    let Some(check) = checks.get(*index) else {
        return GatewayError::Internal;
    };
    let what = check.describe(scopes);
    let limit_name = check.limit();
    let scope = match scopes.get(check.scope()).map(|s| &s.owner) {
        Some(Owner::User(_)) => "user",
        _ => "key",
    };
    match check {
        Check::Rate { limit, unit, .. } => GatewayError::RateLimited {
            what,
            limit: limit_name,
            scope,
            retry_after: *retry_after,
            rate: Some(RateInfo {
                unit: *unit,
                limit: *limit,
                remaining: 0,
                reset: *reset,
            }),
        },
        Check::Slot { .. } => GatewayError::RateLimited {
            what,
            limit: limit_name,
            scope,
            retry_after: *retry_after,
            rate: None,
        },
        Check::Budget {
            limit,
            amount,
            unit,
            ..
        } => {
            let need = match unit {
                BudgetUnit::Tokens => {
                    format!("up to {amount} tokens of a budget of {limit}")
                }
                BudgetUnit::Usd => {
                    format!("up to ${} of a budget of ${}", Usd(*amount), Usd(*limit))
                }
            };
            // Say which: a worst case larger than the whole budget never
            // fits (lower max_tokens); otherwise what is left is too little
            // for this request's worst case, which is not the same as spent.
            let detail = if amount > limit {
                format!(
                    "this request's worst case alone is more than the whole {what} ({need}); lower max_tokens"
                )
            } else {
                format!(
                    "the {what} has too little left for this request's worst case ({need}); a smaller max_tokens may fit"
                )
            };
            GatewayError::BudgetExceeded {
                what,
                limit: limit_name,
                scope,
                detail,
                retry_after: *retry_after,
            }
        }
    }
}

fn limits_unavailable() -> GatewayError {
    GatewayError::Unavailable {
        message: "rate limits cannot be checked right now; retry shortly".into(),
    }
}

fn budgets_unavailable() -> GatewayError {
    GatewayError::Unavailable {
        message: "budgets cannot be checked right now; retry shortly".into(),
    }
}

/// Tokens reserved for each content part we cannot count (an image, audio, a
/// file): about what one large image costs on either provider. A PDF of many
/// pages costs more; settlement charges the difference.
pub const OPAQUE_PART_TOKENS: u64 = 1_600;

/// Tokens reserved for history the provider adds from its own store
/// (`previous_response_id`, `conversation`), which we never see.
pub const SERVER_HISTORY_TOKENS: u64 = 8_192;

/// The prompt tokens a request will be billed for that its text does not
/// show: estimates for opaque parts and server-side history. (Token ids are
/// counted exactly with the text.)
pub fn uncounted_input(exchange: &halberd_protocol::Exchange) -> u64 {
    let opaque = match exchange.api {
        // An embeddings request's opaque parts are its token-id arrays.
        halberd_protocol::Api::Embeddings => 0,
        _ => (exchange.opaque_parts as u64).saturating_mul(OPAQUE_PART_TOKENS),
    };
    let history = if exchange.server_history {
        SERVER_HISTORY_TOKENS
    } else {
        0
    };
    opaque.saturating_add(history)
}

/// The worst-case cost of a request, or an error when a cost budget applies and
/// the model has no price.
pub fn worst_case_cost(
    scopes: &[Scope],
    price: Option<Price>,
    model: &str,
    prompt: u64,
    max_output: u64,
) -> Result<Usd, GatewayError> {
    match price {
        Some(p) => Ok(p.reservation(prompt, max_output)),
        None if scopes.iter().any(|s| s.limits.has_cost_budget()) => {
            Err(GatewayError::ModelNotPriced {
                model: model.to_owned(),
            })
        }
        None => Ok(Usd::ZERO),
    }
}

/// `x-ratelimit-limit-{unit}`, `-remaining-{unit}`, `-reset-{unit}`, where the
/// unit is `requests` or `tokens`.
pub fn set_rate_headers(
    headers: &mut http::HeaderMap,
    rate: &RateInfo,
    dialect: crate::error::Dialect,
) {
    if dialect == crate::error::Dialect::Anthropic {
        // Anthropic's names, and its reset as the RFC 3339 time at which
        // the allowance is whole again.
        let (limit, remaining, reset) = match rate.unit {
            RateUnit::Requests => (
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ),
            RateUnit::Tokens => (
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ),
        };
        headers.insert(limit, http::HeaderValue::from(rate.limit));
        headers.insert(remaining, http::HeaderValue::from(rate.remaining));
        let at = halberd_store::now_unix()
            .saturating_add(i64::try_from(rate.reset.as_secs()).unwrap_or(i64::MAX))
            .saturating_add(i64::from(rate.reset.subsec_nanos() > 0));
        if let Ok(v) = http::HeaderValue::from_str(&rfc3339(at)) {
            headers.insert(reset, v);
        }
        return;
    }
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

/// `2026-12-07T08:54:08Z` for Unix seconds (UTC; the civil-from-days
/// algorithm, valid for every date after 1970).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// OpenAI's duration notation for `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`,
/// `2h5m0s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64().ceil() as u64;
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
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
            // A client may send both names and a provider may read either:
            // each is capped, and the reservation counts the larger.
            let mut effective = None;
            if let Some(object) = body.as_object_mut() {
                for f in ["max_tokens", "max_completion_tokens"] {
                    if let Some(v) = object.get_mut(f)
                        && let Some(asked) = v.as_u64()
                    {
                        let capped = asked.min(cap);
                        if capped != asked {
                            *v = serde_json::Value::from(capped);
                        }
                        effective = Some(effective.map_or(capped, |e: u64| e.max(capped)));
                    }
                }
                if effective.is_none() {
                    object.insert("max_completion_tokens".into(), serde_json::Value::from(cap));
                }
            }
            let effective = effective.unwrap_or(cap);
            return effective;
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
