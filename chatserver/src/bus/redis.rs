//! The Redis side of cluster mode: presence, hand-off of pushes between
//! servers and cache-invalidation announcements, as calls and Lua scripts,
//! plus the format of the frames servers publish to each other. It knows
//! nothing of sessions or storage: what to do with a frame is `inbound`'s.
//!
//! Keys and channels (all under the configured prefix):
//! - `user:{id}` holds the token of the server where the user is logged in.
//! - `alive:{token}` exists while that server runs: it expires one lease
//!   after the server's last heartbeat, so a killed server's users are free
//!   again within a lease, and a user key whose owner is not alive is free.
//! - `node:{n}` leases the server number used in message ids.
//! - channel `server:{token}` carries notifications of stored messages
//!   (`P {mid} {user}:{seq},...\n{json}`) to one server; channel `cluster`
//!   carries group-membership changes (`G {group id}`) to all. Both are only
//!   notifications: the messages are in the database, and a server that
//!   may have missed some (its subscription was cut) has its sessions read
//!   their inboxes.
//!
//! The token is the server name plus a random suffix, so a server restarted
//! under the same name never mistakes its predecessor's keys for its own.
//! Every multi-key decision runs in one Lua script, so it is atomic.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::calls::CallTimer;
use crate::error::BusError;
use crate::mid::MAX_NODE;

/// Every Redis call is bounded: a hung Redis must not hang a request.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a user's server, learned from a hand-off, is trusted without a
/// new lookup. A stale entry costs a hop: the message is in the user's
/// inbox, and a server that no longer holds the user passes the
/// notification on (`reroute`), or, when it is gone, nobody takes the
/// PUBLISH and the sender looks the user up again.
const LOCATION_TTL: Duration = Duration::from_secs(5);
/// Known locations kept before the cache is emptied and refilled.
const LOCATION_CACHE_MAX: usize = 200_000;
/// How long the server-number lease lasts without a heartbeat.
const NODE_LEASE: Duration = Duration::from_secs(120);
/// Longest wait between reconnection attempts.
pub(crate) const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// A user is taken when its key names another server that is still alive.
const CLAIM: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. owner) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

const ONLINE: &str = r#"
local result = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner and redis.call('EXISTS', ARGV[1] .. 'alive:' .. owner) == 1 then
    result[i] = 1
  else
    result[i] = 0
  end
end
return result
"#;

/// Groups receivers by the server that holds them and publishes one frame
/// per server, except to server `except` (ARGV[4], '' for none); returns,
/// per receiver, the server that took the frame, or an empty string when
/// none did.
const FAN_OUT: &str = r#"
local prefix, head, body, except = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local by_owner, owners, result = {}, {}, {}
for i, key in ipairs(KEYS) do
  result[i] = ''
  local owner = redis.call('GET', key)
  if owner and owner ~= except and redis.call('EXISTS', prefix .. 'alive:' .. owner) == 1 then
    if not by_owner[owner] then
      by_owner[owner] = {}
      table.insert(owners, owner)
    end
    table.insert(by_owner[owner], i)
  end
end
for _, owner in ipairs(owners) do
  local ids = {}
  for j, i in ipairs(by_owner[owner]) do ids[j] = ARGV[4 + i] end
  local frame = head .. ' ' .. table.concat(ids, ',')
  if body ~= '' then frame = frame .. '\n' .. body end
  if redis.call('PUBLISH', prefix .. 'server:' .. owner, frame) > 0 then
    for _, i in ipairs(by_owner[owner]) do result[i] = owner end
  end
end
return result
"#;

/// Keeps this server's number, or reports that another server holds it.
const KEEP_NODE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// A server token and users it holds.
type UsersOnServer = (Arc<str>, Vec<i64>);

pub struct RedisBus {
    token: String,
    prefix: String,
    pub(crate) lease: Duration,
    pub(crate) client: redis::Client,
    connection: ConnectionManager,
    claim: Script,
    release: Script,
    online: Script,
    fan_out: Script,
    keep_node: Script,
    node: Mutex<u64>,
    /// False from the first failed call until the heartbeat gets through
    /// again: while Redis is away, requests fail at once instead of each
    /// waiting for a timeout.
    pub(crate) reachable: AtomicBool,
    /// Times each call (the metrics' Redis latency and errors).
    calls: CallTimer,
    /// Where users were last handed to: user id to server token and when.
    locations: Mutex<HashMap<i64, (Arc<str>, Instant)>>,
    /// Users whose release failed while Redis was away; retried by the heartbeat.
    pub(crate) pending_releases: Mutex<HashSet<i64>>,
}

