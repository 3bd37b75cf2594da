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

use halberd_gateway::pipeline::admit::{FailMode, Limiter, redis::RedisLimiter};
use halberd_store::{KeyLimits, KeyRecord};

fn key(i: usize) -> KeyRecord {
    KeyRecord {
        id: format!("bench{i:06}"),
        name: "bench".into(),
        user: None,
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
        },
    }
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

async fn run(limiter: Arc<Limiter>, keys: &[KeyRecord], n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let start = Instant::now();
        let permit = limiter
            .admit(key, "bench-request", tokio::time::Instant::now())
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
    let keys: Vec<KeyRecord> = (0..1_000).map(key).collect();
    rt.block_on(async {
        let local = Arc::new(Limiter::new(None, 1, FailMode::Local));
        run(local.clone(), &keys, 10_000).await;
        report(
            "in process (rpm + concurrency, 1000 keys)",
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
                .reserve_tokens(key, tokens, 100, tokio::time::Instant::now())
                .await
                .unwrap()
                .expect("token limit set");
            grant.settle(tokens + 10);
            reserving.push(start.elapsed());
        }
        report("count a 4 KiB prompt (tiktoken o200k)", counting);
        report("reserve + settle tokens, in process", reserving);

        match std::env::var("HALBERD_BENCH_REDIS_URL") {
            Ok(url) => {
                let redis =
                    RedisLimiter::new(&url, Duration::from_secs(600), Duration::from_secs(1))
                        .unwrap();
                let shared = Arc::new(Limiter::new(Some(redis), 1, FailMode::Closed));
                run(shared.clone(), &keys, 2_000).await;
                report(
                    "redis, one client (rpm + concurrency)",
                    run(shared.clone(), &keys, 20_000).await,
                );
                let tasks: Vec<_> = (0..16)
                    .map(|t| {
                        let shared = shared.clone();
                        let keys: Vec<KeyRecord> =
                            keys.iter().skip(t).step_by(16).cloned().collect();
                        tokio::spawn(async move { run(shared, &keys, 5_000).await })
                    })
                    .collect();
                let mut all = Vec::new();
                for task in tasks {
                    all.extend(task.await.unwrap());
                }
                report("redis, 16 concurrent clients", all);
            }
            Err(_) => println!("(set HALBERD_BENCH_REDIS_URL to measure the Redis limiter)"),
        }
    });
}
