//! Smooth weighted round-robin, the interleaving algorithm of Nginx's
//! `ngx_http_upstream_round_robin.c`, as pure logic with no I/O or clock.
//!
//! Each pick adds every eligible peer's weight to its running score, takes
//! the peer with the highest score and subtracts the total weight from it.
//! Weights 5:1:1 thus give `a a b a c a a` per cycle instead of the bursty
//! `a a a a a b c`, so a heavy backend never gets a run of new clients in a row.

use std::time::Duration;

/// The running scores of one backend list; the caller passes the weights on
/// every pick, so health, connection limits and slow start stay outside.
#[derive(Debug, Clone, Default)]
pub struct SmoothWrr {
    current: Vec<i64>,
}

impl SmoothWrr {
    /// Scores for `n` peers, all starting at zero.
    pub fn new(n: usize) -> Self {
        Self {
            current: vec![0; n],
        }
    }

    /// Picks the index of the next peer. `weights[i] == 0` means peer `i` is
    /// not eligible right now (down, full, already tried); it then neither
    /// gains nor loses score, as in Nginx. `None` when no peer is eligible.
    ///
    /// Ties go to the lowest index, which makes the sequence deterministic.
    pub fn pick(&mut self, weights: &[u32]) -> Option<usize> {
        if self.current.len() != weights.len() {
            self.current = vec![0; weights.len()];
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, &w) in weights.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let w = i64::from(w);
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }
}

/// The effective weight of a backend that came up `since_up` ago under a
/// slow start of `ramp`: it grows linearly from 1 to `weight` over `ramp`,
/// so a fresh or recovered server is not flooded with its full share at once.
pub fn slow_start_weight(weight: u32, since_up: Duration, ramp: Option<Duration>) -> u32 {
    let Some(ramp) = ramp else { return weight };
    if since_up >= ramp || weight <= 1 {
        return weight;
    }
    let scaled = u128::from(weight) * since_up.as_millis() / ramp.as_millis().max(1);
    (scaled as u32).clamp(1, weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> String {
        let mut wrr = SmoothWrr::new(weights.len());
        (0..n)
            .map(|_| (b'a' + wrr.pick(weights).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn five_one_one_interleaves_like_nginx() {
        // Every cycle of 7 picks is exactly the Nginx sequence, not just the first.
        assert_eq!(sequence(&[5, 1, 1], 21), "aabacaa".repeat(3));
    }

    #[test]
    fn other_weights_interleave_exactly_per_cycle() {
        assert_eq!(sequence(&[1, 1, 1], 9), "abc".repeat(3));
        assert_eq!(sequence(&[3, 1], 12), "aaba".repeat(3));
        assert_eq!(sequence(&[2, 1], 9), "aba".repeat(3));
        assert_eq!(sequence(&[4, 2, 1], 14), "abacaba".repeat(2));
        assert_eq!(sequence(&[1], 3), "aaa");
    }

    #[test]
    fn counts_match_weights_in_every_cycle() {
        let weights = [7, 3, 2, 1];
        let total: u32 = weights.iter().sum();
        let mut wrr = SmoothWrr::new(weights.len());
        for _cycle in 0..10 {
            let mut counts = [0u32; 4];
            for _ in 0..total {
                counts[wrr.pick(&weights).unwrap()] += 1;
            }
            assert_eq!(counts, weights);
        }
    }

    #[test]
    fn ineligible_peers_are_skipped_and_rejoin() {
        let mut wrr = SmoothWrr::new(3);
        // b is down: a and c share 5:1.
        let picks: String = (0..6)
            .map(|_| (b'a' + wrr.pick(&[5, 0, 1]).unwrap() as u8) as char)
            .collect();
        assert_eq!(picks.matches('a').count(), 5);
        assert_eq!(picks.matches('c').count(), 1);
        assert!(!picks.contains('b'));
        assert_eq!(wrr.pick(&[0, 0, 0]), None);
        // b back: over the next full cycle the shares are 5:1:1 again.
        let mut counts = [0; 3];
        for _ in 0..7 {
            counts[wrr.pick(&[5, 1, 1]).unwrap()] += 1;
        }
        assert_eq!(counts, [5, 1, 1]);
    }

    #[test]
    fn resizes_when_the_list_changes() {
        let mut wrr = SmoothWrr::new(1);
        assert_eq!(wrr.pick(&[1, 1]), Some(0));
        assert_eq!(wrr.pick(&[1, 1]), Some(1));
    }

    #[test]
    fn slow_start_ramps_linearly_from_one() {
        let ramp = Some(Duration::from_secs(10));
        assert_eq!(slow_start_weight(10, Duration::ZERO, ramp), 1);
        assert_eq!(slow_start_weight(10, Duration::from_secs(1), ramp), 1);
        assert_eq!(slow_start_weight(10, Duration::from_secs(5), ramp), 5);
        assert_eq!(slow_start_weight(10, Duration::from_millis(9_999), ramp), 9);
        assert_eq!(slow_start_weight(10, Duration::from_secs(10), ramp), 10);
        assert_eq!(slow_start_weight(10, Duration::from_secs(99), ramp), 10);
        assert_eq!(slow_start_weight(10, Duration::ZERO, None), 10);
        assert_eq!(slow_start_weight(1, Duration::ZERO, ramp), 1);
    }

    #[test]
    fn slow_start_shifts_share_during_the_ramp() {
        // a is at full weight 4, b just came back with weight 4 under slow start:
        // half-way through the ramp b gets 2 of every 6 picks.
        let b = slow_start_weight(4, Duration::from_secs(5), Some(Duration::from_secs(10)));
        assert_eq!(b, 2);
        let mut wrr = SmoothWrr::new(2);
        let mut counts = [0; 2];
        for _ in 0..6 {
            counts[wrr.pick(&[4, b]).unwrap()] += 1;
        }
        assert_eq!(counts, [4, 2]);
    }
}
