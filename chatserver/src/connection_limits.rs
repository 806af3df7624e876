//! How many connections are served at once, in all and per client address,
//! and how accepting backs off when the process is out of descriptors. A
//! connection holds a slot (released on drop) for as long as it is served.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::AbuseLimits;
use crate::rate_limit::address_key;

pub struct ConnectionLimits {
    max: usize,
    per_ip: usize,
    total: Arc<AtomicUsize>,
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::new(&AbuseLimits::default())
    }
}

/// One of the `--max-connections` slots.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of an address's `--max-connections-per-ip` slots.
pub struct IpSlot {
    by_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut by_ip = self.by_ip.lock().expect("connection table lock");
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionLimits {
    pub fn new(limits: &AbuseLimits) -> Self {
        Self {
            max: limits.max_connections,
            per_ip: limits.max_connections_per_ip,
            total: Arc::default(),
            by_ip: Arc::default(),
        }
    }

    /// A slot, or `None` when `--max-connections` are open.
    pub fn open(&self) -> Option<Slot> {
        let before = self.total.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.total.clone());
        (before < self.max).then_some(slot)
    }

    /// A slot of `ip`'s, or `None` when it holds `--max-connections-per-ip`.
    pub fn open_ip(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = address_key(ip);
        let mut by_ip = self.by_ip.lock().expect("connection table lock");
        let count = by_ip.entry(ip).or_default();
        if *count >= self.per_ip {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            by_ip: self.by_ip.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open_count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// The pause after a failed accept (out of descriptors, usually): doubles
/// from 10 ms to 1 s while accepts fail, so the loop never spins, and
/// starts over after a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn failed(&mut self) -> Duration {
        let pause = Self::FIRST
            .saturating_mul(1 << self.failures.min(10))
            .min(Self::MAX);
        self.failures += 1;
        pause
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_on_drop() {
        let limits = ConnectionLimits::new(&AbuseLimits {
            max_connections: 2,
            max_connections_per_ip: 1,
            ..AbuseLimits::default()
        });
        let a = limits.open().unwrap();
        let _b = limits.open().unwrap();
        assert!(limits.open().is_none());
        assert_eq!(limits.open_count(), 2);
        drop(a);
        assert!(limits.open().is_some());

        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limits.open_ip(ip).unwrap();
        assert!(limits.open_ip(ip).is_none());
        assert!(limits.open_ip("::ffff:10.0.0.1".parse().unwrap()).is_none());
        assert!(limits.open_ip("10.0.0.2".parse().unwrap()).is_some());
        drop(first);
        assert!(limits.open_ip(ip).is_some());
        assert!(limits.by_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<Duration> = (0..9).map(|_| backoff.failed()).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert_eq!(pauses[8], Duration::from_secs(1));
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(10));
    }
}
