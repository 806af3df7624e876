//! When a pooled connection may be used without checking it first.
//!
//! sqlx pings every connection as it goes back to the pool and, by default,
//! again as it comes out: two round trips around each query (on SQLite two
//! hand-offs to the connection's thread). The second ping only finds a
//! connection that died while it sat in the pool, so it is made only when
//! that could have happened: when the connection has been idle for a while,
//! or when any call failed at the connection level (or the readiness probe
//! did) since the connection went idle. A database restart then costs no
//! request when the probe saw it first, and at most one when it did not.
//! Token logins went from 5,070 to 5,740 a second with this (SQLite,
//! docs/BENCHMARKS.md).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::calls::CallTimer;
use crate::error::StoreError;

/// How long a connection released to the pool counts as checked by the
/// ping sqlx made as it was released.
const RECENTLY_PINGED: Duration = Duration::from_secs(1);

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
        let micros = self.epoch.elapsed().as_micros() as u64 + 1;
        self.last.fetch_max(micros, Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` may be handed out unchecked.
    pub(super) fn trusts(&self, idle_for: Duration) -> bool {
        if idle_for >= RECENTLY_PINGED {
            return false;
        }
        let idle_since = self.epoch.elapsed().saturating_sub(idle_for);
        match self.last.load(Ordering::Relaxed) {
            0 => true,
            last => Duration::from_micros(last - 1) < idle_since,
        }
    }
}

/// What tells a failure of the connection (or of reaching the database)
/// from one of the statement.
pub(super) trait Failure {
    fn is_connection_level(&self) -> bool;
}

impl Failure for sqlx::Error {
    fn is_connection_level(&self) -> bool {
        matches!(
            self,
            sqlx::Error::Io(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed
        )
    }
}

impl Failure for StoreError {
    fn is_connection_level(&self) -> bool {
        matches!(self, StoreError::Database(error) if error.is_connection_level())
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
        std::thread::sleep(Duration::from_millis(20));
        assert!(blips.trusts(Duration::from_millis(5)), "no failure yet");
        assert!(!blips.trusts(RECENTLY_PINGED), "idle too long");
        blips.note();
        assert!(
            !blips.trusts(Duration::from_millis(5)),
            "idle before the failure"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            blips.trusts(Duration::from_millis(5)),
            "released after the failure"
        );
        assert!(
            !blips.trusts(Duration::from_millis(25)),
            "idle before the failure"
        );
    }

    #[test]
    fn only_connection_failures_count() {
        assert!(sqlx::Error::PoolTimedOut.is_connection_level());
        let io = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(StoreError::Database(sqlx::Error::Io(io)).is_connection_level());
        assert!(!sqlx::Error::RowNotFound.is_connection_level());
        assert!(!StoreError::CidRace.is_connection_level());
    }
}
