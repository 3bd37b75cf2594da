use super::*;

async fn keyring() -> Keyring {
    let store = Store::open_sqlite(":memory:").await.unwrap();
    Keyring::new(store, Pepper::from_hex(&"11".repeat(32)).unwrap())
}

fn spec(name: &str) -> KeySpec {
    KeySpec {
        name: name.into(),
        ..KeySpec::default()
    }
}

#[tokio::test]
async fn created_key_authenticates_and_only_its_hash_is_stored() {
    let kr = keyring().await;
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

#[tokio::test]
async fn wrong_secret_with_valid_checksum_is_a_mismatch() {
    let kr = keyring().await;
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

#[tokio::test]
async fn a_different_pepper_rejects_the_same_key() {
    let kr = keyring().await;
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

#[tokio::test]
async fn expiry_and_revocation() {
    let kr = keyring().await;
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

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_grace_period_only() {
    let kr = keyring().await;
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

#[tokio::test]
async fn scopes_are_validated_and_checked() {
    let kr = keyring().await;
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

#[tokio::test]
async fn every_change_is_recorded_without_secrets() {
    let kr = keyring().await;
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
