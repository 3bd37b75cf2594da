use std::sync::Arc;
use std::time::Duration;

use halberd_store::{KeyLimits, KeyRecord, Usd};
use tokio::time::Instant;

use super::{Check, Limiter, Outcome, Scope, reset_text, scopes};
use crate::error::GatewayError;

fn key(limits: KeyLimits) -> KeyRecord {
    KeyRecord {
        id: "K1".into(),
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
        limits,
    }
}

fn key_scope(limits: KeyLimits) -> Vec<Scope> {
    scopes(&key(limits), &KeyLimits::default(), None)
}

fn rpm(n: u32) -> KeyLimits {
    KeyLimits {
        rpm: Some(n),
        ..KeyLimits::default()
    }
}

fn admitted(limiter: &Arc<Limiter>, s: &[Scope], t: Instant) -> bool {
    futures_util::FutureExt::now_or_never(limiter.admit(s, t))
        .expect("the local limiter never waits")
        .is_ok()
}

fn admit(limiter: &Arc<Limiter>, s: &[Scope], t: Instant) -> Result<super::Permit, GatewayError> {
    futures_util::FutureExt::now_or_never(limiter.admit(s, t)).expect("no wait")
}

#[test]
fn a_minute_of_requests_at_once_then_one_per_interval() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(rpm(20));
    let t0 = Instant::now();
    assert_eq!((0..60).filter(|_| admitted(&limiter, &s, t0)).count(), 20);
    // One interval (3 s) later exactly one more fits.
    let t1 = t0 + Duration::from_secs(3);
    assert!(admitted(&limiter, &s, t1));
    match admit(&limiter, &s, t1) {
        Err(GatewayError::RateLimited {
            retry_after,
            rate,
            what,
            limit,
            scope,
        }) => {
            assert_eq!((limit, scope), ("rpm", "key"));
            assert_eq!(retry_after, Duration::from_secs(3));
            assert_eq!(rate.map(|r| r.remaining), Some(0));
            assert_eq!(what, "requests per minute of this API key");
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // After a full minute of silence the whole minute is available again.
    let t2 = t1 + Duration::from_secs(63);
    assert_eq!((0..60).filter(|_| admitted(&limiter, &s, t2)).count(), 20);
}

#[test]
fn every_rate_of_a_scope_applies() {
    let limiter = Arc::new(Limiter::default());
    // 2 per second, 5 per minute, 6 per day.
    let s = key_scope(KeyLimits {
        rps: Some(2),
        rpm: Some(5),
        rpd: Some(6),
        ..KeyLimits::default()
    });
    let t = Instant::now();
    assert_eq!(
        (0..10).filter(|_| admitted(&limiter, &s, t)).count(),
        2,
        "per second"
    );
    let t = t + Duration::from_secs(1);
    assert_eq!((0..10).filter(|_| admitted(&limiter, &s, t)).count(), 2);
    let t = t + Duration::from_secs(1);
    assert_eq!(
        (0..10).filter(|_| admitted(&limiter, &s, t)).count(),
        1,
        "per minute"
    );
    let t = t + Duration::from_secs(60);
    assert_eq!(
        (0..10).filter(|_| admitted(&limiter, &s, t)).count(),
        1,
        "per day"
    );
    match admit(&limiter, &s, t + Duration::from_secs(3600)) {
        Err(GatewayError::RateLimited { what, .. }) => {
            assert_eq!(what, "requests per day of this API key");
        }
        other => panic!("expected the daily limit, got {other:?}"),
    }
}

#[test]
fn remaining_reports_the_tightest_rate() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        rpm: Some(3),
        rpd: Some(100),
        ..KeyLimits::default()
    });
    let t = Instant::now();
    let remaining: Vec<u64> = (0..3)
        .map(|_| admit(&limiter, &s, t).unwrap().rate.unwrap().remaining)
        .collect();
    assert_eq!(remaining, [2, 1, 0]);
    assert!(!admitted(&limiter, &s, t), "the fourth is refused");
}

#[test]
fn concurrency_slots_come_back_when_permits_drop() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        max_concurrent: Some(2),
        ..KeyLimits::default()
    });
    let t = Instant::now();
    let a = admit(&limiter, &s, t).unwrap();
    let _b = admit(&limiter, &s, t).unwrap();
    assert!(matches!(
        admit(&limiter, &s, t),
        Err(GatewayError::RateLimited { what, .. }) if what == "concurrent requests of this API key"
    ));
    drop(a);
    assert!(admitted(&limiter, &s, t));
}

#[test]
fn a_refused_request_takes_nothing_from_any_limit() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        rpm: Some(1),
        max_concurrent: Some(2),
        ..KeyLimits::default()
    });
    let t = Instant::now();
    let _first = admit(&limiter, &s, t).unwrap();
    for _ in 0..10 {
        assert!(!admitted(&limiter, &s, t));
    }
    // The second slot is still free: the refusals did not take it.
    assert!(admitted(&limiter, &s, t + Duration::from_secs(60)));
}

