//! Limits on what creates rows: REGISTERs per address per minute,
//! CREATE_GROUPs per user per minute, and groups per user in all. Without
//! them one client fills the database (and makes its own LOGIN_ACK huge)
//! as fast as the server can hash. Each refusal is errno 9, counted and
//! log-throttled by `refusals`.

use std::net::IpAddr;
use std::time::Instant;

use protocol::{Errno, Reply, Request};

use crate::config::AbuseLimits;
use crate::rate_limit::{address_key, Table};
use crate::refusals::{Refusal, Refusals};
use crate::store::Store;

pub struct SignupLimiter {
    register_per_address: usize,
    create_group_per_user: usize,
    max_groups_per_user: usize,
    registers: Table<IpAddr>,
    creates: Table<i64>,
}

impl Default for SignupLimiter {
    fn default() -> Self {
        Self::new(&AbuseLimits::default())
    }
}

impl SignupLimiter {
    pub fn new(limits: &AbuseLimits) -> Self {
        Self {
            register_per_address: limits.register_per_address,
            create_group_per_user: limits.create_group_per_user,
            max_groups_per_user: limits.max_groups_per_user,
            registers: Table::default(),
            creates: Table::default(),
        }
    }

    /// The refusal for `request` from `peer_ip` (by `user`, when logged in)
    /// when it would pass a limit; `None` lets it run. Every attempt counts,
    /// refused or not by the command itself.
    pub async fn refuse(
        &self,
        store: &Store,
        refusals: &Refusals,
        peer_ip: IpAddr,
        user: Option<i64>,
        request: &Request,
    ) -> Option<Reply> {
        let now = Instant::now();
        let (kind, message) = match request {
            Request::Register(_) => {
                if self
                    .registers
                    .try_record(address_key(peer_ip), self.register_per_address, now)
                {
                    return None;
                }
                (
                    Refusal::RegisterRate,
                    "too many registrations, try again later",
                )
            }
            Request::CreateGroup(_) => {
                let user = user?;
                if !self
                    .creates
                    .try_record(user, self.create_group_per_user, now)
                {
                    (
                        Refusal::CreateGroupRate,
                        "too many new groups, try again later",
                    )
                } else {
                    match store.groups_created_by(user).await {
                        Ok(n) if n >= self.max_groups_per_user as i64 => (
                            Refusal::GroupQuota,
                            "you created as many groups as one user may",
                        ),
                        // A storage failure shows in the request itself.
                        _ => return None,
                    }
                }
            }
            _ => return None,
        };
        refusals.note(kind, peer_ip);
        Some(Reply::refuse(
            Some(request.msgid()),
            Errno::RateLimited,
            message,
        ))
    }
}
