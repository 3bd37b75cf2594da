use super::*;

/// A fresh, empty store of the named backend: SQLite in memory, or a new
/// database on the Postgres server at `HALBERD_TEST_POSTGRES_URL` (one per
/// test, so tests run in parallel without seeing each other's rows).
pub(crate) async fn fresh_store(backend: &str) -> Store {
    match backend {
        "sqlite" => Store::open_sqlite(":memory:").await.unwrap(),
        _ => {
            let url = std::env::var("HALBERD_TEST_POSTGRES_URL")
                .expect("HALBERD_TEST_POSTGRES_URL must point at a Postgres server for this test");
            let db = Store::create_test_database(&url).await.unwrap();
            Store::open(&db).await.unwrap()
        }
    }
}

async fn keyring_on(backend: &str) -> Keyring {
    Keyring::new(
        fresh_store(backend).await,
        Pepper::from_hex(&"11".repeat(32)).unwrap(),
    )
}

/// Runs each test body on SQLite, and on Postgres under `--ignored` (CI runs
/// that with `HALBERD_TEST_POSTGRES_URL` set).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::keyring_on("sqlite").await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            #[ignore = "needs Postgres (HALBERD_TEST_POSTGRES_URL)"]
            async fn $name() {
                super::$name(super::keyring_on("postgres").await).await;
            })*
        }
    };
}

on_both_backends!(
    created_key_authenticates_and_only_its_hash_is_stored,
    wrong_secret_with_valid_checksum_is_a_mismatch,
    a_different_pepper_rejects_the_same_key,
    a_replica_with_another_pepper_is_refused_at_start,
    expiry_and_revocation,
    rotation_keeps_the_old_key_for_the_grace_period_only,
    scopes_are_validated_and_checked,
    every_change_is_recorded_without_secrets,
    usage_is_summed_per_key_and_user_since_a_time,
    a_usage_batch_is_written_whole_in_one_transaction,
    usage_reports_group_by_key_user_model_and_day,
    an_update_never_unrevokes_or_moves_a_rotation,
    a_rotated_or_expired_key_is_not_rotated_again,
    user_limits_are_set_merged_and_removed,
);

fn spec(name: &str) -> KeySpec {
    KeySpec {
        name: name.into(),
        ..KeySpec::default()
    }
}

async fn created_key_authenticates_and_only_its_hash_is_stored(kr: Keyring) {
    let issued = kr.create(spec("ci"), "test", 1000).await.unwrap();
    assert!(halberd_key::parse_key(&issued.key).is_some());
    let rec = kr.authenticate(&issued.key, 1001).await.unwrap();
    assert_eq!(rec.id, issued.record.id);
    let (_, hash) = kr.store.key_with_hash(&rec.id).await.unwrap().unwrap();
    assert_eq!(hash.len(), 32);
    assert!(
        !hash
            .windows(8)
            .any(|w| issued.key.as_bytes().windows(8).any(|k| k == w))
    );
}

async fn wrong_secret_with_valid_checksum_is_a_mismatch(kr: Keyring) {
    let issued = kr.create(spec("a"), "test", 1000).await.unwrap();
    let forged = halberd_key::format_key(&issued.record.id, &"x".repeat(SECRET_LEN));
    assert!(matches!(
        kr.authenticate(&forged, 1001).await,
        Err(AuthError::Mismatch)
    ));
    let unknown = halberd_key::format_key("AAAAAAAAAAAA", &"x".repeat(SECRET_LEN));
    assert!(matches!(
        kr.authenticate(&unknown, 1001).await,
        Err(AuthError::Unknown)
    ));
    assert!(matches!(
        kr.authenticate("sk-not-ours", 1001).await,
        Err(AuthError::Malformed)
    ));
}

async fn a_replica_with_another_pepper_is_refused_at_start(kr: Keyring) {
    // The first keyring on a store records its pepper's fingerprint.
    kr.check_pepper().await.unwrap();
    kr.check_pepper().await.unwrap();
    let same = Keyring::new(
        kr.store.clone(),
        Pepper::from_hex(&"11".repeat(32)).unwrap(),
    );
    same.check_pepper().await.unwrap();
    let other = Keyring::new(
        kr.store.clone(),
        Pepper::from_hex(&"22".repeat(32)).unwrap(),
    );
    let e = other.check_pepper().await.unwrap_err();
    assert!(e.to_string().contains("HALBERD_PEPPER"), "{e}");
    // The fingerprint reveals nothing of the pepper itself.
    let stored = kr
        .store
        .meta_or_insert("pepper_fingerprint", "x")
        .await
        .unwrap();
    assert!(!stored.contains(&"11".repeat(8)), "{stored}");
}