fn owned_by(user: &str, limits: KeyLimits) -> KeyRecord {
    let mut k = key(limits);
    k.user = Some(user.into());
    k
}

#[test]
fn user_limits_apply_across_the_users_keys() {
    let limiter = Arc::new(Limiter::default());
    let user = rpm(3);
    let mut a = owned_by("ann", rpm(2));
    let mut b = owned_by("ann", KeyLimits::default());
    a.id = "KA".into();
    b.id = "KB".into();
    let sa = scopes(&a, &KeyLimits::default(), Some(&user));
    let sb = scopes(&b, &KeyLimits::default(), Some(&user));
    assert_eq!(sa.len(), 2);
    assert_eq!(sb.len(), 1, "a key without limits has only its user's");
    let t = Instant::now();
    // Key A's own limit is 2; the user's 3 are shared with key B.
    assert_eq!((0..5).filter(|_| admitted(&limiter, &sa, t)).count(), 2);
    assert_eq!((0..5).filter(|_| admitted(&limiter, &sb, t)).count(), 1);
    match admit(&limiter, &sb, t) {
        Err(GatewayError::RateLimited {
            what, limit, scope, ..
        }) => {
            assert_eq!(what, "requests per minute of user \"ann\"");
            // The log fields name the limit and the kind of scope, not the user.
            assert_eq!((limit, scope), ("rpm", "user"));
        }
        other => panic!("expected the user's limit, got {other:?}"),
    }
    // A user refusal takes nothing from the key: after the user's window
    // refills by one, key A still has no room (its own 2 are used) but B does.
    let later = t + Duration::from_secs(20);
    assert!(!admitted(&limiter, &sa, later));
    assert!(admitted(&limiter, &sb, later));
}

#[test]
fn a_keys_own_limits_override_its_policys() {
    let policy = KeyLimits {
        rpm: Some(10),
        tpm: Some(1000),
        ..KeyLimits::default()
    };
    let s = scopes(&key(rpm(50)), &policy, None);
    assert_eq!(s[0].limits.rpm, Some(50));
    assert_eq!(s[0].limits.tpm, Some(1000));
    assert!(scopes(&key(KeyLimits::default()), &KeyLimits::default(), None).is_empty());
}

#[test]
fn reset_uses_openai_notation() {
    assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
    assert_eq!(reset_text(Duration::from_millis(1500)), "2s");
    assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
    assert_eq!(reset_text(Duration::from_secs(7500)), "2h5m0s");
}

fn reserve(
    limiter: &Arc<Limiter>,
    s: &[Scope],
    prompt: u64,
    max_output: u64,
    cost: Usd,
) -> Result<Option<super::Reservation>, GatewayError> {
    futures_util::FutureExt::now_or_never(limiter.reserve(
        s,
        prompt,
        max_output,
        cost,
        Instant::now(),
        1_795_675_215,
    ))
    .expect("no store: no wait")
}

#[test]
fn token_reservations_hold_until_settled() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        tpm: Some(1_000),
        ..KeyLimits::default()
    });
    let first = reserve(&limiter, &s, 100, 500, Usd::ZERO).unwrap().unwrap();
    assert_eq!(first.tokens, 600);
    assert_eq!(first.rate.unwrap().remaining, 400);
    // A second reservation of 600 does not fit while the first is open.
    assert!(matches!(
        reserve(&limiter, &s, 100, 500, Usd::ZERO),
        Err(GatewayError::RateLimited { what, .. }) if what == "tokens per minute of this API key"
    ));
    // The first used 150 tokens: 450 come back, and 600 fit again.
    first.settle(150, Usd::ZERO);
    assert!(
        reserve(&limiter, &s, 100, 500, Usd::ZERO)
            .unwrap()
            .is_some()
    );
}

#[test]
fn usage_above_the_reservation_is_charged_to_the_token_rate() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        tpm: Some(1_000),
        ..KeyLimits::default()
    });
    // 200 reserved, 700 used (a provider that counted more than the
    // estimate): the rate is charged the 500 beyond the reservation.
    let first = reserve(&limiter, &s, 100, 100, Usd::ZERO).unwrap().unwrap();
    first.settle(700, Usd::ZERO);
    // 300 remain: 300 fits, 301 does not.
    assert!(matches!(
        reserve(&limiter, &s, 1, 300, Usd::ZERO),
        Err(GatewayError::RateLimited { .. })
    ));
    let fits = reserve(&limiter, &s, 100, 200, Usd::ZERO).unwrap().unwrap();
    assert_eq!(fits.rate.unwrap().remaining, 0);
}

