//! The ledger against a real SQLite store: every admitted record is written,
//! in batches, whatever the load; a store that stops writing fills the queue
//! and new work is refused instead of records being dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use halberd_store::{Store, UsageRecord, Usd};
use sqlx::Connection;

use super::Ledger;
use crate::error::GatewayError;

fn record(i: usize) -> UsageRecord {
    UsageRecord {
        request_id: format!("req_{i}"),
        key_id: "k1".into(),
        user_id: None,
        at: 1_700_000_000,
        api: "chat.completions".into(),
        model: "mock-1".into(),
        provider: "mock".into(),
        input_tokens: 3,
        cached_input_tokens: 0,
        output_tokens: 5,
        cost: Usd(13),
        estimated: false,
        outcome: "completed".into(),
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> (Store, String) {
    let path = dir.path().join("ledger.db");
    let path = path.to_str().unwrap().to_owned();
    (Store::open_sqlite(&path).await.unwrap(), path)
}

async fn written(store: &Store) -> u64 {
    store
        .usage_totals(halberd_store::UsageScope::Key("k1"), 0)
        .await
        .unwrap()
        .requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_exchanges_is_written_whole_by_a_graceful_close() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let ledger = std::sync::Arc::new(Ledger::start(store.clone(), 1024, Duration::from_secs(5)));
    let tasks: Vec<_> = (0..5_000)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let slot = ledger.reserve("r").await.unwrap();
                tokio::task::yield_now().await;
                slot.record(record(i));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        ledger
            .close(tokio::time::Instant::now() + Duration::from_secs(30))
            .await
    );
    assert_eq!(written(&store).await, 5_000);
    // Closed: no new slots.
    assert!(matches!(
        ledger.reserve("r").await,
        Err(GatewayError::Unavailable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_writing_fills_the_queue_then_refuses_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = sqlite(&dir).await;
    // Another connection holds SQLite's write lock: every write of the
    // ledger waits, times out and is retried.
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let capacity = 64;
    let ledger = Ledger::start(store.clone(), capacity, Duration::from_millis(50));
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..capacity * 3 {
        match ledger.reserve("r").await {
            Ok(slot) => {
                slot.record(record(i));
                admitted += 1;
            }
            Err(GatewayError::Unavailable { .. }) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // The writer holds at most one batch out of the queue.
    assert!(
        (capacity..=capacity * 2).contains(&admitted),
        "admitted {admitted} of {} with the store stuck",
        capacity * 3
    );
    assert_eq!(admitted + refused, capacity * 3);
    assert_eq!(
        written(&store).await,
        0,
        "the blocked store has nothing yet"
    );

    // The store recovers: everything admitted is written, nothing twice.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    drop(blocker);
    assert!(
        ledger
            .close(tokio::time::Instant::now() + Duration::from_secs(30))
            .await
    );
    assert_eq!(written(&store).await, admitted as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_while_a_write_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = sqlite(&dir).await;
    let keyring = halberd_store::Keyring::new(
        store.clone(),
        halberd_store::Pepper::from_hex(&"ab".repeat(32)).unwrap(),
    );
    let issued = keyring
        .create(
            halberd_store::KeySpec {
                name: "busy".into(),
                ..halberd_store::KeySpec::default()
            },
            "test",
            halberd_store::now_unix(),
        )
        .await
        .unwrap();
    let mut writer = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO usage_records (request_id, key_id, at, api, model, provider, input_tokens, cached_input_tokens, output_tokens, cost_nanousd, estimated, outcome) VALUES ('long', 'k1', 0, 'x', 'm', 'p', 0, 0, 0, 0, 0, 'completed')")
        .execute(&mut writer)
        .await
        .unwrap();
    // The write transaction is open; a read of the key (no cache) still
    // answers, well before SQLite's 5 s busy timeout.
    let checked = tokio::time::timeout(
        Duration::from_secs(2),
        keyring.authenticate(&issued.key, halberd_store::now_unix()),
    )
    .await
    .expect("authentication did not wait for the writer");
    assert_eq!(checked.unwrap().id, issued.record.id);
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_the_retention_are_deleted_and_recent_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let now = halberd_store::now_unix();
    let days = |d: i64| now - d * 86_400;
    let mut batch = Vec::new();
    for (i, at) in [days(500), days(401), days(399), days(1), now]
        .into_iter()
        .enumerate()
    {
        batch.push(UsageRecord { at, ..record(i) });
    }
    store.record_usage_batch(&batch).await.unwrap();
    let pruning = tokio::spawn(super::prune(
        store.clone(),
        Duration::from_secs(400 * 86_400),
    ));
    for _ in 0..200 {
        if written(&store).await == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pruning.abort();
    let kept: Vec<i64> = store
        .usage_records("k1", 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(kept, [now, days(1), days(399)]);
}
