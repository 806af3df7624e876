//! Whose fault is a failed connect: the backend's (it refused, reset, was
//! unreachable or did not answer in time) or the balancer's own (out of file
//! descriptors, memory, buffers or local ports, or too busy to notice the
//! answer). Only the backend's faults count toward `fall`; blaming a healthy
//! backend for our own exhaustion took whole clusters out under a flood.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Who a failure is pinned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Counts toward `fall`.
    Backend,
    /// Ours: counted as a local error, never held against the backend.
    Local,
}

/// Classifies an I/O error of a connect (or of the first write or read on
/// a fresh connection). Only errors that can only come from the other end
/// or the path to it are the backend's; anything unknown is not, since a
/// false "down" costs more than a late one (the checks catch real deaths).
pub fn of_io(e: &io::Error) -> Fault {
    match e.raw_os_error() {
        Some(
            libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ECONNABORTED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::ETIMEDOUT
            | libc::EPIPE,
        ) => Fault::Backend,
        Some(_) => Fault::Local,
        None => match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof => Fault::Backend,
            _ => Fault::Local,
        },
    }
}

/// How late the runtime runs timers, in milliseconds: the balancer's own
/// health. A connect or a check that timed out while the runtime was this
/// late may have been answered in time and not been polled.
#[derive(Debug, Default)]
pub struct Lag {
    millis: AtomicU64,
}

/// How often the lag probe wakes up.
const LAG_PROBE_EVERY: Duration = Duration::from_millis(50);

impl Lag {
    /// The lateness seen by the latest probes (the worst of the last two).
    pub fn now(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    /// Pins a timeout of `limit` on the backend only when the runtime was
    /// on time: late by less than a quarter of the limit.
    pub fn timeout_fault(&self, limit: Duration) -> Fault {
        if self.now() * 4 < limit {
            Fault::Backend
        } else {
            Fault::Local
        }
    }

    /// Measures how late a short sleep wakes up, until `stop`.
    pub async fn probe(&self, stop: CancellationToken) {
        let mut previous = 0u64;
        loop {
            let start = Instant::now();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LAG_PROBE_EVERY) => {}
            }
            let late = start.elapsed().saturating_sub(LAG_PROBE_EVERY).as_millis() as u64;
            self.millis.store(late.max(previous), Ordering::Relaxed);
            previous = late;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_backends_errors_are_its_fault() {
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EHOSTUNREACH,
            libc::ETIMEDOUT,
        ] {
            assert_eq!(of_io(&io::Error::from_raw_os_error(errno)), Fault::Backend);
        }
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            assert_eq!(
                of_io(&io::Error::from_raw_os_error(errno)),
                Fault::Local,
                "{errno}"
            );
        }
    }

    #[test]
    fn a_late_runtime_takes_the_blame_for_timeouts() {
        let lag = Lag::default();
        assert_eq!(lag.timeout_fault(Duration::from_secs(1)), Fault::Backend);
        lag.millis.store(300, Ordering::Relaxed);
        assert_eq!(lag.timeout_fault(Duration::from_secs(1)), Fault::Local);
    }
}