#[test]
fn a_request_larger_than_a_token_rate_is_a_client_error() {
    let limiter = Arc::new(Limiter::default());
    let small = key_scope(KeyLimits {
        tpm: Some(100),
        ..KeyLimits::default()
    });
    assert!(matches!(
        reserve(&limiter, &small, 50, 100, Usd::ZERO),
        Err(GatewayError::InvalidRequest { .. })
    ));
    assert!(
        reserve(&limiter, &key_scope(rpm(5)), 50, 100, Usd::ZERO)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_cost_budget_is_never_exceeded_by_concurrent_reservations() {
    let limiter = Arc::new(Limiter::default());
    // $1 a day; each request may cost up to $0.30 and really costs $0.20.
    let s = key_scope(KeyLimits {
        budget_usd_daily: Some("1".parse().unwrap()),
        ..KeyLimits::default()
    });
    let worst: Usd = "0.30".parse().unwrap();
    let actual: Usd = "0.20".parse().unwrap();
    // Three in flight at once fit ($0.90); a fourth would reach $1.20.
    let open: Vec<_> = (0..3)
        .map(|_| reserve(&limiter, &s, 10, 10, worst).unwrap().unwrap())
        .collect();
    match reserve(&limiter, &s, 10, 10, worst) {
        Err(e @ GatewayError::BudgetExceeded { .. }) => {
            assert_eq!(e.code(), "budget_exceeded");
            assert_eq!(e.status(), http::StatusCode::PAYMENT_REQUIRED);
            let message = e.message();
            assert!(
                message.contains("daily cost budget of this API key"),
                "{message}"
            );
            assert!(
                message.contains("$0.30") && message.contains("$1.00"),
                "{message}"
            );
        }
        other => panic!("expected budget_exceeded, got {other:?}"),
    }
    // Settling gives back $0.10 each: spent $0.60, so one more fits ($0.90)...
    for r in &open {
        r.settle(20, actual);
    }
    let fourth = reserve(&limiter, &s, 10, 10, worst).unwrap().unwrap();
    // ...and a fifth does not ($1.20).
    assert!(reserve(&limiter, &s, 10, 10, worst).is_err());
    fourth.settle(20, actual);
    // Spent: exactly 4 × $0.20, in nano-dollars.
    let spent = limiter
        .local
        .lock()
        .unwrap()
        .counters
        .values()
        .map(|(v, _)| *v)
        .sum::<u64>();
    assert_eq!(spent, 800_000_000);
}

#[test]
fn token_budgets_and_usage_above_the_reservation() {
    let limiter = Arc::new(Limiter::default());
    let s = key_scope(KeyLimits {
        budget_tokens_monthly: Some(1_000),
        ..KeyLimits::default()
    });
    let r = reserve(&limiter, &s, 100, 300, Usd::ZERO).unwrap().unwrap();
    // The provider counted more than the estimate: the excess is charged.
    r.settle(700, Usd::ZERO);
    assert!(
        reserve(&limiter, &s, 100, 300, Usd::ZERO).is_err(),
        "700 + 400 > 1000"
    );
    assert!(
        reserve(&limiter, &s, 100, 200, Usd::ZERO)
            .unwrap()
            .is_some(),
        "700 + 300 fits"
    );
}

#[test]
fn budget_counters_start_from_their_seed() {
    let mut local = super::Local::default();
    let check = |seed| Check::Budget {
        name: "k:K1:usd:d20261126".into(),
        limit: 100,
        amount: 30,
        end: 1_795_737_600,
        seed,
        unit: super::BudgetUnit::Usd,
        scope: 0,
        start: 1_795_651_200,
        period: super::Period::Day,
    };
    let now = Instant::now();
    assert_eq!(
        local.run(&[check(None)], now, 1_795_675_215),
        Outcome::NeedSeed(vec![0])
    );
    // 80 already spent this period (read from the store): 30 more do not fit.
    assert!(matches!(
        local.run(&[check(Some(80))], now, 1_795_675_215),
        Outcome::Refused { index: 0, .. }
    ));
    assert!(matches!(
        local.run(&[check(Some(60))], now, 1_795_675_215),
        Outcome::Admitted(ref r) if r[0].0 == 10
    ));
    // Once a counter exists, it is the truth; the seed is not read again.
    assert!(matches!(
        local.run(&[check(None)], now, 1_795_675_215),
        Outcome::Refused { .. }
    ));
}

/// Log lines written while `f` runs on this thread.
fn logs_of<F: std::future::Future>(f: F) -> (F::Output, String) {
    let capture = crate::test_logs::LogCapture::default();
    let subscriber = capture.subscriber();
    let out = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    });
    (out, capture.text())
}

#[test]
fn redis_going_away_is_logged_when_the_readiness_check_notices_first() {
    let (health, logs) = logs_of(async {
        let redis = super::redis::RedisLimiter::new(
            "redis://127.0.0.1:1",
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .unwrap();
        let limiter = Limiter::new(Some(redis), 1, super::FailMode::Local, true, None);
        limiter.redis_health().await
    });
    assert_eq!(health, Some(false));
    assert!(
        logs.contains("redis unreachable: limits follow the fail modes"),
        "{logs}"
    );
}

#[test]
fn rfc3339_of_unix_seconds() {
    for (unix, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
    ] {
        assert_eq!(super::rfc3339(unix), text);
    }
}
