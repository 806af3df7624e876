//! One backend's live state — health, counters, connection slots — and the
//! snapshot of the backend list that new connections pick from.
//!
//! A [`BackendState`] is keyed by address and outlives reloads: a reload
//! builds a new [`Snapshot`] that points at the same states, so health and
//! counters carry on and established connections, which hold their state and
//! not the snapshot, never notice the swap.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, Config};
use crate::selection::{slow_start_weight, SmoothWrr};

/// Counters of one backend, read by `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct Stats {
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub bytes_to_backend: AtomicU64,
    pub bytes_to_client: AtomicU64,
    /// Client connections whose connect to this backend failed or timed out
    /// for a reason that is the backend's (refused, reset, unreachable, timeout).
    pub connect_failures: AtomicU64,
    /// Client connections to this backend that sent bytes and got none back
    /// within `response_timeout`.
    pub response_timeouts: AtomicU64,
    /// Failed health checks.
    pub check_failures: AtomicU64,
    /// Connects and checks that failed for a reason of the balancer's own
    /// (EMFILE, ENOMEM, a late runtime): not held against the backend.
    pub local_errors: AtomicU64,
}

/// Consecutive results and the up/down verdict; changed under a short lock.
#[derive(Debug)]
struct Health {
    up: bool,
    successes: u32,
    failures: u32,
    /// When the backend last came up or was added by a reload: the start of
    /// its slow start. `None` for backends present at start-up, which all
    /// begin together, so ramping them would only distort their shares.
    up_since: Option<Instant>,
}

/// What a health result did to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentUp,
    WentDown,
}

/// The state of one backend address, shared by the snapshot, the health
/// task and every connection to it.
#[derive(Debug)]
pub struct BackendState {
    pub address: String,
    pub stats: Stats,
    /// Mirror of `health.up` so the pick path reads one atomic, not a lock.
    up: AtomicBool,
    health: Mutex<Health>,
    /// Consecutive failures seen on client traffic (connects the backend
    /// refused or left unanswered, requests it left unanswered). Kept apart
    /// from the checks' streak and outside the lock, because only proof
    /// that the backend answers breaks it: a byte back on a client
    /// connection or a passing chat check; a TCP check or a completed
    /// connect proves nothing about a wedged server.
    passive_failures: AtomicU32,
    /// Set while the backend is absent from the config but still has connections.
    removed: AtomicBool,
    /// Bumped on every removal or re-addition, so a drain timer started for
    /// an older removal does nothing.
    generation: AtomicU64,
    /// Cancelled to end this backend's connections when a drain times out.
    kill: Mutex<CancellationToken>,
}

