//! The database: SQLite (one file, WAL journal) by default, Postgres when
//! `[store] url` names one. Both are migrated on open, from their own migration
//! folders with the same tables. Every statement is written once, with `$N`
//! placeholders, which both drivers accept, and runs on whichever pool is open;
//! rows are read through [`Get`], so row decoding is written once too.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::keyring::{AdminEvent, KeyLimits, KeyRecord};
use crate::{StoreError, Usd};

/// Handle on the database. Cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    health: Arc<Health>,
}

/// Whether the database is known to be unreachable. A read that fails to
/// reach the server (connection refused, pool timeout) marks it down and
/// starts one background probe; until the probe succeeds, reads on the
/// request path fail at once instead of each waiting out the pool's acquire
/// timeout (every request used to wait 5 s for its 503 while Postgres was
/// gone).
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
}

/// How often the background probe asks a database that is down.
const PROBE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool is open. The body is
/// compiled once per backend, so the query types follow the pool.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The columns of `api_keys`, as a macro so that queries stay `&'static str`
/// (sqlx refuses SQL built at run time, which is what keeps injection out).
macro_rules! key_columns {
    () => {
        "id, name, user_id, key_hash, created_at, expires_at, revoked_at, rotated_to, allowed_models, allowed_endpoints, policy, metadata, limits"
    };
}

/// One exchange's usage, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub key_id: String,
    pub user_id: Option<String>,
    pub at: i64,
    pub api: String,
    pub model: String,
    pub provider: String,
    /// All prompt tokens, cached ones included.
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Usd,
    /// The provider reported no usage: the tokens were counted by Halberd.
    pub estimated: bool,
    pub outcome: String,
}

/// Sums over usage records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Usd,
    /// Records whose tokens were counted by Halberd.
    pub estimated: u64,
}

impl UsageTotals {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// How a usage report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    User,
    Model,
    /// The UTC calendar day, `YYYY-MM-DD`.
    Day,
}

impl UsageGroup {
    pub fn parse(s: &str) -> Option<UsageGroup> {
        match s {
            "key" => Some(UsageGroup::Key),
            "user" => Some(UsageGroup::User),
            "model" => Some(UsageGroup::Model),
            "day" => Some(UsageGroup::Day),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroup::Key => "key",
            UsageGroup::User => "user",
            UsageGroup::Model => "model",
            UsageGroup::Day => "day",
        }
    }
}

/// One row of a usage report: the totals of one group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// The key id, the user (empty for keys without one), the model, or the
    /// day.
    pub group: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
    /// Exchanges that did not complete (the provider failed, a guard stopped
    /// the answer, the client went away).
    pub failed: u64,
}

