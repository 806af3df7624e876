//! Every limit that refuses a client goes through here: it is counted by
//! kind, and logged at most once per kind and address per minute, so a
//! flood of refusals cannot flood the log. The counters are what a metrics
//! endpoint exports.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one (kind, address) pair may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Pairs remembered before old ones are swept, so a scan of many addresses
/// cannot grow the table without bound.
const SWEEP_ABOVE: usize = 10_000;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// LOGIN after too many failures (per connection, address or account).
    LoginRate,
    RegisterRate,
    CreateGroupRate,
    /// A user already created as many groups as allowed.
    GroupQuota,
    FrameTooLarge,
    /// A message refused (1:1) or skipped (group member) for a full inbox.
    InboxFull,
    /// Closed before login after the login idle timeout.
    LoginIdle,
    MaxConnections,
    MaxConnectionsPerIp,
    /// A connection from a trusted proxy without a valid PROXY header, or a
    /// PROXY header from an address that is not trusted.
    ProxyHeader,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::LoginRate,
        Refusal::RegisterRate,
        Refusal::CreateGroupRate,
        Refusal::GroupQuota,
        Refusal::FrameTooLarge,
        Refusal::InboxFull,
        Refusal::LoginIdle,
        Refusal::MaxConnections,
        Refusal::MaxConnectionsPerIp,
        Refusal::ProxyHeader,
    ];

    /// The label in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::LoginRate => "login_rate",
            Refusal::RegisterRate => "register_rate",
            Refusal::CreateGroupRate => "create_group_rate",
            Refusal::GroupQuota => "group_quota",
            Refusal::FrameTooLarge => "frame_too_large",
            Refusal::InboxFull => "inbox_full",
            Refusal::LoginIdle => "login_idle",
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

#[derive(Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    last_logged: Mutex<HashMap<(Refusal, IpAddr), Instant>>,
}

impl Refusals {
    /// Counts a refusal of `address`, and logs it unless this pair was
    /// logged within the last minute.
    pub fn note(&self, kind: Refusal, address: IpAddr) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let log = {
            let mut logged = self.last_logged.lock().expect("refusal log lock");
            if logged.len() > SWEEP_ABOVE {
                logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            }
            match logged.get(&(kind, address)) {
                Some(at) if now.duration_since(*at) < LOG_EVERY => false,
                _ => {
                    logged.insert((kind, address), now);
                    true
                }
            }
        };
        if log {
            tracing::warn!(kind = kind.name(), %address, "limit reached (logged once a minute per address)");
        }
    }

    /// How many refusals of `kind` since start-up.
    pub fn count(&self, kind: Refusal) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_and_its_kind_indexes_the_table() {
        let refusals = Refusals::default();
        let address: IpAddr = "127.0.0.2".parse().unwrap();
        for (i, kind) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            refusals.note(kind, address);
            refusals.note(kind, address);
            assert_eq!(refusals.count(kind), 2);
        }
        // One log entry per pair, however many refusals.
        assert_eq!(
            refusals.last_logged.lock().unwrap().len(),
            Refusal::ALL.len()
        );
    }
}