async fn a_different_pepper_rejects_the_same_key(kr: Keyring) {
    let issued = kr.create(spec("a"), "test", 1000).await.unwrap();
    let other = Keyring::new(
        kr.store.clone(),
        Pepper::from_hex(&"22".repeat(32)).unwrap(),
    );
    assert!(matches!(
        other.authenticate(&issued.key, 1001).await,
        Err(AuthError::Mismatch)
    ));
}

async fn expiry_and_revocation(kr: Keyring) {
    let issued = kr
        .create(
            KeySpec {
                expires_at: Some(2000),
                ..spec("e")
            },
            "test",
            1000,
        )
        .await
        .unwrap();
    assert!(kr.authenticate(&issued.key, 1999).await.is_ok());
    assert!(matches!(
        kr.authenticate(&issued.key, 2000).await,
        Err(AuthError::Expired)
    ));
    let other = kr.create(spec("r"), "test", 1000).await.unwrap();
    kr.revoke(&other.record.id, "test", 1500).await.unwrap();
    assert!(matches!(
        kr.authenticate(&other.key, 1501).await,
        Err(AuthError::Revoked)
    ));
    assert!(matches!(
        kr.create(
            KeySpec {
                expires_at: Some(10),
                ..spec("past")
            },
            "t",
            1000
        )
        .await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn rotation_keeps_the_old_key_for_the_grace_period_only(kr: Keyring) {
    let old = kr
        .create(
            KeySpec {
                allowed_models: vec!["mock-1".into()],
                user: Some("u1".into()),
                ..spec("rot")
            },
            "test",
            1000,
        )
        .await
        .unwrap();
    let new = kr.rotate(&old.record.id, 3600, "test", 2000).await.unwrap();
    assert_ne!(new.key, old.key);
    assert_eq!(new.record.allowed_models, vec!["mock-1".to_string()]);
    assert_eq!(new.record.user.as_deref(), Some("u1"));
    assert!(kr.authenticate(&old.key, 2000 + 3599).await.is_ok());
    assert!(matches!(
        kr.authenticate(&old.key, 2000 + 3600).await,
        Err(AuthError::Expired)
    ));
    assert!(kr.authenticate(&new.key, 2000 + 99_999).await.is_ok());
    assert_eq!(
        kr.get(&old.record.id).await.unwrap().rotated_to.as_deref(),
        Some(new.record.id.as_str())
    );
    kr.revoke(&old.record.id, "test", 2001).await.unwrap();
    assert!(matches!(
        kr.rotate(&old.record.id, 10, "test", 2002).await,
        Err(StoreError::Revoked(_))
    ));
}

async fn an_update_never_unrevokes_or_moves_a_rotation(kr: Keyring) {
    let a = kr.create(spec("a"), "t", 1).await.unwrap();
    // An update that read the key before it was revoked writes after it:
    // the store's own write of the update must not carry revoked_at back.
    let stale = kr.get(&a.record.id).await.unwrap();
    kr.revoke(&a.record.id, "t", 2).await.unwrap();
    let mut renamed = stale.clone();
    renamed.name = "renamed".into();
    assert!(kr.store().update_key(&renamed).await.unwrap());
    let now = kr.get(&a.record.id).await.unwrap();
    assert_eq!(now.name, "renamed");
    assert_eq!(now.revoked_at, Some(2), "revocation is monotonic");
    assert!(matches!(
        kr.authenticate(&a.key, 3).await,
        Err(AuthError::Revoked)
    ));
    // A second revocation keeps the first one's time.
    assert_eq!(
        kr.revoke(&a.record.id, "t", 9).await.unwrap().revoked_at,
        Some(2)
    );

    // The same for rotation: a stale update cannot wipe the grace end or
    // the link to the successor.
    let b = kr.create(spec("b"), "t", 1).await.unwrap();
    let stale = kr.get(&b.record.id).await.unwrap();
    let successor = kr.rotate(&b.record.id, 60, "t", 10).await.unwrap();
    assert!(kr.store().update_key(&stale).await.unwrap());
    let now = kr.get(&b.record.id).await.unwrap();
    assert_eq!(now.expires_at, Some(70));
    assert_eq!(
        now.rotated_to.as_deref(),
        Some(successor.record.id.as_str())
    );
    // Through the keyring, changing a rotated key's expiry is refused.
    let e = kr
        .update(
            &b.record.id,
            KeyUpdate {
                expires_at: Some(None),
                ..KeyUpdate::default()
            },
            "t",
            11,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expires"), "{e}");
}

async fn a_rotated_or_expired_key_is_not_rotated_again(kr: Keyring) {
    let a = kr
        .create(
            KeySpec {
                expires_at: Some(10_000),
                ..spec("a")
            },
            "t",
            1,
        )
        .await
        .unwrap();
    let first = kr.rotate(&a.record.id, 60, "t", 100).await.unwrap();
    // The successor inherits the original's own expiry, not the grace end.
    assert_eq!(first.record.expires_at, Some(10_000));
    let again = kr.rotate(&a.record.id, 60, "t", 200).await.unwrap_err();
    assert!(
        again.to_string().contains(&first.record.id),
        "names the successor to rotate instead: {again}"
    );
    // After the grace ended, the same refusal, never a dead successor.
    assert!(kr.rotate(&a.record.id, 60, "t", 5_000).await.is_err());
    // Rotating the live successor works and keeps the original expiry.
    let second = kr.rotate(&first.record.id, 60, "t", 300).await.unwrap();
    assert_eq!(second.record.expires_at, Some(10_000));
    assert!(kr.authenticate(&second.key, 9_999).await.is_ok());
    assert!(kr.authenticate(&first.key, 300 + 59).await.is_ok());
    // An expired key is not rotated.
    let b = kr
        .create(
            KeySpec {
                expires_at: Some(50),
                ..spec("b")
            },
            "t",
            1,
        )
        .await
        .unwrap();
    assert!(kr.rotate(&b.record.id, 60, "t", 51).await.is_err());
}

async fn scopes_are_validated_and_checked(kr: Keyring) {
    let bad = kr
        .create(
            KeySpec {
                allowed_endpoints: vec!["admin".into()],
                ..spec("x")
            },
            "t",
            1,
        )
        .await;
    assert!(matches!(
        bad,
        Err(StoreError::Invalid {
            field: "endpoints",
            ..
        })
    ));
    assert!(matches!(
        kr.create(spec(""), "t", 1).await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
    let k = kr
        .create(
            KeySpec {
                allowed_models: vec!["a".into()],
                allowed_endpoints: vec!["messages".into()],
                ..spec("s")
            },
            "t",
            1,
        )
        .await
        .unwrap();
    assert!(k.record.allows_model("a") && !k.record.allows_model("b"));
    assert!(k.record.allows_endpoint("messages") && !k.record.allows_endpoint("responses"));
}

async fn every_change_is_recorded_without_secrets(kr: Keyring) {
    let k = kr.create(spec("audit me"), "cli:alice", 1).await.unwrap();
    kr.update(
        &k.record.id,
        KeyUpdate {
            name: Some("renamed".into()),
            ..KeyUpdate::default()
        },
        "admin-api",
        2,
    )
    .await
    .unwrap();
    let rotated = kr.rotate(&k.record.id, 60, "admin-api", 3).await.unwrap();
    kr.revoke(&rotated.record.id, "cli:bob", 4).await.unwrap();
    let events = kr.events(10).await.unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("key.revoke", "cli:bob"),
            ("key.rotate", "admin-api"),
            ("key.update", "admin-api"),
            ("key.create", "cli:alice")
        ]
    );
    let dump = serde_json::to_string(&events).unwrap();
    assert!(!dump.contains(&k.key) && !dump.contains(&rotated.key));
}

#[tokio::test]
async fn file_database_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let pepper = Pepper::from_hex(&"33".repeat(32)).unwrap();
    let key = {
        let kr = Keyring::new(
            Store::open_sqlite(path.to_str().unwrap()).await.unwrap(),
            pepper.clone(),
        );
        kr.create(spec("persist"), "t", 1).await.unwrap().key
    };
    let kr = Keyring::new(
        Store::open_sqlite(path.to_str().unwrap()).await.unwrap(),
        pepper,
    );
    assert!(kr.authenticate(&key, 2).await.is_ok());
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.db");
    let store = Store::open_sqlite(path.to_str().unwrap()).await.unwrap();
    let kr = Keyring::new(store, Pepper::from_hex(&"46".repeat(32)).unwrap());
    kr.create(spec("a"), "t", 1).await.unwrap();
    for name in ["private.db", "private.db-wal", "private.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[tokio::test]
async fn cache_sees_own_changes_at_once_and_others_within_the_ttl() {
    let store = Store::open_sqlite(":memory:").await.unwrap();
    let pepper = Pepper::from_hex(&"44".repeat(32)).unwrap();
    let cached = Keyring::with_cache(
        store.clone(),
        pepper.clone(),
        std::time::Duration::from_millis(300),
    );
    let other = Keyring::new(store, pepper);
    let a = cached.create(spec("a"), "t", 1).await.unwrap();
    assert!(cached.authenticate(&a.key, 2).await.is_ok());
    cached.revoke(&a.record.id, "t", 3).await.unwrap();
    assert!(
        matches!(
            cached.authenticate(&a.key, 4).await,
            Err(AuthError::Revoked)
        ),
        "own change seen at once"
    );

    let b = cached.create(spec("b"), "t", 1).await.unwrap();
    assert!(cached.authenticate(&b.key, 2).await.is_ok());
    other.revoke(&b.record.id, "t", 3).await.unwrap();
    // Another process's change may take up to the TTL to be seen...
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    // ...and is seen after it.
    assert!(matches!(
        cached.authenticate(&b.key, 4).await,
        Err(AuthError::Revoked)
    ));
    // Expiry is checked against the time given, never cached.
    let c = cached
        .create(
            KeySpec {
                expires_at: Some(100),
                ..spec("c")
            },
            "t",
            1,
        )
        .await
        .unwrap();
    assert!(cached.authenticate(&c.key, 99).await.is_ok());
    assert!(matches!(
        cached.authenticate(&c.key, 100).await,
        Err(AuthError::Expired)
    ));
}

#[tokio::test]
async fn a_busy_key_is_refreshed_in_the_background_and_still_revoked_within_the_ttl() {
    let store = Store::open_sqlite(":memory:").await.unwrap();
    let pepper = Pepper::from_hex(&"45".repeat(32)).unwrap();
    let ttl = std::time::Duration::from_millis(400);
    let cached = Keyring::with_cache(store.clone(), pepper.clone(), ttl);
    let other = Keyring::new(store, pepper);
    let a = cached.create(spec("a"), "t", 1).await.unwrap();
    assert_eq!(cached.authenticate(&a.key, 2).await.unwrap().name, "a");
    assert_eq!(cached.request_path_reads(), 1);
    other
        .update(
            &a.record.id,
            crate::KeyUpdate {
                name: Some("renamed".into()),
                ..crate::KeyUpdate::default()
            },
            "t",
            2,
        )
        .await
        .unwrap();
    // Used every 50 ms for three TTLs: past half the TTL a use starts one
    // background read, so the entry never expires on the request path, and
    // the other process's rename is picked up all the same.
    let mut names = Vec::new();
    for _ in 0..24 {
        names.push(cached.authenticate(&a.key, 3).await.unwrap().name);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(names.iter().any(|n| n == "renamed"), "{names:?}");
    assert_eq!(
        cached.request_path_reads(),
        1,
        "a busy key never waits on the store"
    );
    // Revocation elsewhere is still seen within the TTL.
    other.revoke(&a.record.id, "t", 4).await.unwrap();
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    assert!(matches!(
        cached.authenticate(&a.key, 5).await,
        Err(AuthError::Revoked)
    ));
}

async fn usage_is_summed_per_key_and_user_since_a_time(kr: Keyring) {
    let record = |key: &str, user: Option<&str>, at: i64, input: u64, output: u64, cost: u64| {
        crate::UsageRecord {
            request_id: format!("req-{key}-{at}"),
            key_id: key.into(),
            user_id: user.map(Into::into),
            at,
            api: "chat_completions".into(),
            model: "gpt-4o".into(),
            provider: "openai".into(),
            input_tokens: input,
            cached_input_tokens: 0,
            output_tokens: output,
            cost: crate::Usd(cost),
            estimated: at == 300,
            outcome: "completed".into(),
        }
    };
    let store = kr.store();
    for r in [
        record("k1", Some("ann"), 100, 10, 5, 1_000),
        record("k1", Some("ann"), 200, 20, 7, 2_000),
        record("k2", Some("ann"), 300, 1, 1, 5),
        record("k3", None, 300, 9, 9, 9),
    ] {
        store.record_usage(&r).await.unwrap();
    }
    let k1 = store
        .usage_totals(crate::UsageScope::Key("k1"), 0)
        .await
        .unwrap();
    assert_eq!(
        (
            k1.requests,
            k1.input_tokens,
            k1.output_tokens,
            k1.cost.nanos()
        ),
        (2, 30, 12, 3_000)
    );
    assert_eq!(k1.tokens(), 42);
    let since = store
        .usage_totals(crate::UsageScope::Key("k1"), 150)
        .await
        .unwrap();
    assert_eq!((since.requests, since.cost.nanos()), (1, 2_000));
    let ann = store
        .usage_totals(crate::UsageScope::User("ann"), 0)
        .await
        .unwrap();
    assert_eq!(
        (ann.requests, ann.cost.nanos(), ann.estimated),
        (3, 3_005, 1)
    );
    let none = store
        .usage_totals(crate::UsageScope::Key("nobody"), 0)
        .await
        .unwrap();
    assert_eq!(none, crate::UsageTotals::default());
    let recent = store.usage_records("k1", 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0], record("k1", Some("ann"), 200, 20, 7, 2_000));
}

async fn a_usage_batch_is_written_whole_in_one_transaction(kr: Keyring) {
    let record = |i: usize, outcome: &str| crate::UsageRecord {
        request_id: format!("req-{i}"),
        key_id: "batch".into(),
        user_id: i.is_multiple_of(2).then(|| "ann".to_owned()),
        at: 1_000 + i as i64,
        api: "messages".into(),
        model: "claude".into(),
        provider: "anthropic".into(),
        input_tokens: i as u64,
        cached_input_tokens: 0,
        output_tokens: 1,
        cost: crate::Usd(7),
        estimated: i.is_multiple_of(3),
        outcome: outcome.into(),
    };
    let store = kr.store();
    // More rows than one statement carries, so the batch spans statements.
    let batch: Vec<_> = (0..700).map(|i| record(i, "completed")).collect();
    store.record_usage_batch(&batch).await.unwrap();
    let t = store
        .usage_totals(crate::UsageScope::Key("batch"), 0)
        .await
        .unwrap();
    assert_eq!(t.requests, 700);
    assert_eq!(t.input_tokens, (0..700).sum::<u64>());
    assert_eq!(
        t.estimated,
        (0..700_usize).filter(|i| i.is_multiple_of(3)).count() as u64
    );
    let newest = store.usage_records("batch", 1).await.unwrap();
    assert_eq!(newest, [record(699, "completed")]);
    // An empty batch is a no-op.
    store.record_usage_batch(&[]).await.unwrap();
    assert_eq!(
        store
            .usage_totals(crate::UsageScope::Key("batch"), 0)
            .await
            .unwrap()
            .requests,
        700
    );
}

async fn user_limits_are_set_merged_and_removed(kr: Keyring) {
    assert!(kr.user_limits("ann").await.unwrap().is_empty());
    let set = kr
        .set_user_limits(
            "ann",
            &KeyLimits {
                rpm: Some(100),
                budget_usd_daily: Some("2.5".parse().unwrap()),
                ..KeyLimits::default()
            },
            "t",
            10,
        )
        .await
        .unwrap();
    assert_eq!(set.rpm, Some(100));
    let merged = kr
        .set_user_limits(
            "ann",
            &KeyLimits {
                tpm: Some(1000),
                rpm: Some(0),
                ..KeyLimits::default()
            },
            "t",
            11,
        )
        .await
        .unwrap();
    assert_eq!(merged.rpm, None);
    assert_eq!(merged.tpm, Some(1000));
    assert_eq!(merged.budget_usd_daily, Some(crate::Usd(2_500_000_000)));
    assert_eq!(kr.user_limits("ann").await.unwrap(), merged);
    assert_eq!(
        kr.store().list_user_limits().await.unwrap(),
        vec![("ann".to_owned(), merged)]
    );
    assert!(
        kr.set_user_limits("", &KeyLimits::default(), "t", 12)
            .await
            .is_err()
    );
    let events = kr.events(10).await.unwrap();
    assert_eq!(events[0].action, "user.limits");
    assert_eq!(events[0].detail["user"], "ann");
    // Removing every limit removes the row.
    kr.set_user_limits(
        "ann",
        &KeyLimits {
            tpm: Some(0),
            budget_usd_daily: Some(crate::Usd(0)),
            ..KeyLimits::default()
        },
        "t",
        13,
    )
    .await
    .unwrap();
    assert!(kr.store().list_user_limits().await.unwrap().is_empty());
}

async fn usage_reports_group_by_key_user_model_and_day(kr: Keyring) {
    use crate::{UsageGroup, UsageRecord, Usd};
    let day = 86_400;
    // 2024-03-01 00:00:00 UTC and the days after.
    let march1 = 1_709_251_200;
    let record =
        |n: u32, key: &str, user: Option<&str>, model: &str, at: i64, outcome: &str| UsageRecord {
            request_id: format!("report-{n}"),
            key_id: key.into(),
            user_id: user.map(Into::into),
            at,
            api: "chat_completions".into(),
            model: model.into(),
            provider: "openai".into(),
            input_tokens: 100,
            cached_input_tokens: 0,
            output_tokens: 10,
            cost: Usd(1_000),
            estimated: false,
            outcome: outcome.into(),
        };
    let store = kr.store();
    store
        .record_usage_batch(&[
            record(1, "k1", Some("ann"), "gpt-4o", march1 + 10, "completed"),
            record(
                2,
                "k1",
                Some("ann"),
                "gpt-4o",
                march1 + day - 1,
                "upstream_error",
            ),
            record(3, "k2", None, "claude", march1 + day, "completed"),
            record(
                4,
                "k2",
                Some("bob"),
                "claude",
                march1 + 2 * day + 5,
                "completed",
            ),
            // Outside the window on both sides.
            record(5, "k1", Some("ann"), "gpt-4o", march1 - 1, "completed"),
            record(
                6,
                "k1",
                Some("ann"),
                "gpt-4o",
                march1 + 3 * day,
                "completed",
            ),
        ])
        .await
        .unwrap();
    let report = |by| store.usage_report(by, march1, march1 + 3 * day);
    let rows = report(UsageGroup::Key).await.unwrap();
    let summary: Vec<(String, u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.group.clone(),
                r.totals.requests,
                r.totals.input_tokens,
                r.totals.cost.nanos(),
                r.failed,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("k1".to_owned(), 2, 200, 2_000, 1),
            ("k2".to_owned(), 2, 200, 2_000, 0)
        ]
    );
    let groups = |rows: Vec<crate::UsageRow>| -> Vec<(String, u64)> {
        rows.into_iter()
            .map(|r| (r.group, r.totals.requests))
            .collect()
    };
    assert_eq!(
        groups(report(UsageGroup::User).await.unwrap()),
        [
            ("".to_owned(), 1),
            ("ann".to_owned(), 2),
            ("bob".to_owned(), 1)
        ]
    );
    assert_eq!(
        groups(report(UsageGroup::Model).await.unwrap()),
        [("claude".to_owned(), 2), ("gpt-4o".to_owned(), 2)]
    );
    // Days are UTC calendar days, the same on both backends.
    assert_eq!(
        groups(report(UsageGroup::Day).await.unwrap()),
        [
            ("2024-03-01".to_owned(), 2),
            ("2024-03-02".to_owned(), 1),
            ("2024-03-03".to_owned(), 1)
        ]
    );
    assert!(
        store
            .usage_report(UsageGroup::Key, 0, 1)
            .await
            .unwrap()
            .is_empty()
    );
}
