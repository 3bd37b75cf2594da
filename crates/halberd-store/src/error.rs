//! Errors of the store and of key authentication.

/// A failure to read or write the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} is revoked")]
    Revoked(String),
    #[error("invalid value for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("pepper: {0}")]
    Pepper(String),
    #[error("random number generator unavailable")]
    Random,
    #[error("cannot create the database file: {0}")]
    Io(std::io::Error),
    /// The database did not answer recently and is being probed in the
    /// background: the read was not attempted.
    #[error("the store is unreachable")]
    Unreachable,
}

/// Why a presented key was refused. `Malformed`, `Unknown` and `Mismatch` all
/// mean "invalid key" to the client: telling them apart would let a caller probe
/// which key ids exist. `Expired` and `Revoked` are only reported once the
/// secret has been verified, so they leak nothing to a guesser.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed key")]
    Malformed,
    #[error("unknown key id")]
    Unknown,
    #[error("secret does not match")]
    Mismatch,
    #[error("key expired")]
    Expired,
    #[error("key revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}
