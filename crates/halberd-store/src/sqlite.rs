//! The SQLite backend: one file, WAL journal, migrations applied on open.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use crate::StoreError;
use crate::keyring::{AdminEvent, KeyRecord};

/// Handle on the database. Cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// The columns of `api_keys`, as a macro so that queries stay `&'static str`
/// (sqlx refuses SQL built at run time, which is what keeps injection out).
macro_rules! key_columns {
    () => {
        "id, name, user_id, key_hash, created_at, expires_at, revoked_at, rotated_to, allowed_models, allowed_endpoints, policy, metadata, limits"
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its
    /// schema up to date. `:memory:` gives a private in-memory database.
    pub async fn open_sqlite(path: &str) -> Result<Store, StoreError> {
        let memory = path == ":memory:";
        let opts = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        }
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
        // An in-memory database lives and dies with its one connection.
        let max = if memory { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(None)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn insert_key(&self, k: &KeyRecord, hash: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_key(&mut tx, k, hash).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn key_with_hash(
        &self,
        id: &str,
    ) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((key_from_row(&r)?, r.try_get::<Vec<u8>, _>("key_hash")?)))
            .transpose()
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Replaces the mutable attributes of a key. Returns false when no such key.
    pub(crate) async fn update_key(&self, k: &KeyRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET name = ?, user_id = ?, expires_at = ?, revoked_at = ?, rotated_to = ?, allowed_models = ?, allowed_endpoints = ?, policy = ?, metadata = ?, limits = ? WHERE id = ?",
        )
        .bind(&k.name)
        .bind(&k.user)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(&k.rotated_to)
        .bind(json_text(&k.allowed_models))
        .bind(json_text(&k.allowed_endpoints))
        .bind(&k.policy)
        .bind(k.metadata.to_string())
        .bind(limits_text(&k.limits))
        .bind(&k.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts the successor and updates the predecessor in one transaction, so
    /// that a crash never leaves a rotation half done.
    pub(crate) async fn rotate(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
        new_hash: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_key(&mut tx, new, new_hash).await?;
        let done = sqlx::query("UPDATE api_keys SET expires_at = ?, rotated_to = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(old.expires_at)
            .bind(&old.rotated_to)
            .bind(&old.id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Revoked(old.id.clone()));
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn record_event(&self, e: &AdminEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_events (at, actor, action, key_id, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.key_id)
        .bind(e.detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn events(&self, limit: i64) -> Result<Vec<AdminEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, key_id, detail FROM admin_events ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminEvent {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    key_id: r.try_get("key_id")?,
                    detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

async fn insert_key(
    tx: &mut sqlx::SqliteConnection,
    k: &KeyRecord,
    hash: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO api_keys (",
        key_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&k.id)
    .bind(&k.name)
    .bind(&k.user)
    .bind(hash)
    .bind(k.created_at)
    .bind(k.expires_at)
    .bind(k.revoked_at)
    .bind(&k.rotated_to)
    .bind(json_text(&k.allowed_models))
    .bind(json_text(&k.allowed_endpoints))
    .bind(&k.policy)
    .bind(k.metadata.to_string())
    .bind(limits_text(&k.limits))
    .execute(tx)
    .await?;
    Ok(())
}

fn limits_text(limits: &crate::keyring::KeyLimits) -> String {
    serde_json::to_string(limits).unwrap_or_else(|_| "{}".into())
}

fn json_text(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn key_from_row(r: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        let text: String = r.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
            field: "stored list",
            reason: e.to_string(),
        })
    };
    Ok(KeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        user: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        rotated_to: r.try_get("rotated_to")?,
        allowed_models: list("allowed_models")?,
        allowed_endpoints: list("allowed_endpoints")?,
        policy: r.try_get("policy")?,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata")?).unwrap_or_default(),
        limits: serde_json::from_str(&r.try_get::<String, _>("limits")?).map_err(|e| {
            StoreError::Invalid {
                field: "stored limits",
                reason: e.to_string(),
            }
        })?,
    })
}
