//! Bounded waiting: polling a condition until a deadline, and free ports.
//!
//! Everything here reads tokio's clock, so tests under paused time
//! (`#[tokio::test(start_paused = true)]`) wait in virtual time.

use std::time::Duration;

use tokio::time::Instant;

use crate::WAIT;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds; false if it still fails after `within`.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after(within);
    loop {
        if cond() {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it holds; panics naming `what` after [`WAIT`].
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(WAIT, cond).await,
        "timed out after {WAIT:?} waiting for {what}"
    );
}

/// A point in time a loop must finish by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    within: Duration,
}

impl Deadline {
    pub fn after(within: Duration) -> Self {
        Deadline {
            at: Instant::now() + within,
            within,
        }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Panics naming `what` if the deadline has passed.
    #[track_caller]
    pub fn check(&self, what: &str) {
        assert!(!self.passed(), "{what} (after {:?})", self.within);
    }
}

/// A port nothing listens on right now (bound to 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_are_bounded_in_virtual_time() {
        let started = Instant::now();
        assert!(!wait_until(Duration::from_secs(30), || false).await);
        assert!(started.elapsed() >= Duration::from_secs(30));
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(1), || {
                n += 1;
                n == 3
            })
            .await
        );
        let deadline = Deadline::after(Duration::from_secs(1));
        deadline.check("not yet");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(deadline.passed());
    }
}
