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
//! Across replicas these limits multiply by the replica count until the Redis
//! limiter (issue 3) replaces this in-process one behind the same interface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use halberd_store::KeyRecord;

use crate::error::GatewayError;

/// Per-key counters of this process.
#[derive(Debug, Default)]
pub struct Limiter {
    keys: Mutex<HashMap<String, KeyState>>,
}

#[derive(Debug, Clone, Copy)]
struct KeyState {
    /// GCRA theoretical arrival time.
    tat: Option<Instant>,
    in_flight: u32,
}

/// The request rate state reported in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Until the key could send its whole minute again.
    pub reset: Duration,
}

/// Admission of one request; gives its concurrency slot back when dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    key_id: String,
    holds_slot: bool,
    pub rate: Option<RateInfo>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.holds_slot {
            self.limiter.release(&self.key_id);
        }
    }
}

/// Entries kept before idle keys are swept.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    pub fn admit(self: &Arc<Self>, key: &KeyRecord, now: Instant) -> Result<Permit, GatewayError> {
        let limits = key.limits;
        if limits.is_empty() {
            return Ok(Permit {
                limiter: self.clone(),
                key_id: key.id.clone(),
                holds_slot: false,
                rate: None,
            });
        }
        let mut keys = self.keys.lock().map_err(|_| GatewayError::Internal)?;
        if keys.len() >= SWEEP_AT {
            keys.retain(|_, s| s.in_flight > 0 || s.tat.is_some_and(|t| t > now));
        }
        let state = keys.entry(key.id.clone()).or_insert(KeyState {
            tat: None,
            in_flight: 0,
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
            holds_slot,
            rate,
        })
    }

    fn release(&self, key_id: &str) {
        if let Ok(mut keys) = self.keys.lock()
            && let Some(state) = keys.get_mut(key_id)
        {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

/// `x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests`.
pub fn set_rate_headers(headers: &mut http::HeaderMap, rate: &RateInfo) {
    headers.insert(
        "x-ratelimit-limit-requests",
        http::HeaderValue::from(rate.limit),
    );
    headers.insert(
        "x-ratelimit-remaining-requests",
        http::HeaderValue::from(rate.remaining),
    );
    if let Ok(v) = http::HeaderValue::from_str(&reset_text(rate.reset)) {
        headers.insert("x-ratelimit-reset-requests", v);
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
