//! Persistence: Halberd's keys, user limits, usage records and the record of
//! administrative actions.
//!
//! Only this crate speaks SQL. The default backend is SQLite (one file, created
//! on first use, migrated on open); Postgres is the other, for replicas that
//! share keys, usage and audit. Statements are written once for both.

mod db;
mod error;
mod keyring;
mod money;
mod pepper;

pub use db::{Store, UsageGroup, UsageRecord, UsageRow, UsageScope, UsageTotals};
pub use error::{AuthError, StoreError};
pub use keyring::{AdminEvent, IssuedKey, KeyLimits, KeyRecord, KeySpec, KeyUpdate, Keyring};
pub use money::Usd;
pub use pepper::Pepper;

/// Seconds since the Unix epoch. Every timestamp in the store is one of these.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
