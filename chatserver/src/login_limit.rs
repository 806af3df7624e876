//! LOGIN limits that stop password guessing without letting one client lock
//! others out. Three sliding-minute counters, each refusing with errno 9:
//!
//! - per (account, address): one client guessing one password;
//! - per address: one client trying many accounts;
//! - per account, across addresses: a botnet guessing one password. This
//!   one would let an attacker lock the owner out, so it never applies to
//!   an address that logged into that account before (remembered for
//!   [`KNOWN_FOR`]). In cluster mode it is counted in Redis, so it holds
//!   across servers; while Redis is away each server counts alone.
//!
//! The first two count failures: many users behind one NAT logging in at
//! once never trip them. The account ceiling counts attempts when admitted,
//! before the password is checked, and takes them back when it was right:
//! guesses from many addresses at once cannot all slip under it while their
//! hashes are computed.
//!
//! Redis keys (under the cluster prefix): `login:tries:{id}` counts a
//! minute of attempts at account `id` (it expires at the end of that
//! minute); `login:addresses:{id}` holds the addresses that logged into it,
//! as the fields of a hash. A hash of a few fields is one compact listpack
//! in Redis (80 bytes for one address), where a set of strings is a hash
//! table (176 bytes by `MEMORY USAGE`, before Redis 7.2): at a million
//! users the set was the largest thing Redis held. Earlier versions kept a
//! set under `login:known:{id}`; it is left to expire, and an address
//! remembered only there is counted again until its next login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Script;

use crate::bus::redis::RedisBus;
use crate::config::AbuseLimits;
use crate::error::BusError;
use crate::rate_limit::{address_key, Table, WINDOW};

/// How long an address that logged into an account stays exempt from that
/// account's ceiling.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Addresses remembered per account on one server; the oldest goes first.
const KNOWN_PER_ACCOUNT: usize = 8;
/// Accounts with remembered addresses on one server before the table is
/// emptied (they are remembered again at their next login).
const KNOWN_ACCOUNTS_MAX: usize = 100_000;

/// Counts one attempt at an account unless its address is known; returns
/// -1 for a known address, else the attempts within this window.
const ADMIT: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
";

/// Where the per-account ceiling is counted.
struct Shared {
    redis: Arc<RedisBus>,
    prefix: String,
    admit: Script,
}

pub struct LoginLimiter {
    per_account_address: usize,
    per_address: usize,
    per_account: usize,
    account_address: Table<(i64, IpAddr)>,
    address: Table<IpAddr>,
    account: Table<i64>,
    known: Mutex<HashMap<i64, Vec<IpAddr>>>,
    shared: Option<Shared>,
}

/// Where an admitted attempt was counted against its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// A known address: not counted against the account.
    No,
    Here,
    InRedis,
}

/// An admitted attempt, settled by [`LoginLimiter::succeeded`] or
/// [`LoginLimiter::failed`].
#[derive(Debug)]
pub struct Attempt {
    account: i64,
    address: IpAddr,
    counted: Counted,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(&AbuseLimits::default(), None)
    }
}

impl LoginLimiter {
    /// `cluster`: the Redis bus and its key prefix, to share the account
    /// ceiling between servers.
    pub fn new(limits: &AbuseLimits, cluster: Option<(Arc<RedisBus>, String)>) -> Self {
        Self {
            per_account_address: limits.login_failures_per_account_address,
            per_address: limits.login_failures_per_address,
            per_account: limits.login_failures_per_account,
            account_address: Table::default(),
            address: Table::default(),
            account: Table::default(),
            known: Mutex::new(HashMap::new()),
            shared: cluster.map(|(redis, prefix)| Shared {
                redis,
                prefix,
                admit: Script::new(ADMIT),
            }),
        }
    }

    /// Counts an attempt at `account` from `address`; `None` when a limit
    /// is reached (answer errno 9, without checking the password).
    pub async fn admit(&self, account: i64, address: IpAddr) -> Option<Attempt> {
        let address = address_key(address);
        let now = Instant::now();
        if self
            .account_address
            .exceeded((account, address), self.per_account_address, now)
            || self.address.exceeded(address, self.per_address, now)
        {
            return None;
        }
        let counted = if self.is_known_here(account, address) {
            Counted::No
        } else {
            match self.admit_shared(account, address).await {
                Ok(Some(-1)) => Counted::No,
                Ok(Some(n)) if n > self.per_account as i64 => return None,
                Ok(Some(_)) => Counted::InRedis,
                Ok(None) | Err(_) => {
                    if !self.account.try_record(account, self.per_account, now) {
                        return None;
                    }
                    Counted::Here
                }
            }
        };
        Some(Attempt {
            account,
            address,
            counted,
        })
    }

    /// The password was wrong: a failure of the address, at the account
    /// and in all.
    pub fn failed(&self, attempt: Attempt) {
        let now = Instant::now();
        self.account_address
            .record((attempt.account, attempt.address), now);
        self.address.record(attempt.address, now);
    }