impl RedisBus {
    /// Connects and leases a server number. Redis must be reachable here;
    /// afterwards the server rides out Redis outages.
    pub async fn connect(
        url: &str,
        prefix: &str,
        name: &str,
        lease: Duration,
        calls: CallTimer,
    ) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_MAX_DELAY.as_millis() as u64);
        let connection =
            bounded(ConnectionManager::new_with_config(client.clone(), config)).await?;
        let token = format!("{name}#{:08x}", rand::random::<u32>());
        let cluster = RedisBus {
            token,
            prefix: prefix.to_owned(),
            lease,
            client,
            connection,
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            online: Script::new(ONLINE),
            fan_out: Script::new(FAN_OUT),
            keep_node: Script::new(KEEP_NODE),
            node: Mutex::new(0),
            reachable: AtomicBool::new(true),
            calls,
            locations: Mutex::default(),
            pending_releases: Mutex::default(),
        };
        cluster.beat().await?;
        cluster.lease_node().await?;
        Ok(cluster)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server number for message ids.
    pub fn node(&self) -> u64 {
        *self.node.lock().expect("node lock")
    }

    fn user_key(&self, user: i64) -> String {
        format!("{}user:{user}", self.prefix)
    }

    pub(crate) fn alive_key(&self) -> String {
        format!("{}alive:{}", self.prefix, self.token)
    }

    pub(crate) fn own_channel(&self) -> String {
        format!("{}server:{}", self.prefix, self.token)
    }

    pub(crate) fn cluster_channel(&self) -> String {
        format!("{}cluster", self.prefix)
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// One bounded Redis call, timed as operation `op`.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BusError> {
        self.calls.time(op, bounded(call)).await
    }

    /// Runs a request-path call, failing fast while Redis is known to be away.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, BusError>>,
    ) -> Result<T, BusError> {
        if !self.reachable.load(Ordering::Relaxed) {
            return Err(BusError::NotConnected);
        }
        let result = call.await;
        if result.is_err() {
            self.reachable.store(false, Ordering::Relaxed);
        }
        result
    }

    /// Marks this server alive for one more lease.
    pub(crate) async fn beat(&self) -> Result<(), BusError> {
        let mut conn = self.conn();
        let key = self.alive_key();
        let lease = self.lease.as_millis() as u64;
        self.call("beat", async move {
            conn.pset_ex::<_, _, ()>(key, 1, lease).await
        })
        .await
    }

    pub(crate) async fn lease_node(&self) -> Result<(), BusError> {
        let current = self.node();
        if self.keep_node_number(current).await? {
            return Ok(());
        }
        for node in 0..=MAX_NODE {
            if self.keep_node_number(node).await? {
                *self.node.lock().expect("node lock") = node;
                tracing::info!(node, "leased server number");
                return Ok(());
            }
        }
        Err(BusError::NoFreeNode(MAX_NODE + 1))
    }

    async fn keep_node_number(&self, node: u64) -> Result<bool, BusError> {
        let mut invocation = self.keep_node.prepare_invoke();
        invocation
            .key(format!("{}node:{node}", self.prefix))
            .arg(&self.token)
            .arg(NODE_LEASE.as_millis() as u64);
        let mut conn = self.conn();
        let kept: i64 = self
            .call("keep_node", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(kept == 1)
    }

    /// Takes the user for this server; `false` when another live server has it.
    pub async fn claim(&self, user: i64) -> Result<bool, BusError> {
        self.guarded(self.claim_now(user)).await
    }

    pub(crate) async fn claim_now(&self, user: i64) -> Result<bool, BusError> {
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.user_key(user))
            .arg(&self.prefix)
            .arg(&self.token);
        let mut conn = self.conn();
        let claimed: i64 = self
            .call(
                "claim",
                async move { invocation.invoke_async(&mut conn).await },
            )
            .await?;
        self.pending_releases
            .lock()
            .expect("pending lock")
            .remove(&user);
        Ok(claimed == 1)
    }

    /// Frees the user; if Redis is away, retried by the heartbeat (until
    /// then, this server's heartbeat keeps the user taken).
    pub async fn release(&self, user: i64) {
        if let Err(error) = self.guarded(self.try_release(user)).await {
            tracing::warn!(user, %error, "presence release failed; will retry");
            self.pending_releases
                .lock()
                .expect("pending lock")
                .insert(user);
        }
    }

    async fn try_release(&self, user: i64) -> Result<(), BusError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.user_key(user)).arg(&self.token);
        let mut conn = self.conn();
        self.call("release", async move {
            invocation.invoke_async::<i64>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    /// Which of `users` are logged in on a live server.
    pub async fn online(&self, users: &[i64]) -> Result<HashSet<i64>, BusError> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        self.guarded(self.online_now(users)).await
    }

    async fn online_now(&self, users: &[i64]) -> Result<HashSet<i64>, BusError> {
        let mut invocation = self.online.prepare_invoke();
        for user in users {
            invocation.key(self.user_key(*user));
        }
        invocation.arg(&self.prefix);
        let mut conn = self.conn();
        let flags: Vec<i64> = self
            .call(
                "online",
                async move { invocation.invoke_async(&mut conn).await },
            )
            .await?;
        Ok(users
            .iter()
            .zip(flags)
            .filter(|(_, flag)| *flag == 1)
            .map(|(user, _)| *user)
            .collect())
    }

    /// Publishes a notification to the servers holding these receivers.
    /// Receivers whose server is known from a recent hand-off get a plain
    /// PUBLISH to it; the others go through the lookup script. Receivers no
    /// server took are logged out or unreachable: their inbox has the message.
    pub async fn hand_off(&self, deliveries: &[(i64, i64)], mid: i64, payload: &str) {
        let head = format!("P {mid}");
        let seqs: HashMap<i64, i64> = deliveries.iter().copied().collect();
        let users: Vec<i64> = deliveries.iter().map(|(user, _)| *user).collect();
        let (known, mut unknown) = self.recent_locations(&users);
        for (server, ids) in known {
            let frame = format!("{head} {}\n{}", join_deliveries(&ids, &seqs), payload);
            let mut conn = self.conn();
            let channel = format!("{}server:{server}", self.prefix);
            let published = self
                .guarded(self.call("publish", async move {
                    conn.publish::<_, _, i64>(channel, frame).await
                }))
                .await;
            if !matches!(published, Ok(n) if n > 0) {
                // That server is gone or Redis is away: look the users up again.
                self.forget_locations(&ids);
                unknown.extend(ids);
            }
        }
        if unknown.is_empty() {
            return;
        }
        let labels: Vec<String> = unknown.iter().map(|user| label(*user, &seqs)).collect();
        match self
            .fan_out_frame(&unknown, &labels, &head, payload, "")
            .await
        {
            Ok(servers) => {
                let mut locations = self.locations.lock().expect("locations lock");
                if locations.len() > LOCATION_CACHE_MAX {
                    locations.clear();
                }
                for (user, server) in unknown.into_iter().zip(servers) {
                    if !server.is_empty() {
                        locations.insert(user, (server.into(), Instant::now()));
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cluster unavailable; receivers elsewhere read their inboxes later");
            }
        }
    }

    /// Splits users into those with a fresh known server (grouped by
    /// server) and the rest.
    fn recent_locations(&self, users: &[i64]) -> (Vec<UsersOnServer>, Vec<i64>) {
        let locations = self.locations.lock().expect("locations lock");
        let mut known: Vec<UsersOnServer> = Vec::new();
        let mut unknown = Vec::new();
        for &user in users {
            match locations.get(&user) {
                Some((server, seen)) if seen.elapsed() < LOCATION_TTL => {
                    match known.iter_mut().find(|(s, _)| s == server) {
                        Some((_, ids)) => ids.push(user),
                        None => known.push((server.clone(), vec![user])),
                    }
                }
                _ => unknown.push(user),
            }
        }
        (known, unknown)
    }

    fn forget_locations(&self, users: &[i64]) {
        let mut locations = self.locations.lock().expect("locations lock");
        for user in users {
            locations.remove(user);
        }
    }

    /// Sends a push this server got for receivers it does not hold on to
    /// the servers that hold them now, looked up afresh and never this one.
    /// A sender's server that had them here in its location cache published
    /// to this server after they had moved (a GOAWAY during a rolling
    /// restart moves every user within seconds); without this, the receiver
    /// would find the message only at its next login or next push.
    pub async fn reroute(&self, deliveries: &[(i64, i64)], mid: i64, payload: &str) {
        let (users, labels): (Vec<i64>, Vec<String>) = deliveries
            .iter()
            .map(|&(user, seq)| (user, delivery_label(user, seq)))
            .unzip();
        let head = format!("P {mid}");
        if let Err(error) = self
            .fan_out_frame(&users, &labels, &head, payload, &self.token)
            .await
        {
            tracing::debug!(%error, "cannot pass on a push for users who moved; they read their inboxes later");
        }
    }

    /// Per user, the server that took the frame ("" when none did).
    /// `labels` are what the frame lists for each user; `except` is a
    /// server not to publish to.
    async fn fan_out_frame(
        &self,
        users: &[i64],
        labels: &[String],
        head: &str,
        body: &str,
        except: &str,
    ) -> Result<Vec<String>, BusError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.guarded(self.fan_out_now(users, labels, head, body, except))
            .await
    }

    async fn fan_out_now(
        &self,
        users: &[i64],
        labels: &[String],
        head: &str,
        body: &str,
        except: &str,
    ) -> Result<Vec<String>, BusError> {
        let mut invocation = self.fan_out.prepare_invoke();
        for user in users {
            invocation.key(self.user_key(*user));
        }
        invocation.arg(&self.prefix).arg(head).arg(body).arg(except);
        for label in labels {
            invocation.arg(label);
        }
        let mut conn = self.conn();
        self.call("fan_out", async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// Tells every server that a group's members changed.
    pub async fn group_changed(&self, group: i64) {
        let mut conn = self.conn();
        let channel = self.cluster_channel();
        let published = self
            .guarded(self.call("publish", async move {
                conn.publish::<_, _, i64>(channel, format!("G {group}"))
                    .await
            }))
            .await;
        if let Err(error) = published {
            tracing::warn!(group, %error, "group change not announced; other servers refresh within their cache lifetime");
        }
    }

    /// Broadcasts a notice to every server; each gives it to those of
    /// `users` logged in there. Notices are few (logins, logouts, new
    /// friends and members), so one broadcast beats a location lookup.
    pub async fn notice(&self, users: &[i64], related: Option<i64>, json: &str) {
        let ids: Vec<String> = users.iter().map(i64::to_string).collect();
        let frame = format!("N {} {}\n{}", related.unwrap_or(0), ids.join(","), json);
        let mut conn = self.conn();
        let channel = self.cluster_channel();
        let published = self
            .guarded(bounded(async move {
                conn.publish::<_, _, i64>(channel, frame).await
            }))
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "notice not sent to the other servers");
        }
    }

    /// A clean shutdown frees this server's users at once.
    pub async fn leave(&self, users: &[i64]) {
        for user in users {
            let _ = self.try_release(*user).await;
        }
        let mut conn = self.conn();
        let keys = vec![
            self.alive_key(),
            format!("{}node:{}", self.prefix, self.node()),
        ];
        let _ = self
            .call("leave", async move { conn.del::<_, i64>(keys).await })
            .await;
    }
}

pub(crate) async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BusError::Timeout(CALL_TIMEOUT)),
    }
}

