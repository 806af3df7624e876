//! Message ids: unique per server number, roughly time-ordered, below 2^53.
//!
//! Layout (53 bits): 40 bits of milliseconds since 2024-01-01 (about 34
//! years), 7 bits of server number (128 servers in a cluster), 6 bits of
//! sequence. More than 64 ids in one millisecond borrow from the next
//! millisecond, so ids never repeat and never go backwards on one server;
//! a server stores well under 64 messages per millisecond, so borrowing
//! stays short.
//!
//! Until 2026-12 the low 13 bits were 5 of server number and 8 of
//! sequence, which capped a cluster at 32 servers (the 33rd could not
//! lease a number and did not start). The milliseconds kept their place,
//! so ids of either layout compare by time alike; only during a rolling
//! upgrade across that change could an old and a new server issue the
//! same id in the same millisecond; the writer's batch holding the second
//! one then fails on the duplicate key and its senders get errno 10 (a
//! refusal they can retry with their cid, not a silent loss).

use std::sync::atomic::{AtomicU64, Ordering};

const EPOCH_MS: u64 = 1_704_067_200_000;
const SEQ_BITS: u32 = 6;
const NODE_BITS: u32 = 7;
pub const MAX_NODE: u64 = (1 << NODE_BITS) - 1;

#[derive(Debug)]
pub struct MidGenerator {
    /// The server number; may change when a cluster re-leases it.
    node: AtomicU64,
    /// Last issued (milliseconds << SEQ_BITS | sequence).
    last: AtomicU64,
}

impl MidGenerator {
    pub fn new(node: u64) -> Self {
        Self {
            node: AtomicU64::new(node & MAX_NODE),
            last: AtomicU64::new(0),
        }
    }

    pub fn set_node(&self, node: u64) {
        self.node.store(node & MAX_NODE, Ordering::Relaxed);
    }

    pub fn next(&self) -> i64 {
        let now = (chrono::Utc::now().timestamp_millis() as u64).saturating_sub(EPOCH_MS);
        let floor = now << SEQ_BITS;
        let mut current = self.last.load(Ordering::Relaxed);
        let issued = loop {
            let candidate = floor.max(current + 1);
            match self.last.compare_exchange_weak(
                current,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break candidate,
                Err(actual) => current = actual,
            }
        };
        let millis = issued >> SEQ_BITS;
        let seq = issued & ((1 << SEQ_BITS) - 1);
        let node = self.node.load(Ordering::Relaxed);
        ((millis << (NODE_BITS + SEQ_BITS)) | (node << SEQ_BITS) | seq) as i64
    }
}

/// The smallest id any server issues at `unix_ms` (and later): ids below
/// it are older. Retention compares ids with it.
pub fn first_mid_at(unix_ms: i64) -> i64 {
    let millis = (unix_ms as u64).saturating_sub(EPOCH_MS);
    (millis << (NODE_BITS + SEQ_BITS)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_issued_after_a_time_are_not_below_its_first_mid() {
        let before = first_mid_at(chrono::Utc::now().timestamp_millis());
        let mid = MidGenerator::new(MAX_NODE).next();
        assert!(mid >= before);
        assert!(first_mid_at(chrono::Utc::now().timestamp_millis() + 1000) > mid);
    }

    #[test]
    fn ids_increase_stay_below_2_pow_53_and_carry_the_node() {
        let generator = MidGenerator::new(100);
        let mut previous = 0;
        for _ in 0..10_000 {
            let mid = generator.next();
            assert!(mid > previous);
            assert!(mid < 1 << 53);
            assert_eq!((mid >> SEQ_BITS) & MAX_NODE as i64, 100);
            previous = mid;
        }
    }
}