impl BackendState {
    pub fn new(address: &str) -> Arc<Self> {
        Arc::new(Self {
            address: address.to_string(),
            stats: Stats::default(),
            up: AtomicBool::new(true),
            health: Mutex::new(Health {
                up: true,
                successes: 0,
                failures: 0,
                up_since: None,
            }),
            passive_failures: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            kill: Mutex::new(CancellationToken::new()),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// How long ago the backend came up (`Duration::MAX` when it has been up
    /// since start-up), or `None` while it is down.
    pub fn up_for(&self, now: Instant) -> Option<Duration> {
        let h = self.health.lock().unwrap();
        h.up.then(|| {
            h.up_since
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
        })
    }

    /// Records a successful check. Only health checks count successes: a
    /// down backend comes back after `rise` of them in a row. A check that
    /// got an application answer (`answered`: PING → PONG) also breaks the
    /// client-traffic streak.
    pub fn record_success(&self, rise: u32, answered: bool) -> Transition {
        if answered {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
        let mut h = self.health.lock().unwrap();
        h.failures = 0;
        if h.up {
            return Transition::None;
        }
        h.successes += 1;
        if h.successes >= rise {
            h.up = true;
            h.successes = 0;
            // Failures counted while it was down were about the old outage.
            self.passive_failures.store(0, Ordering::Relaxed);
            h.up_since = Some(Instant::now());
            self.up.store(true, Ordering::Relaxed);
            return Transition::WentUp;
        }
        Transition::None
    }

    /// Records a failed check; after `fall` in a row an up backend goes
    /// down. Only a passing check breaks the streak: a client connect that
    /// completes proves nothing (a wedged server accepts and never answers).
    pub fn record_failure(&self, fall: u32) -> Transition {
        let mut h = self.health.lock().unwrap();
        h.successes = 0;
        if !h.up {
            return Transition::None;
        }
        h.failures += 1;
        if h.failures >= fall {
            return self.go_down(&mut h);
        }
        Transition::None
    }

    /// Records a failure seen on client traffic (a refused or timed-out
    /// connect, a request left unanswered); after `fall` in a row, with no
    /// answer from the backend in between, an up backend goes down. It
    /// comes back through its checks only.
    pub fn record_passive_failure(&self, fall: u32) -> Transition {
        let n = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < fall {
            return Transition::None;
        }
        let mut h = self.health.lock().unwrap();
        if !h.up {
            return Transition::None;
        }
        self.go_down(&mut h)
    }

    /// The backend answered a client: its client-traffic streak is broken.
    /// One atomic store, cheap enough for the data path.
    pub fn record_answer(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    fn go_down(&self, h: &mut Health) -> Transition {
        h.up = false;
        h.failures = 0;
        h.successes = 0;
        self.passive_failures.store(0, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        Transition::WentDown
    }

    /// Takes a connection slot unless `limit` slots are in use.
    pub fn try_acquire(&self, limit: Option<u32>) -> bool {
        let Some(limit) = limit else {
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        self.stats
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < u64::from(limit)).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release(&self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn active(&self) -> u64 {
        self.stats.active.load(Ordering::Relaxed)
    }

    /// The token that ends this backend's connections when a drain times out.
    pub fn kill_token(&self) -> CancellationToken {
        self.kill.lock().unwrap().clone()
    }

    /// Marks the backend as removed from the config; returns the generation a
    /// drain timer must present to [`Self::expire_drain`].
    pub fn mark_removed(&self) -> u64 {
        self.removed.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The backend is back in the config: any pending drain timer is void,
    /// and it starts a fresh slow start.
    pub fn mark_added(&self) {
        self.removed.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut h = self.health.lock().unwrap();
        if h.up {
            h.up_since = Some(Instant::now());
        }
    }

    /// Ends the remaining connections if the removal of `generation` still holds.
    pub fn expire_drain(&self, generation: u64) -> bool {
        if !self.is_removed() || self.generation.load(Ordering::Acquire) != generation {
            return false;
        }
        let mut kill = self.kill.lock().unwrap();
        kill.cancel();
        // Fresh token: a later re-addition must not inherit a cancelled one.
        *kill = CancellationToken::new();
        true
    }
}

/// A backend as the current config sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub state: Arc<BackendState>,
    pub weight: u32,
    pub max_connections: Option<u32>,
    /// Send a PROXY protocol v2 header first on every connection to it.
    pub proxy_protocol: bool,
}

/// What new connections pick from: the config and its members, swapped whole
/// on reload. The round-robin scores live here too; a std mutex is enough
/// because a pick is a few additions and never awaits.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub members: Vec<Member>,
    /// Bumped by every applied reload.
    pub generation: u64,
    wrr: Mutex<SmoothWrr>,
}

impl Snapshot {
    /// Builds a snapshot, reusing states by address through `state_for`.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        mut state_for: impl FnMut(&BackendConfig) -> Arc<BackendState>,
    ) -> Self {
        let members: Vec<Member> = config
            .backends
            .iter()
            .map(|b| Member {
                state: state_for(b),
                weight: b.weight,
                max_connections: b.max_connections,
                proxy_protocol: b.proxy_protocol,
            })
            .collect();
        let wrr = Mutex::new(SmoothWrr::new(members.len()));
        Self {
            config,
            members,
            generation,
            wrr,
        }
    }

    /// The weight a member gets right now, slow start included; 0 when down.
    pub fn effective_weight(&self, m: &Member, now: Instant) -> u32 {
        match m.state.up_for(now) {
            Some(up_for) => slow_start_weight(m.weight, up_for, self.config.slow_start),
            None => 0,
        }
    }

    /// Picks the next up member that is not in `tried` and has a free slot,
    /// and takes the slot. When no member is up at all, the checks may be
    /// stale: members are then tried in config order, health ignored.
    pub fn pick(&self, tried: &mut Vec<usize>) -> Option<usize> {
        let now = Instant::now();
        let any_up = self.members.iter().any(|m| m.state.is_up());
        if !any_up {
            // Fallback: config order, first one not tried with a free slot.
            for (i, m) in self.members.iter().enumerate() {
                if tried.contains(&i) {
                    continue;
                }
                tried.push(i);
                if m.state.try_acquire(m.max_connections) {
                    return Some(i);
                }
            }
            return None;
        }
        let mut weights: Vec<u32> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if tried.contains(&i) {
                    0
                } else {
                    self.effective_weight(m, now)
                }
            })
            .collect();
        loop {
            let i = self.wrr.lock().unwrap().pick(&weights)?;
            tried.push(i);
            let m = &self.members[i];
            if m.state.try_acquire(m.max_connections) {
                return Some(i);
            }
            // Full: skip it for this client, without counting a failure.
            weights[i] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_thresholds() {
        let b = BackendState::new("x:1");
        assert!(b.is_up(), "backends start up");
        assert_eq!(b.record_failure(3), Transition::None);
        assert_eq!(b.record_failure(3), Transition::None);
        assert_eq!(b.record_success(2, false), Transition::None); // a passing check breaks the streak
        assert_eq!(b.record_failure(3), Transition::None);
        assert_eq!(b.record_failure(3), Transition::None);
        assert_eq!(b.record_failure(3), Transition::WentDown);
        assert!(!b.is_up());
        assert_eq!(b.record_success(2, true), Transition::None);
        assert_eq!(b.record_failure(3), Transition::None);
        assert_eq!(b.record_success(2, true), Transition::None);
        assert_eq!(b.record_success(2, true), Transition::WentUp);
        assert!(b.is_up());
    }

    #[test]
    fn client_traffic_streak_breaks_only_on_answers() {
        let b = BackendState::new("x:1");
        assert_eq!(b.record_passive_failure(3), Transition::None);
        assert_eq!(b.record_passive_failure(3), Transition::None);
        // A TCP check passing proves nothing about answering.
        assert_eq!(b.record_success(2, false), Transition::None);
        assert_eq!(b.record_passive_failure(3), Transition::WentDown);
        assert_eq!(b.record_success(2, false), Transition::None);
        // Client connects keep failing while it is down...
        for _ in 0..5 {
            assert_eq!(b.record_passive_failure(3), Transition::None);
        }
        assert_eq!(b.record_success(2, false), Transition::WentUp);
        // ...and are forgotten when it comes back.
        assert_eq!(b.record_passive_failure(3), Transition::None);
        b.record_answer();
        assert_eq!(b.record_passive_failure(3), Transition::None);
        assert_eq!(b.record_passive_failure(3), Transition::None);
        assert_eq!(b.record_success(2, true), Transition::None);
        assert_eq!(b.record_passive_failure(3), Transition::None);
        assert!(b.is_up());
    }

    #[test]
    fn slots_are_limited() {
        let b = BackendState::new("x:1");
        assert!(b.try_acquire(Some(2)));
        assert!(b.try_acquire(Some(2)));
        assert!(!b.try_acquire(Some(2)));
        b.release();
        assert!(b.try_acquire(Some(2)));
        assert!(b.try_acquire(None));
        assert_eq!(b.active(), 3);
    }

    #[test]
    fn drain_expiry_respects_generation() {
        let b = BackendState::new("x:1");
        let token = b.kill_token();
        let gen = b.mark_removed();
        b.mark_added();
        assert!(!b.expire_drain(gen), "re-added: the old timer is void");
        let gen = b.mark_removed();
        assert!(b.expire_drain(gen));
        assert!(token.is_cancelled());
        assert!(!b.kill_token().is_cancelled());
    }
}