/// Whose usage to sum.
#[derive(Debug, Clone, Copy)]
pub enum UsageScope<'a> {
    Key(&'a str),
    User(&'a str),
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its
    /// schema up to date. `:memory:` gives a private in-memory database.
    pub async fn open_sqlite(path: &str) -> Result<Store, StoreError> {
        let memory = path == ":memory:";
        if !memory {
            create_private(path)?;
        }
        let opts = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL's own recommendation: a commit is durable against a
                // process crash, and only a power cut can lose the last
                // transactions; each commit no longer waits on an fsync.
                .synchronous(SqliteSynchronous::Normal)
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
        Ok(Store {
            pool: Pool::Sqlite(pool),
            health: Arc::default(),
        })
    }

    /// Connects to Postgres at `url` (`postgres://user@host/db`) and brings its
    /// schema up to date. Replicas may run this at once: sqlx takes an advisory
    /// lock around migrations.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        // Notices ("relation already exists, skipping" from the migration
        // table on every start) are not for the operator's terminal.
        let opts = PgConnectOptions::from_str(url)?
            .application_name("halberd")
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Store {
            pool: Pool::Postgres(pool),
            health: Arc::default(),
        })
    }

    /// For tests: creates a new, empty database on the Postgres server at
    /// `server_url` and returns the URL of that database. The name is a prefix
    /// and random letters, so parallel tests never share one.
    #[doc(hidden)]
    pub async fn create_test_database(server_url: &str) -> Result<String, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| StoreError::Random)?;
        let name: String = bytes.iter().map(|b| char::from(b'a' + b % 26)).collect();
        let name = format!("halberd_test_{name}");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(PgConnectOptions::from_str(server_url)?)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await?;
        pool.close().await;
        let (base, query) = server_url
            .split_once('?')
            .map_or((server_url, ""), |(b, q)| (b, q));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        Ok(if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        })
    }

    /// Opens the store a URL names: `postgres://…` / `postgresql://…`, or a
    /// SQLite path (`sqlite://path` or a bare path).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::open_postgres(url).await
        } else {
            Store::open_sqlite(url.strip_prefix("sqlite://").unwrap_or(url)).await
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers. While it is known to be down, says
    /// so at once (the background probe is asking it).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reachable()?;
        self.watch(on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop)))?;
        Ok(())
    }

    /// Whether the database is known to be unreachable right now.
    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Acquire)
    }

    /// Refuses at once while the database is known to be down.
    fn reachable(&self) -> Result<(), StoreError> {
        if self.is_down() {
            Err(StoreError::Unreachable)
        } else {
            Ok(())
        }
    }

    /// Notes a failure to reach the server: marks the database down and
    /// starts the probe that brings it back.
    fn watch<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        if let Err(e) = &result
            && unreachable(e)
            && !self.health.down.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(target: "halberd::store", backend = self.backend(), "store unreachable: requests that need it get 503 until it answers");
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let store = self.clone();
                runtime.spawn(async move {
                    loop {
                        tokio::time::sleep(PROBE_EVERY).await;
                        let answered = on_pool!(store, p => sqlx::query("SELECT 1").execute(p).await.map(drop));
                        if answered.is_ok() {
                            store.health.down.store(false, Ordering::Release);
                            tracing::info!(target: "halberd::store", "store reachable again");
                            return;
                        }
                    }
                });
            }
        }
        Ok(result?)
    }

    pub(crate) async fn insert_key(&self, k: &KeyRecord, hash: &[u8]) -> Result<(), StoreError> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            insert_key!(&mut *tx, k, hash);
            tx.commit().await?;
        });
        Ok(())
    }

    pub(crate) async fn key_with_hash(
        &self,
        id: &str,
    ) -> Result<Option<(KeyRecord, Vec<u8>)>, StoreError> {
        const SQL: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
        self.reachable()?;
        on_pool!(self, p => {
            let row = self.watch(sqlx::query(SQL).bind(id).fetch_optional(p).await)?;
            row.map(|r| Ok((key_from_row(&r)?, r.bytes("key_hash")?)))
                .transpose()
        })
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY created_at, id"
        );
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).fetch_all(p).await?;
            rows.iter().map(key_from_row).collect()
        })
    }

    /// Replaces the attributes an update may change. Returns false when no
    /// such key. Revocation and rotation are never written here (they have
    /// statements of their own), so an update racing a revocation cannot
    /// bring the key back, and the expiry of a rotated key (the end of its
    /// grace) is kept whatever the update says.
    pub(crate) async fn update_key(&self, k: &KeyRecord) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET name = $1, user_id = $2, expires_at = CASE WHEN rotated_to IS NULL THEN $3 ELSE expires_at END, allowed_models = $4, allowed_endpoints = $5, policy = $6, metadata = $7, limits = $8 WHERE id = $9";
        let done = on_pool!(self, p => sqlx::query(SQL)
            .bind(&k.name)
            .bind(&k.user)
            .bind(k.expires_at)
            .bind(json_text(&k.allowed_models))
            .bind(json_text(&k.allowed_endpoints))
            .bind(&k.policy)
            .bind(k.metadata.to_string())
            .bind(limits_text(&k.limits))
            .bind(&k.id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Marks a key revoked at `at`, unless it already is (the first
    /// revocation's time stands). Returns false when no such key.
    pub(crate) async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2";
        let done = on_pool!(self, p => sqlx::query(SQL)
            .bind(at)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Inserts the successor and updates the predecessor in one transaction, so
    /// that a crash never leaves a rotation half done.
    pub(crate) async fn rotate(
        &self,
        old: &KeyRecord,
        new: &KeyRecord,
        new_hash: &[u8],
    ) -> Result<(), StoreError> {
        // Only a live key that was never rotated: two rotations racing
        // cannot both succeed.
        const SQL: &str = "UPDATE api_keys SET expires_at = $1, rotated_to = $2 WHERE id = $3 AND revoked_at IS NULL AND rotated_to IS NULL";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            insert_key!(&mut *tx, new, new_hash);
            let done = sqlx::query(SQL)
                .bind(old.expires_at)
                .bind(&old.rotated_to)
                .bind(&old.id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Revoked(old.id.clone()));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The value stored under `name`, storing `value` first if there is
    /// none (the first writer wins, whichever replica it is).
    pub(crate) async fn meta_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<String, StoreError> {
        const INSERT: &str =
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        const SELECT: &str = "SELECT value FROM store_meta WHERE name = $1";
        on_pool!(self, p => {
            sqlx::query(INSERT).bind(name).bind(value).execute(p).await?;
            let row = sqlx::query(SELECT).bind(name).fetch_one(p).await?;
            row.text("value")
        })
    }

    pub(crate) async fn record_event(&self, e: &AdminEvent) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO admin_events (at, actor, action, key_id, detail) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, p => sqlx::query(SQL)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.key_id)
            .bind(e.detail.to_string())
            .execute(p)
            .await
            .map(drop))?;
        Ok(())
    }

    pub(crate) async fn events(&self, limit: i64) -> Result<Vec<AdminEvent>, StoreError> {
        const SQL: &str =
            "SELECT at, actor, action, key_id, detail FROM admin_events ORDER BY id DESC LIMIT $1";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(AdminEvent {
                        at: r.int("at")?,
                        actor: r.text("actor")?,
                        action: r.text("action")?,
                        key_id: r.opt_text("key_id")?,
                        detail: serde_json::from_str(&r.text("detail")?).unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    /// Appends one exchange's usage.
    pub async fn record_usage(&self, u: &UsageRecord) -> Result<(), StoreError> {
        self.record_usage_batch(std::slice::from_ref(u)).await
    }

    /// Appends many exchanges' usage in one transaction: all of them or, on
    /// error, none (so a retry never writes a record twice).
    pub async fn record_usage_batch(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let written = self.write_usage(records).await;
        if let Err(StoreError::Database(e)) = &written
            && unreachable(e)
        {
            // Let the probe run; the ledger retries on its own.
            let _ = self.watch::<()>(Err(sqlx::Error::PoolTimedOut));
        }
        written
    }

    async fn write_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for rows in usage_chunks(records) {
                    insert_usage!(sqlx::Sqlite, &mut *tx, rows);
                }
                tx.commit().await?;
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                for rows in usage_chunks(records) {
                    insert_usage!(sqlx::Postgres, &mut *tx, rows);
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Deletes up to `limit` usage records older than `before` (Unix
    /// seconds), oldest first; returns how many were deleted. Small batches
    /// keep each transaction short.
    pub async fn delete_usage_before(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM usage_records WHERE id IN (SELECT id FROM usage_records WHERE at < $1 ORDER BY id LIMIT $2)";
        let done = on_pool!(self, p => sqlx::query(SQL)
            .bind(before)
            .bind(limit)
            .execute(p)
            .await?
            .rows_affected());
        Ok(done)
    }

    /// Sums the usage of a key or a user recorded at or after `since` (Unix
    /// seconds).
    pub async fn usage_totals(
        &self,
        scope: UsageScope<'_>,
        since: i64,
    ) -> Result<UsageTotals, StoreError> {
        // CAST: Postgres sums BIGINT into NUMERIC; both read back as BIGINT.
        macro_rules! totals {
            ($column:literal) => {
                concat!(
                    "SELECT COUNT(*) AS requests, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) AS cost, CAST(COALESCE(SUM(CASE WHEN estimated THEN 1 ELSE 0 END), 0) AS BIGINT) AS estimated FROM usage_records WHERE ",
                    $column,
                    " = $1 AND at >= $2"
                )
            };
        }
        let (sql, who) = match scope {
            UsageScope::Key(id) => (totals!("key_id"), id),
            UsageScope::User(id) => (totals!("user_id"), id),
        };
        self.reachable()?;
        on_pool!(self, p => {
            let r = self.watch(sqlx::query(sql).bind(who).bind(since).fetch_one(p).await)?;
            Ok(UsageTotals {
                requests: unsigned(r.int("requests")?),
                input_tokens: unsigned(r.int("input_tokens")?),
                output_tokens: unsigned(r.int("output_tokens")?),
                cost: Usd(unsigned(r.int("cost")?)),
                estimated: unsigned(r.int("estimated")?),
            })
        })
    }

    /// Usage recorded in `[since, until)` (Unix seconds), summed per group,
    /// ordered by group.
    pub async fn usage_report(
        &self,
        by: UsageGroup,
        since: i64,
        until: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        // One literal per grouping: the SQL is never built from input.
        macro_rules! report {
            ($group:literal) => {
                concat!(
                    "SELECT ",
                    $group,
                    " AS grp, COUNT(*) AS requests, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) AS cost, CAST(COALESCE(SUM(CASE WHEN estimated THEN 1 ELSE 0 END), 0) AS BIGINT) AS estimated, CAST(COALESCE(SUM(CASE WHEN outcome <> 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed FROM usage_records WHERE at >= $1 AND at < $2 GROUP BY grp ORDER BY grp"
                )
            };
        }
        // CAST: Postgres sums BIGINT into NUMERIC; both read back as BIGINT.
        let sql: &'static str = match (by, &self.pool) {
            (UsageGroup::Key, _) => report!("key_id"),
            (UsageGroup::User, _) => report!("COALESCE(user_id, '')"),
            (UsageGroup::Model, _) => report!("model"),
            (UsageGroup::Day, Pool::Sqlite(_)) => report!("date(at, 'unixepoch')"),
            (UsageGroup::Day, Pool::Postgres(_)) => {
                report!("to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
        };
        self.reachable()?;
        on_pool!(self, p => {
            let rows = self.watch(sqlx::query(sql).bind(since).bind(until).fetch_all(p).await)?;
            rows.iter()
                .map(|r| {
                    Ok(UsageRow {
                        group: r.text("grp")?,
                        totals: UsageTotals {
                            requests: unsigned(r.int("requests")?),
                            input_tokens: unsigned(r.int("input_tokens")?),
                            output_tokens: unsigned(r.int("output_tokens")?),
                            cost: Usd(unsigned(r.int("cost")?)),
                            estimated: unsigned(r.int("estimated")?),
                        },
                        failed: unsigned(r.int("failed")?),
                    })
                })
                .collect()
        })
    }

    /// The most recent usage records of a key, newest first.
    pub async fn usage_records(
        &self,
        key_id: &str,
        limit: i64,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        const SQL: &str = "SELECT request_id, key_id, user_id, at, api, model, provider, input_tokens, cached_input_tokens, output_tokens, cost_nanousd, estimated, outcome FROM usage_records WHERE key_id = $1 ORDER BY id DESC LIMIT $2";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).bind(key_id).bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(UsageRecord {
                        request_id: r.text("request_id")?,
                        key_id: r.text("key_id")?,
                        user_id: r.opt_text("user_id")?,
                        at: r.int("at")?,
                        api: r.text("api")?,
                        model: r.text("model")?,
                        provider: r.text("provider")?,
                        input_tokens: unsigned(r.int("input_tokens")?),
                        cached_input_tokens: unsigned(r.int("cached_input_tokens")?),
                        output_tokens: unsigned(r.int("output_tokens")?),
                        cost: Usd(unsigned(r.int("cost_nanousd")?)),
                        estimated: r.flag("estimated")?,
                        outcome: r.text("outcome")?,
                    })
                })
                .collect()
        })
    }

    /// The limits set on a user (empty when none).
    pub async fn user_limits(&self, user: &str) -> Result<KeyLimits, StoreError> {
        const SQL: &str = "SELECT limits FROM user_limits WHERE user_id = $1";
        self.reachable()?;
        on_pool!(self, p => {
            let row = self.watch(sqlx::query(SQL).bind(user).fetch_optional(p).await)?;
            row.map_or(Ok(KeyLimits::default()), |r| parse_limits(&r.text("limits")?))
        })
    }

    /// Every user with limits, in name order.
    pub async fn list_user_limits(&self) -> Result<Vec<(String, KeyLimits)>, StoreError> {
        const SQL: &str = "SELECT user_id, limits FROM user_limits ORDER BY user_id";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.text("user_id")?, parse_limits(&r.text("limits")?)?)))
                .collect()
        })
    }

    pub(crate) async fn set_user_limits(
        &self,
        user: &str,
        limits: &KeyLimits,
        now: i64,
    ) -> Result<(), StoreError> {
        const UPSERT: &str = "INSERT INTO user_limits (user_id, limits, updated_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET limits = excluded.limits, updated_at = excluded.updated_at";
        const DELETE: &str = "DELETE FROM user_limits WHERE user_id = $1";
        on_pool!(self, p => {
            if limits.is_empty() {
                sqlx::query(DELETE).bind(user).execute(p).await?;
            } else {
                sqlx::query(UPSERT)
                    .bind(user)
                    .bind(limits_text(limits))
                    .bind(now)
                    .execute(p)
                    .await?;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod chunk_tests {
    #[test]
    fn usage_chunks_cover_every_record_in_order_with_five_sizes() {
        let record = |i: usize| super::UsageRecord {
            request_id: i.to_string(),
            key_id: String::new(),
            user_id: None,
            at: 0,
            api: String::new(),
            model: String::new(),
            provider: String::new(),
            input_tokens: 0,
            cached_input_tokens: 0,
            output_tokens: 0,
            cost: crate::Usd(0),
            estimated: false,
            outcome: String::new(),
        };
        for n in [0, 1, 3, 4, 5, 63, 64, 65, 255, 256, 257, 700, 2048] {
            let records: Vec<_> = (0..n).map(record).collect();
            let chunks: Vec<_> = super::usage_chunks(&records).collect();
            assert!(
                chunks
                    .iter()
                    .all(|c| super::USAGE_CHUNKS.contains(&c.len()))
            );
            let joined: Vec<_> = chunks.concat();
            assert_eq!(joined, records, "{n}");
        }
    }
}

/// Inserts a key on a connection or transaction of either backend.
macro_rules! insert_key {
    ($conn:expr, $k:expr, $hash:expr) => {{
        const SQL: &str = concat!(
            "INSERT INTO api_keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let k = $k;
        sqlx::query(SQL)
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.user)
            .bind($hash)
            .bind(k.created_at)
            .bind(k.expires_at)
            .bind(k.revoked_at)
            .bind(&k.rotated_to)
            .bind(json_text(&k.allowed_models))
            .bind(json_text(&k.allowed_endpoints))
            .bind(&k.policy)
            .bind(k.metadata.to_string())
            .bind(limits_text(&k.limits))
            .execute($conn)
            .await?;
    }};
}
use insert_key;

/// Rows per multi-row `INSERT`, largest first: 13 parameters each stays far
/// below SQLite's 32,766 and Postgres's 65,535 bind parameters per
/// statement. A batch is cut into chunks of these sizes only, so the driver's
/// cache holds five prepared statements instead of one per batch size (a
/// statement of a new size is parsed and planned again).
const USAGE_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// `records` in chunks of the sizes of [`USAGE_CHUNKS`], in order.
fn usage_chunks(records: &[UsageRecord]) -> impl Iterator<Item = &[UsageRecord]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        let size = USAGE_CHUNKS.iter().copied().find(|n| *n <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Inserts usage rows with one multi-row `INSERT` on a connection or
/// transaction of the backend `$db`. The statement's text depends only on the
/// number of rows; every value is a bind parameter.
macro_rules! insert_usage {
    ($db:ty, $conn:expr, $rows:expr) => {{
        let mut qb = sqlx::QueryBuilder::<$db>::new(
            "INSERT INTO usage_records (request_id, key_id, user_id, at, api, model, provider, input_tokens, cached_input_tokens, output_tokens, cost_nanousd, estimated, outcome) ",
        );
        qb.push_values($rows, |mut row, u: &UsageRecord| {
            row.push_bind(u.request_id.clone())
                .push_bind(u.key_id.clone())
                .push_bind(u.user_id.clone())
                .push_bind(u.at)
                .push_bind(u.api.clone())
                .push_bind(u.model.clone())
                .push_bind(u.provider.clone())
                .push_bind(signed(u.input_tokens))
                .push_bind(signed(u.cached_input_tokens))
                .push_bind(signed(u.output_tokens))
                .push_bind(signed(u.cost.nanos()))
                .push_bind(u.estimated)
                .push_bind(u.outcome.clone());
        });
        qb.build().execute($conn).await?;
    }};
}
use insert_usage;

/// Column reads shared by both backends' rows.
trait Get {
    fn text(&self, c: &str) -> Result<String, StoreError>;
    fn opt_text(&self, c: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, c: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, c: &str) -> Result<Option<i64>, StoreError>;
    fn bytes(&self, c: &str) -> Result<Vec<u8>, StoreError>;
    fn flag(&self, c: &str) -> Result<bool, StoreError>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, c: &str) -> Result<String, StoreError> {
                Ok(self.try_get(c)?)
            }
            fn opt_text(&self, c: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(c)?)
            }
            fn int(&self, c: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(c)?)
            }
            fn opt_int(&self, c: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(c)?)
            }
            fn bytes(&self, c: &str) -> Result<Vec<u8>, StoreError> {
                Ok(self.try_get(c)?)
            }
            fn flag(&self, c: &str) -> Result<bool, StoreError> {
                Ok(self.try_get(c)?)
            }
        }
    };
}
impl_get!(SqliteRow);
impl_get!(PgRow);

