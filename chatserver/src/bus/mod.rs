//! The bus: how this server reaches users on other servers. Chosen once at
//! start-up: `Local` for a single server (nobody is elsewhere), `Redis` for a
//! cluster. Commands and delivery call it without asking which it is.

pub mod redis;

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::BusError;
use crate::mailbox::{Notice, Pushed};

pub use self::redis::RedisBus;

#[derive(Clone)]
pub enum Bus {
    /// A single server: every session is here.
    Local,
    Redis(Arc<RedisBus>),
}

impl Bus {
    /// Takes the user for this server; `false` when another live server has it.
    pub async fn claim(&self, user: i64) -> Result<bool, BusError> {
        match self {
            Bus::Local => Ok(true),
            Bus::Redis(redis) => redis.claim(user).await,
        }
    }

    /// Frees the user (retried later if Redis is away).
    pub async fn release(&self, user: i64) {
        if let Bus::Redis(redis) = self {
            redis.release(user).await;
        }
    }

    /// Which of `users` are logged in on another server.
    pub async fn online_elsewhere(&self, users: &[i64]) -> Result<HashSet<i64>, BusError> {
        match self {
            Bus::Local => Ok(HashSet::new()),
            Bus::Redis(redis) => redis.online(users).await,
        }
    }

    /// Tells the servers holding these (receiver, seq) pairs of a stored
    /// message. Best effort: a receiver not reached reads its inbox later.
    pub async fn notify(&self, deliveries: &[(i64, i64)], pushed: &Pushed) {
        if let Bus::Redis(redis) = self {
            if !deliveries.is_empty() {
                redis
                    .hand_off(deliveries, pushed.mid(), pushed.payload())
                    .await;
            }
        }
    }

    /// Hands a notice to the other servers, for those of `users` they
    /// hold. Best effort.
    pub async fn notice(&self, users: &[i64], notice: &Notice) {
        if let Bus::Redis(redis) = self {
            if !users.is_empty() {
                redis.notice(users, notice.related, &notice.json).await;
            }
        }
    }

    /// Tells the other servers that a group's members changed.
    pub async fn group_changed(&self, group: i64) {
        if let Bus::Redis(redis) = self {
            redis.group_changed(group).await;
        }
    }

    /// False while Redis is known to be away (a single server: always true).
    pub fn reachable(&self) -> bool {
        match self {
            Bus::Local => true,
            Bus::Redis(redis) => redis.reachable.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The server number for message ids.
    pub fn node(&self) -> u64 {
        match self {
            Bus::Local => 0,
            Bus::Redis(redis) => redis.node(),
        }
    }

    /// At a clean shutdown: frees this server's users at once.
    pub async fn leave(&self, users: &[i64]) {
        if let Bus::Redis(redis) = self {
            redis.leave(users).await;
        }
    }
}
