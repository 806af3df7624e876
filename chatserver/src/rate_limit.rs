//! Sliding-minute counters: failures of one connection ([`Failures`]) and
//! events per key shared by all connections ([`Table`]), the building block
//! of the login, signup and connection limits.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures one connection may make per window; the next attempt is refused.
pub const PER_CONNECTION: usize = 5;
/// Addresses tracked before stale ones are swept, so a scan of many
/// addresses cannot grow the table without bound.
const SWEEP_ABOVE: usize = 10_000;

/// The key under which an address is limited: an IPv4 address (mapped or
/// not) as itself, an IPv6 address by its /64 network, since one client
/// commonly holds a whole /64.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

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

/// Events per key (an address, an account...) within the window, shared
/// by every connection. Checks and records happen under one short lock, so
/// concurrent attempts cannot all slip under a limit.
pub struct Table<K> {
    entries: Mutex<HashMap<K, Failures>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Copy> Table<K> {
    /// True when `limit` events of `key` happened within the window.
    pub fn exceeded(&self, key: K, limit: usize, now: Instant) -> bool {
        let mut table = self.entries.lock().expect("limiter lock poisoned");
        table
            .get_mut(&key)
            .is_some_and(|events| events.exceeded(limit, now))
    }

    pub fn record(&self, key: K, now: Instant) {
        let mut table = self.entries.lock().expect("limiter lock poisoned");
        if table.len() >= SWEEP_ABOVE {
            table.retain(|_, events| events.exceeded(1, now));
        }
        table.entry(key).or_default().record(now);
    }

    /// Records an event unless `limit` are already within the window;
    /// `false` (nothing recorded) when the limit is reached.
    pub fn try_record(&self, key: K, limit: usize, now: Instant) -> bool {
        let mut table = self.entries.lock().expect("limiter lock poisoned");
        if table.len() >= SWEEP_ABOVE {
            table.retain(|_, events| events.exceeded(1, now));
        }
        let events = table.entry(key).or_default();
        if events.exceeded(limit, now) {
            return false;
        }
        events.record(now);
        true
    }

    /// Takes back the latest event of `key`: an attempt that went well.
    pub fn forget_one(&self, key: K) {
        let mut table = self.entries.lock().expect("limiter lock poisoned");
        if let Some(events) = table.get_mut(&key) {
            events.0.pop_back();
        }
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
    fn addresses_are_keyed_by_v4_address_or_v6_network() {
        let key = |text: &str| address_key(text.parse().unwrap()).to_string();
        assert_eq!(key("10.0.0.1"), "10.0.0.1");
        assert_eq!(key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    }

    #[test]
    fn a_key_is_blocked_at_its_limit_and_a_success_is_taken_back() {
        let table: Table<std::net::IpAddr> = Table::default();
        let address = "10.0.0.1".parse().unwrap();
        let other = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..30 {
            assert!(!table.exceeded(address, 30, now));
            assert!(table.try_record(address, 30, now));
        }
        assert!(table.exceeded(address, 30, now));
        assert!(!table.try_record(address, 30, now));
        assert!(!table.exceeded(other, 30, now));
        assert!(!table.exceeded(address, 30, now + WINDOW));
        table.forget_one(address);
        assert!(table.try_record(address, 30, now));
    }
}
