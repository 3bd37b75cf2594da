//! The admit stage alone: microseconds per decision at p50 and p99, in process
//! and through Redis (`HALBERD_BENCH_REDIS_URL`, e.g. redis://127.0.0.1:6379).
//! A latency distribution, not a mean, so this is a plain timing loop rather
//! than criterion.
//!
//!   cargo bench -p halberd-gateway --bench admit
//!   HALBERD_BENCH_REDIS_URL=redis://127.0.0.1:6379 cargo bench -p halberd-gateway --bench admit

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use halberd_gateway::pipeline::admit::{FailMode, Limiter, Scope, redis::RedisLimiter, scopes};
use halberd_store::{KeyLimits, KeyRecord, Usd};

fn key(i: usize) -> KeyRecord {
    KeyRecord {
        id: format!("bench{i:06}"),
        name: "bench".into(),
        user: Some(format!("user{}", i % 100)),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        rotated_to: None,
        allowed_models: vec![],
        allowed_endpoints: vec![],
        policy: None,
        metadata: serde_json::json!({}),
        limits: KeyLimits {
            rpm: Some(1_000_000),
            max_concurrent: Some(1_000),
            tpm: Some(4_000_000_000),
            budget_usd_daily: Some(Usd(u64::MAX / 4)),
            ..KeyLimits::default()
        },
    }
}

/// The key's scope and its user's (a per-user rate and monthly cost budget):
/// every admission checks both.
fn key_scopes(key: &KeyRecord) -> Vec<Scope> {
    let user = KeyLimits {
        rpm: Some(10_000_000),
        budget_usd_monthly: Some(Usd(u64::MAX / 4)),
        ..KeyLimits::default()
    };
    scopes(key, &KeyLimits::default(), Some(&user))
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<44} n {:>7}  p50 {:>7.2} µs  p99 {:>7.2} µs  max {:>8.2} µs",
        samples.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6
    );
}

async fn run(limiter: Arc<Limiter>, keys: &[Vec<Scope>], n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let start = Instant::now();
        let permit = limiter
            .admit(key, tokio::time::Instant::now())
            .await
            .expect("admitted");
        samples.push(start.elapsed());
        drop(permit);
    }
    samples
}

/// A 4 KiB prompt of ordinary prose, for the tokenizer's share of admission.
fn prompt() -> String {
    let sentence =
        "Please summarise the attached meeting notes and list the action items for each team. ";
    sentence.repeat(4096 / sentence.len() + 1)[..4096].to_owned()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<Vec<Scope>> = (0..1_000).map(|i| key_scopes(&key(i))).collect();
    rt.block_on(async {
        let local = Arc::new(Limiter::new(None, 1, FailMode::Local, true, None));
        run(local.clone(), &keys, 10_000).await;
        report(
            "in process (key + user scopes, 1000 keys)",
            run(local.clone(), &keys, 200_000).await,
        );

        // Token admission: count the prompt, reserve, settle.
        let text = prompt();
        let encoding = halberd_guard::tokens::Encoding::O200k;
        encoding.count(&text);
        let mut counting = Vec::new();
        let mut reserving = Vec::new();
        for i in 0..20_000 {
            let key = &keys[i % keys.len()];
            let start = Instant::now();
            let tokens = encoding.count_parts([text.as_str()]);
            counting.push(start.elapsed());
            let start = Instant::now();
            let grant = local
                .reserve(
                    key,
                    tokens,
                    100,
                    Usd(5_000_000),
                    tokio::time::Instant::now(),
                    halberd_store::now_unix(),
                )
                .await
                .unwrap()
                .expect("token limit set");
            grant.settle(tokens + 10, Usd(4_000_000));
            reserving.push(start.elapsed());
        }
        report("count a 4 KiB prompt (tiktoken o200k)", counting);
        report(
            "reserve + settle (tpm, 2 cost budgets), in process",
            reserving,
        );

        match std::env::var("HALBERD_BENCH_REDIS_URL") {
            Ok(url) => {
                let redis =
                    RedisLimiter::new(&url, Duration::from_secs(600), Duration::from_secs(1))
                        .unwrap();
                let shared = Arc::new(Limiter::new(Some(redis), 1, FailMode::Closed, true, None));
                run(shared.clone(), &keys, 2_000).await;
                report(
                    "redis, one client (key + user scopes)",
                    run(shared.clone(), &keys, 20_000).await,
                );
                let tasks: Vec<_> = (0..16)
                    .map(|t| {
                        let shared = shared.clone();
                        let keys: Vec<Vec<Scope>> =
                            keys.iter().skip(t).step_by(16).cloned().collect();
                        tokio::spawn(async move { run(shared, &keys, 5_000).await })
                    })
                    .collect();
                let mut all = Vec::new();
                for task in tasks {
                    all.extend(task.await.unwrap());
                }
                report("redis, 16 concurrent clients", all);
                let mut reserving = Vec::new();
                for i in 0..10_000 {
                    let key = &keys[i % keys.len()];
                    let start = Instant::now();
                    let grant = shared
                        .reserve(
                            key,
                            1000,
                            100,
                            Usd(5_000_000),
                            tokio::time::Instant::now(),
                            halberd_store::now_unix(),
                        )
                        .await
                        .unwrap()
                        .expect("limits set");
                    reserving.push(start.elapsed());
                    grant.settle(1010, Usd(4_000_000));
                }
                report("redis, reserve (tpm, 2 cost budgets)", reserving);
            }
            Err(_) => println!("(set HALBERD_BENCH_REDIS_URL to measure the Redis limiter)"),
        }
    });
}
