//! Persistence: Halberd's keys and the record of administrative actions.
//!
//! Only this crate speaks SQL. The default backend is SQLite (one file, created
//! on first use, migrated on open). The schema sticks to types and statements
//! that Postgres shares, so a second backend adds a migration folder and a pool,
//! not a second design.

mod error;
mod keyring;
mod pepper;
mod sqlite;

pub use error::{AuthError, StoreError};
pub use keyring::{AdminEvent, IssuedKey, KeyLimits, KeyRecord, KeySpec, KeyUpdate, Keyring};
pub use pepper::Pepper;
pub use sqlite::Store;

/// Seconds since the Unix epoch. Every timestamp in the store is one of these.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
