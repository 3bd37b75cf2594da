//! Where a request's time goes: the wall time of each pipeline stage, summed
//! since the process started (two relaxed atomic adds per stage, about 40 ns
//! per request in all), read from the admin API (`GET /admin/stages`) by
//! `bench/load.sh` to print a per-stage breakdown next to its load figures.
//!
//! Wall time, not CPU time: `upstream` includes the provider's own time and
//! the network, and any stage includes time spent waiting for a worker
//! thread under load, which is what a client waits for too.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// The stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The key read and checked (user limits included).
    Authenticate,
    /// Rate limits and concurrency.
    Admit,
    /// The body read from the client.
    Read,
    /// The body parsed and its shape checked.
    Decode,
    /// Sensitive-data and injection inspection of the request, and the
    /// injection transforms.
    Inspect,
    /// The route, token count, usage slot and token reservation.
    Route,
    /// From sending the request upstream to its response head.
    Upstream,
    /// From the request's head to the response head the handler returns.
    Handler,
}

const ALL: [Stage; 8] = [
    Stage::Authenticate,
    Stage::Admit,
    Stage::Read,
    Stage::Decode,
    Stage::Inspect,
    Stage::Route,
    Stage::Upstream,
    Stage::Handler,
];

struct Totals {
    nanos: [AtomicU64; 8],
    count: [AtomicU64; 8],
}

static TOTALS: Totals = Totals {
    nanos: [const { AtomicU64::new(0) }; 8],
    count: [const { AtomicU64::new(0) }; 8],
};

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Admit => "admit",
            Stage::Read => "read",
            Stage::Decode => "decode",
            Stage::Inspect => "inspect",
            Stage::Route => "route",
            Stage::Upstream => "upstream",
            Stage::Handler => "handler",
        }
    }

    /// Adds the time since `since` to this stage, and returns now (the next
    /// stage's start).
    pub fn done(self, since: Instant) -> Instant {
        let now = Instant::now();
        let nanos =
            u64::try_from(now.saturating_duration_since(since).as_nanos()).unwrap_or(u64::MAX);
        let i = self as usize;
        TOTALS.nanos[i].fetch_add(nanos, Ordering::Relaxed);
        TOTALS.count[i].fetch_add(1, Ordering::Relaxed);
        now
    }
}

/// Every stage's count and mean in microseconds, in pipeline order.
pub fn snapshot() -> serde_json::Value {
    let stages: Vec<serde_json::Value> = ALL
        .iter()
        .map(|&s| {
            let i = s as usize;
            let nanos = TOTALS.nanos[i].load(Ordering::Relaxed);
            let count = TOTALS.count[i].load(Ordering::Relaxed);
            let mean_us = if count == 0 {
                0.0
            } else {
                nanos as f64 / count as f64 / 1000.0
            };
            serde_json::json!({
                "stage": s.name(),
                "count": count,
                "total_us": nanos / 1_000,
                "mean_us": (mean_us * 10.0).round() / 10.0,
            })
        })
        .collect();
    serde_json::json!({ "data": stages })
}
