//! The crate's error types.

use std::path::PathBuf;

/// A setting that cannot be used; the message names the option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid --{option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

/// Storage failed; nothing was half-done because multi-row writes run in
/// transactions.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the message writer has stopped")]
    WriterStopped,
    #[error("message batch failed: {0}")]
    BatchFailed(String),
    #[error("a repeated cid was stored by a concurrent batch")]
    CidRace,
    #[error("the database did not answer within {0:?}")]
    NoAnswer(std::time::Duration),
}

/// The password-hashing threads failed or are gone.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(pub String);

/// Why a request could not be served: what errno 10 reports. The request
/// changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("cluster unavailable: {0}")]
    Bus(#[from] BusError),
}

/// Why the server could not start; `main` maps each to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("database unreachable at start-up: {0}")]
    Database(StoreError),
    #[error("redis unreachable at start-up: {0}")]
    Redis(BusError),
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(tlsconf::TlsError),
}

/// A call to the cluster's Redis failed. Requests that needed it get
/// errno 10; local users keep being served.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("redis is not connected")]
    NotConnected,
    #[error("no free server number: {0} servers already run in this cluster")]
    NoFreeNode(u64),
}