    /// The password was right: the attempt is taken back from the account
    /// and the address is known for this account from now on.
    pub async fn succeeded(&self, attempt: Attempt) {
        let Attempt {
            account,
            address,
            counted,
        } = attempt;
        if counted == Counted::Here {
            self.account.forget_one(account);
        }
        {
            let mut known = self.known.lock().expect("known addresses lock");
            if known.len() >= KNOWN_ACCOUNTS_MAX {
                known.clear();
            }
            let addresses = known.entry(account).or_default();
            if !addresses.contains(&address) {
                if addresses.len() >= KNOWN_PER_ACCOUNT {
                    addresses.remove(0);
                }
                addresses.push(address);
            }
        }
        if let Some(shared) = &self.shared {
            if let Err(error) = remember_shared(shared, account, address, counted).await {
                tracing::warn!(%error, "cannot record the login address in redis");
            }
        }
    }

    fn is_known_here(&self, account: i64, address: IpAddr) -> bool {
        let known = self.known.lock().expect("known addresses lock");
        known
            .get(&account)
            .is_some_and(|addresses| addresses.contains(&address))
    }

    /// The Redis count of attempts at `account` including this one, or -1
    /// for a known address; `None` when not in cluster mode or Redis is away.
    async fn admit_shared(&self, account: i64, address: IpAddr) -> Result<Option<i64>, BusError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        if !shared.redis.reachable.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut conn = shared.redis.conn();
        let mut invocation = shared.admit.prepare_invoke();
        invocation
            .key(format!("{}login:tries:{account}", shared.prefix))
            .key(format!("{}login:addresses:{account}", shared.prefix))
            .arg(address.to_string())
            .arg(WINDOW.as_millis() as u64);
        let result = shared
            .redis
            .call("login_admit", async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
            .await;
        match result {
            Ok(n) => Ok(Some(n)),
            Err(error) => {
                tracing::debug!(%error, "redis unavailable: counting login attempts on this server alone");
                Err(error)
            }
        }
    }
}

async fn remember_shared(
    shared: &Shared,
    account: i64,
    address: IpAddr,
    counted: Counted,
) -> Result<(), BusError> {
    let mut conn = shared.redis.conn();
    let known = format!("{}login:addresses:{account}", shared.prefix);
    let tries = format!("{}login:tries:{account}", shared.prefix);
    let mut pipe = redis::pipe();
    pipe.hset(&known, address.to_string(), 1)
        .ignore()
        .expire(&known, KNOWN_FOR.as_secs() as i64)
        .ignore();
    if counted == Counted::InRedis {
        pipe.decr(&tries, 1).ignore();
    }
    shared
        .redis
        .call("login_remember", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(
            &AbuseLimits {
                login_failures_per_account_address: 2,
                login_failures_per_address: 3,
                login_failures_per_account: 4,
                ..AbuseLimits::default()
            },
            None,
        )
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A wrong password.
    async fn guess(limits: &LoginLimiter, account: i64, address: IpAddr) -> bool {
        match limits.admit(account, address).await {
            Some(attempt) => {
                limits.failed(attempt);
                true
            }
            None => false,
        }
    }

    #[tokio::test]
    async fn each_counter_stops_its_guesser() {
        let limits = limiter();
        // Per (account, address): two failures at account 1 from .1.
        assert!(guess(&limits, 1, ip(1)).await);
        assert!(guess(&limits, 1, ip(1)).await);
        assert!(!guess(&limits, 1, ip(1)).await);
        // Per address: .1 may fail at one more account, then nothing.
        assert!(guess(&limits, 2, ip(1)).await);
        assert!(!guess(&limits, 3, ip(1)).await);
        // Per account: account 1 had 2 attempts; two more addresses, then no.
        assert!(guess(&limits, 1, ip(2)).await);
        assert!(guess(&limits, 1, ip(3)).await);
        assert!(!guess(&limits, 1, ip(4)).await);
    }

    #[tokio::test]
    async fn the_owner_is_not_locked_out_by_the_account_ceiling() {
        let limits = limiter();
        let owner = limits.admit(1, ip(9)).await.unwrap();
        limits.succeeded(owner).await;
        for last in 1..=10 {
            guess(&limits, 1, ip(last)).await;
        }
        assert!(limits.admit(1, ip(11)).await.is_none(), "ceiling reached");
        assert!(
            limits.admit(1, ip(9)).await.is_some(),
            "the owner's address is exempt"
        );
    }

    #[tokio::test]
    async fn logins_in_flight_from_one_address_are_not_failures() {
        let limits = limiter();
        let mut in_flight = Vec::new();
        for account in 0..50 {
            in_flight.push(limits.admit(account, ip(1)).await.expect("admitted"));
        }
        for attempt in in_flight {
            limits.succeeded(attempt).await;
        }
        for _ in 0..5 {
            let attempt = limits.admit(1, ip(1)).await.unwrap();
            limits.succeeded(attempt).await;
        }
        assert!(guess(&limits, 1, ip(1)).await);
    }
}
