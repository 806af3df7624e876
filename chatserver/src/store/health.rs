//! When a pooled connection may be used without checking it first.
//!
//! sqlx pings every connection as it goes back to the pool and, by default,
//! again as it comes out: two round trips around each query (on SQLite two
//! hand-offs to the connection's thread). The second ping only finds a
//! connection that died while it sat in the pool, so it is made only when
//! that could have happened: when the connection has been idle for a while,
//! or when a call failed at the connection level since it went idle (any
//! call of the store, the readiness probe's included, or such a ping).
//! After a database restart the connections that sat idle through it are
//! checked once the first failure is noted; until then (the readiness probe
//! runs every second, and its failure counts, timeouts too) a request may
//! meet a dead connection and get errno 10. Token logins went from 5,070 to
//! 5,740 a second with this (SQLite, docs/BENCHMARKS.md).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::calls::CallTimer;
use crate::error::StoreError;

/// How long a connection released to the pool counts as checked by the
/// ping sqlx made as it was released.
const RECENTLY_PINGED: Duration = Duration::from_secs(1);

/// How long the check of an idle connection waits for its ping.
const PING_WITHIN: Duration = Duration::from_secs(1);

/// The last connection-level failure of any call, shared by every pool of
/// one store.
#[derive(Clone)]
pub(super) struct Blips {
    epoch: Instant,
    /// Microseconds after `epoch` plus one; 0: none yet.
    last: Arc<AtomicU64>,
}

impl Default for Blips {
    fn default() -> Self {
        Blips {
            epoch: Instant::now(),
            last: Arc::default(),
        }
    }
}

impl Blips {
    fn note(&self) {
        self.note_at(self.epoch.elapsed());
    }

    fn note_at(&self, at: Duration) {
        self.last
            .fetch_max(at.as_micros() as u64 + 1, Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` may be handed out unchecked.
    fn trusts(&self, idle_for: Duration) -> bool {
        self.trusts_at(self.epoch.elapsed(), idle_for)
    }

    /// [`Blips::trusts`] at `now` (time since `epoch`).
    fn trusts_at(&self, now: Duration, idle_for: Duration) -> bool {
        if idle_for >= RECENTLY_PINGED {
            return false;
        }
        let idle_since = now.saturating_sub(idle_for);
        match self.last.load(Ordering::Relaxed) {
            0 => true,
            last => Duration::from_micros(last - 1) < idle_since,
        }
    }

    /// The pool's check before it hands out a connection idle for
    /// `idle_for`: `false` has the pool close it and take another. A ping
    /// gets as long as a partitioned peer deserves, and its failure is
    /// noted for the other idle connections.
    pub(super) async fn check(&self, conn: &mut sqlx::AnyConnection, idle_for: Duration) -> bool {
        if self.trusts(idle_for) {
            return true;
        }
        use sqlx::Connection;
        let alive = matches!(
            tokio::time::timeout(PING_WITHIN, conn.ping()).await,
            Ok(Ok(()))
        );
        if !alive {
            self.note();
        }
        alive
    }
}

/// What tells a failure of the connection (or of reaching the database)
/// from one of the statement.
pub(super) trait Failure {
    fn is_connection_level(&self) -> bool;
}

impl Failure for sqlx::Error {
    fn is_connection_level(&self) -> bool {
        match self {
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08, connection exception: MariaDB reports a
            // shutdown under way (1053) as 08S01.
            sqlx::Error::Database(error) => error.code().is_some_and(|code| code.starts_with("08")),
            _ => false,
        }
    }
}

impl Failure for StoreError {
    fn is_connection_level(&self) -> bool {
        match self {
            StoreError::Database(error) => error.is_connection_level(),
            StoreError::NoAnswer(_) => true,
            _ => false,
        }
    }
}

/// Times every call for the metrics and notes its connection-level
/// failures in [`Blips`].
#[derive(Clone, Default)]
pub(super) struct StoreCalls {
    pub(super) timer: CallTimer,
    pub(super) blips: Blips,
}

impl StoreCalls {
    pub(super) async fn time<T, E: Failure>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let result = self.timer.time(op, call).await;
        if let Err(error) = &result {
            if error.is_connection_level() {
                self.blips.note();
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_idle_since_before_a_failure_is_checked() {
        let blips = Blips::default();
        let ms = Duration::from_millis;
        assert!(blips.trusts_at(ms(100), ms(5)), "no failure yet");
        assert!(!blips.trusts_at(ms(5000), RECENTLY_PINGED), "idle too long");
        blips.note_at(ms(100));
        assert!(!blips.trusts_at(ms(100), ms(5)), "idle before the failure");
        assert!(!blips.trusts_at(ms(120), ms(25)), "idle before the failure");
        assert!(!blips.trusts_at(ms(120), ms(20)), "idle since the failure");
        assert!(
            blips.trusts_at(ms(120), ms(5)),
            "released after the failure"
        );
    }

    #[test]
    fn only_connection_failures_count() {
        assert!(sqlx::Error::PoolTimedOut.is_connection_level());
        let io = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(StoreError::Database(sqlx::Error::Io(io)).is_connection_level());
        assert!(!sqlx::Error::RowNotFound.is_connection_level());
        assert!(!StoreError::CidRace.is_connection_level());
        assert!(StoreError::NoAnswer(Duration::from_secs(2)).is_connection_level());
    }
}