/// Whether an error means the server could not be reached (as opposed to a
/// statement it refused).
fn unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// Creates the database file readable by its owner only (mode 0600) if it
/// does not exist: it holds key hashes, usage and the admin record. SQLite
/// gives its `-wal` and `-shm` files the database file's mode.
fn create_private(path: &str) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// Counts are unsigned here and signed in SQL (neither backend has unsigned
/// 64-bit integers); no count comes near 2⁶³.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn limits_text(limits: &KeyLimits) -> String {
    serde_json::to_string(limits).unwrap_or_else(|_| "{}".into())
}

fn parse_limits(text: &str) -> Result<KeyLimits, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid {
        field: "stored limits",
        reason: e.to_string(),
    })
}

fn json_text(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn key_from_row(r: &impl Get) -> Result<KeyRecord, StoreError> {
    let list = |col: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(&r.text(col)?).map_err(|e| StoreError::Invalid {
            field: "stored list",
            reason: e.to_string(),
        })
    };
    Ok(KeyRecord {
        id: r.text("id")?,
        name: r.text("name")?,
        user: r.opt_text("user_id")?,
        created_at: r.int("created_at")?,
        expires_at: r.opt_int("expires_at")?,
        revoked_at: r.opt_int("revoked_at")?,
        rotated_to: r.opt_text("rotated_to")?,
        allowed_models: list("allowed_models")?,
        allowed_endpoints: list("allowed_endpoints")?,
        policy: r.opt_text("policy")?,
        metadata: serde_json::from_str(&r.text("metadata")?).unwrap_or_default(),
        limits: parse_limits(&r.text("limits")?)?,
    })
}
