//! Brute-force protection for LOGIN: failures per connection and per source
//! address within a sliding minute.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures one connection may make per window; the next attempt is refused.
pub const PER_CONNECTION: usize = 5;
/// Failures one source address may make per window; the next attempt is refused.
pub const PER_ADDRESS: usize = 30;
/// Addresses tracked before stale ones are swept, so a scan of many
/// addresses cannot grow the table without bound.
const SWEEP_ABOVE: usize = 10_000;

/// Failure times within the window, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Failures(VecDeque<Instant>);

impl Failures {
    fn prune(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.0.pop_front();
        }
    }

    /// True when `limit` failures already happened within the window.
    pub fn exceeded(&mut self, limit: usize, now: Instant) -> bool {
        self.prune(now);
        self.0.len() >= limit
    }

    pub fn record(&mut self, now: Instant) {
        self.prune(now);
        self.0.push_back(now);
    }
}

/// Per-address failures shared by every connection.
#[derive(Clone, Default)]
pub struct AddressLimiter {
    failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

impl AddressLimiter {
    pub fn blocked(&self, address: IpAddr, now: Instant) -> bool {
        let mut table = self.failures.lock().expect("limiter lock poisoned");
        table
            .get_mut(&address)
            .is_some_and(|failures| failures.exceeded(PER_ADDRESS, now))
    }

    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        let mut table = self.failures.lock().expect("limiter lock poisoned");
        if table.len() >= SWEEP_ABOVE {
            table.retain(|_, failures| failures.exceeded(1, now));
        }
        table.entry(address).or_default().record(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_is_blocked_after_five_failures_for_the_rest_of_the_minute() {
        let start = Instant::now();
        let mut failures = Failures::default();
        for i in 0..PER_CONNECTION {
            assert!(!failures.exceeded(PER_CONNECTION, start), "attempt {i}");
            failures.record(start + Duration::from_secs(i as u64));
        }
        assert!(failures.exceeded(PER_CONNECTION, start + Duration::from_secs(30)));
        // The first failure leaves the window at 60 s.
        assert!(!failures.exceeded(PER_CONNECTION, start + Duration::from_secs(60)));
    }

    #[test]
    fn address_is_blocked_after_thirty_failures() {
        let limiter = AddressLimiter::default();
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..PER_ADDRESS {
            assert!(!limiter.blocked(address, now));
            limiter.record_failure(address, now);
        }
        assert!(limiter.blocked(address, now));
        assert!(!limiter.blocked(other, now));
        assert!(!limiter.blocked(address, now + WINDOW));
    }
}
