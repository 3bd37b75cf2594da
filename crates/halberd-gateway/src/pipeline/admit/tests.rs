use std::sync::Arc;
use std::time::Duration;

use halberd_store::{KeyLimits, KeyRecord};
use tokio::time::Instant;

use super::{Limiter, reset_text};
use crate::error::GatewayError;

fn key(rpm: Option<u32>, max_concurrent: Option<u32>) -> KeyRecord {
    KeyRecord {
        id: "k1".into(),
        name: "k".into(),
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
            rpm,
            max_concurrent,
            tpm: None,
        },
    }
}

#[test]
fn a_minute_of_requests_at_once_then_one_per_interval() {
    let limiter = Arc::new(Limiter::default());
    let key = key(Some(20), None);
    let t0 = Instant::now();
    let admitted = (0..60)
        .filter(|_| limiter.admit_local(&key, key.limits, t0).is_ok())
        .count();
    assert_eq!(admitted, 20);
    // One interval (3 s) later exactly one more fits.
    let t1 = t0 + Duration::from_secs(3);
    assert!(limiter.admit_local(&key, key.limits, t1).is_ok());
    match limiter.admit_local(&key, key.limits, t1) {
        Err(GatewayError::RateLimited {
            retry_after, rate, ..
        }) => {
            assert_eq!(retry_after, Duration::from_secs(3));
            assert_eq!(rate.map(|r| r.remaining), Some(0));
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // After a full minute of silence the whole minute is available again.
    let t2 = t1 + Duration::from_secs(63);
    let admitted = (0..60)
        .filter(|_| limiter.admit_local(&key, key.limits, t2).is_ok())
        .count();
    assert_eq!(admitted, 20);
}

#[test]
fn remaining_and_reset_count_down() {
    let limiter = Arc::new(Limiter::default());
    let key = key(Some(3), None);
    let t = Instant::now();
    let remaining: Vec<u32> = (0..3)
        .map(|_| {
            limiter
                .admit_local(&key, key.limits, t)
                .unwrap()
                .rate
                .unwrap()
                .remaining
        })
        .collect();
    assert_eq!(remaining, [2, 1, 0]);
    assert!(
        key_rate(&limiter, &key, t).is_none(),
        "the fourth is refused"
    );
}

fn key_rate(limiter: &Arc<Limiter>, key: &KeyRecord, t: Instant) -> Option<super::RateInfo> {
    limiter
        .admit_local(key, key.limits, t)
        .ok()
        .and_then(|p| p.rate)
}

#[test]
fn concurrency_slots_come_back_when_permits_drop() {
    let limiter = Arc::new(Limiter::default());
    let key = key(None, Some(2));
    let t = Instant::now();
    let a = limiter.admit_local(&key, key.limits, t).unwrap();
    let _b = limiter.admit_local(&key, key.limits, t).unwrap();
    assert!(matches!(
        limiter.admit_local(&key, key.limits, t),
        Err(GatewayError::RateLimited {
            what: "concurrent requests",
            ..
        })
    ));
    drop(a);
    assert!(limiter.admit_local(&key, key.limits, t).is_ok());
}

#[test]
fn a_request_refused_by_rate_gives_its_slot_back() {
    let limiter = Arc::new(Limiter::default());
    let key = key(Some(1), Some(2));
    let t = Instant::now();
    let _first = limiter.admit_local(&key, key.limits, t).unwrap();
    for _ in 0..10 {
        assert!(limiter.admit_local(&key, key.limits, t).is_err());
    }
    // The second slot is still free: the refusals did not take it.
    let later = t + Duration::from_secs(60);
    assert!(limiter.admit_local(&key, key.limits, later).is_ok());
}

#[test]
fn reset_uses_openai_notation() {
    assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
    assert_eq!(reset_text(Duration::from_millis(1500)), "2s");
    assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
}

fn token_key(tpm: u32) -> KeyRecord {
    let mut k = key(None, None);
    k.limits.tpm = Some(tpm);
    k
}

#[tokio::test]
async fn token_reservations_hold_until_settled() {
    let limiter = Arc::new(Limiter::default());
    let key = token_key(1_000);
    let t = Instant::now();
    let first = limiter
        .reserve_tokens(&key, 100, 500, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.reserved, 600);
    assert_eq!(first.rate.remaining, 400);
    // A second reservation of 600 does not fit while the first is open.
    assert!(matches!(
        limiter.reserve_tokens(&key, 100, 500, t).await,
        Err(GatewayError::RateLimited {
            what: "tokens per minute",
            ..
        })
    ));
    // The first used 150 tokens: 450 come back, and 600 fit again.
    first.settle(150);
    assert!(
        limiter
            .reserve_tokens(&key, 100, 500, Instant::now())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_request_larger_than_the_limit_is_a_client_error() {
    let limiter = Arc::new(Limiter::default());
    let small = token_key(100);
    assert!(matches!(
        limiter
            .reserve_tokens(&small, 50, 100, Instant::now())
            .await,
        Err(GatewayError::InvalidRequest { .. })
    ));
    let unlimited = key(None, None);
    assert!(
        limiter
            .reserve_tokens(&unlimited, 50, 100, Instant::now())
            .await
            .unwrap()
            .is_none()
    );
}