/// One frame of the cluster protocol described in the module docs.
#[derive(Debug, PartialEq)]
pub(crate) enum BusFrame<'a> {
    /// A stored message: each receiver with its seq.
    Push {
        mid: i64,
        deliveries: Vec<(i64, i64)>,
        payload: &'a str,
    },
    GroupChanged {
        group: i64,
    },
    /// A NOTICE for those of `users` held here.
    Notice {
        related: Option<i64>,
        users: Vec<i64>,
        payload: &'a str,
    },
}

/// How a notification frame names a receiver: `user:seq`.
fn label(user: i64, seqs: &HashMap<i64, i64>) -> String {
    delivery_label(user, seqs.get(&user).copied().unwrap_or(0))
}

/// How a push frame lists one receiver: `user:seq`.
fn delivery_label(user: i64, seq: i64) -> String {
    format!("{user}:{seq}")
}

fn join_deliveries(users: &[i64], seqs: &HashMap<i64, i64>) -> String {
    users
        .iter()
        .map(|user| label(*user, seqs))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_deliveries(text: &str) -> Option<Vec<(i64, i64)>> {
    text.split(',')
        .map(|pair| {
            let (user, seq) = pair.split_once(':')?;
            Some((user.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

pub(crate) fn parse_bus_frame(bytes: &[u8]) -> Option<BusFrame<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = head.split(' ');
    match words.next()? {
        "P" => Some(BusFrame::Push {
            mid: words.next()?.parse().ok()?,
            deliveries: parse_deliveries(words.next()?)?,
            payload: body,
        }),
        "G" => Some(BusFrame::GroupChanged {
            group: words.next()?.parse().ok()?,
        }),
        "N" => Some(BusFrame::Notice {
            related: Some(words.next()?.parse().ok()?).filter(|id: &i64| *id != 0),
            users: words
                .next()?
                .split(',')
                .map(|id| id.parse().ok())
                .collect::<Option<_>>()?,
            payload: body,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_frames_parse() {
        assert_eq!(
            parse_bus_frame(b"P 42 1:5,2:1,3:9\n{\"msg\":\"a\nb\"}"),
            Some(BusFrame::Push {
                mid: 42,
                deliveries: vec![(1, 5), (2, 1), (3, 9)],
                payload: "{\"msg\":\"a\nb\"}"
            })
        );
        assert_eq!(parse_bus_frame(b"P 42 1,2\n{}"), None, "seq missing");
        assert_eq!(
            parse_bus_frame(b"G 9"),
            Some(BusFrame::GroupChanged { group: 9 })
        );
        assert_eq!(parse_bus_frame(b"P x 1\n{}"), None);
        assert_eq!(parse_bus_frame(b"S 1"), None);
        assert_eq!(parse_bus_frame(b"Z"), None);
    }
}
