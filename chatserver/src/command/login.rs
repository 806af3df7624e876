//! LOGIN: check the password or token, claim the user on this server, and
//! answer with friends and groups; then the session streams the inbox.
//!
//! Exactly once around a login: the session is registered (here and in the
//! cluster) *before* the inbox counters are read, so a message stored after
//! that read is also pushed to the session's mailbox, and one stored before
//! it is read from the inbox. The session drops pushes at or below what it
//! has written (`seq`), and reads the inbox again when it sees a gap.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use protocol::{
    Chat, Credential, Errno, Friend, Group, Login, LoginAck, Member, MsgId, Presence, Reply, Role,
    Version, MAX_PASSWORD_BYTES, V1_READ_SIZE,
};

use super::{refuse, server_error, AfterWrite, InboxCursor, Outcome, SessionState, User};
use crate::context::Context;
use crate::error::Unavailable;
use crate::mailbox::mailbox;
use crate::notices;
use crate::rate_limit::PER_CONNECTION;
use crate::refusals::Refusal;
use crate::store::{Counters, GroupMemberRow, NewToken};
use crate::tokens::{new_token, token_hash};

pub async fn apply(ctx: &Context, session: &mut SessionState, login: Login) -> Outcome {
    let id = login.id;
    if session.user.is_some() {
        return refuse(
            MsgId::Login,
            Errno::AlreadyLoggedIn,
            "this connection is already logged in",
        )
        .into();
    }
    let now = Instant::now();
    if session.login_failures.exceeded(PER_CONNECTION, now) {
        ctx.refusals.note(Refusal::LoginRate, session.peer_ip);
        return Reply::error(Some(MsgId::Login), Errno::RateLimited).into();
    }
    let presented_token = match &login.credential {
        Credential::Token(token) => Some(token.clone()),
        Credential::Password(_) => None,
    };
    // Guessing limits apply to passwords: a token has 256 random bits, so a
    // token login (even a wrong one) guesses nothing and is never hashed.
    let attempt = match presented_token {
        Some(_) => None,
        None => match ctx.guard.logins.admit(id, session.peer_ip).await {
            Some(attempt) => Some(attempt),
            None => {
                ctx.refusals.note(Refusal::LoginRate, session.peer_ip);
                return Reply::error(Some(MsgId::Login), Errno::RateLimited).into();
            }
        },
    };
    let name = match authenticate(ctx, id, login.credential).await {
        Ok(Some(name)) => {
            if let Some(attempt) = attempt {
                ctx.guard.logins.succeeded(attempt).await;
            }
            name
        }
        Ok(None) => {
            if let Some(attempt) = attempt {
                ctx.guard.logins.failed(attempt);
            }
            session.login_failures.record(now);
            tracing::info!(user = id, "login refused: bad credentials");
            return Reply::error(Some(MsgId::Login), Errno::BadCredentials).into();
        }
        Err(error) => return server_error(ctx, MsgId::Login, error).into(),
    };
    let (handle, mailbox) = mailbox(
        session.conn_id,
        ctx.limits.outbound_queue,
        ctx.limits.outbound_queue_bytes,
    );
    if !ctx.registry.claim(id, handle) {
        return Reply::error(Some(MsgId::Login), Errno::AlreadyLoggedIn).into();
    }
    // From here on, messages for this user that reach this server queue in
    // `mailbox`; claiming the user in the cluster makes the others send here.
    let refusal = match ctx.bus.claim(id).await {
        Ok(true) => None,
        Ok(false) => Some(Errno::AlreadyLoggedIn),
        Err(error) => {
            tracing::warn!(%error, "cannot check the login across the cluster");
            Some(Errno::ServerError)
        }
    };
    if let Some(errno) = refusal {
        ctx.registry.release(id, session.conn_id);
        return Reply::error(Some(MsgId::Login), errno).into();
    }
    let version = session.version;
    let loaded = async {
        ctx.writer.presence(id, true).await;
        let reads = ctx.store.login_reads(id).await?;
        let mut ack = login_ack(ctx, id, name.clone(), reads.friends, reads.groups).await?;
        let token = match (version, presented_token) {
            (Version::V1, _) => None,
            (Version::V2, Some(token)) => Some(token),
            (Version::V2, None) => Some(issue_token(ctx, id).await?),
        };
        let cursor =
            read_inbox_start(ctx, id, version, login.since, reads.counters, &mut ack).await?;
        ack.token = token;
        Ok::<_, Unavailable>((ack, cursor))
    }
    .await;
    let (ack, cursor) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            ctx.registry.release(id, session.conn_id);
            ctx.bus.release(id).await;
            return server_error(ctx, MsgId::Login, error).into();
        }
    };
    ctx.directory.remember_name(id, name.clone());
    let mut related: Vec<i64> = ack.friends.iter().map(|friend| friend.id).collect();
    related.extend(ack.groups.iter().flat_map(|g| g.users.iter().map(|m| m.id)));
    related.retain(|user| *user != id);
    related.sort_unstable();
    related.dedup();
    // Only those online now can hear it (one who logs in later reads this
    // user's presence in its own LOGIN_ACK): a login among offline
    // friends publishes nothing to the cluster.
    let mut listening: Vec<i64> = ack
        .friends
        .iter()
        .filter(|friend| friend.state == Presence::Online)
        .map(|friend| friend.id)
        .chain(
            ack.groups
                .iter()
                .flat_map(|g| g.users.iter())
                .filter(|member| member.state == Presence::Online)
                .map(|member| member.id),
        )
        .filter(|user| *user != id)
        .collect();
    listening.sort_unstable();
    listening.dedup();
    notices::presence(ctx, id, &listening, Presence::Online).await;
    session.related = related;
    session.user = Some(User { id, name });
    session.mailbox = Some(mailbox);
    session.inbox = cursor;
    session.token_hash = ack.token.as_deref().map(token_hash);
    tracing::Span::current().record("user", id);
    tracing::info!("logged in");
    Outcome {
        reply: Reply::LoginOk(Box::new(ack)),
        after_write: AfterWrite::ReadInbox,
    }
}

/// Inbox messages a v1 LOGIN_ACK may carry (it must stay under 1024 bytes,
/// so a few at most); the rest follow as paced pushes.
const V1_ACK_MESSAGES: u32 = 16;

/// Where the session starts in the inbox. v2: after `since` (which also
/// confirms everything up to it) or after the confirmed cursor; the ACK
/// carries the newest seq. v1: the first messages go in the ACK's
/// `offlinemsg`, as many as fit in one read of the original client.
async fn read_inbox_start(
    ctx: &Context,
    id: i64,
    version: Version,
    since: Option<i64>,
    counters: Counters,
    ack: &mut LoginAck,
) -> Result<InboxCursor, Unavailable> {
    match version {
        Version::V2 => {
            let held = since.unwrap_or(0).clamp(
                counters.delivered_seq,
                counters.last_seq.max(counters.delivered_seq),
            );
            if held > counters.delivered_seq {
                ctx.writer.confirm(id, held).await;
            }
            ack.seq = Some(counters.last_seq);
            Ok(InboxCursor {
                written: held,
                confirmed: held,
            })
        }
        Version::V1 => {
            let first = ctx
                .store
                .inbox_after(id, counters.delivered_seq, V1_ACK_MESSAGES)
                .await?;
            let mut seqs = Vec::with_capacity(first.len());
            for stored in first {
                match Chat::from_json(&stored.body) {
                    Ok(chat) => {
                        seqs.push(stored.seq);
                        ack.offline.push(chat);
                    }
                    Err(error) => {
                        tracing::error!(%error, seq = stored.seq, "unreadable inbox message left out")
                    }
                }
            }
            ack.fit_v1(V1_READ_SIZE);
            let written = match ack.offline.len() {
                0 => counters.delivered_seq,
                n => seqs[n - 1],
            };
            Ok(InboxCursor {
                written,
                confirmed: counters.delivered_seq,
            })
        }
    }
}

/// A new token for a v2 login, stored hashed.
async fn issue_token(ctx: &Context, id: i64) -> Result<String, Unavailable> {
    let token = new_token();
    let expires_at = chrono::Utc::now().timestamp_millis() + ctx.token_ttl.as_millis() as i64;
    ctx.writer
        .insert_token(NewToken {
            hash: token_hash(&token),
            user_id: id,
            expires_at,
        })
        .await?;
    Ok(token)
}

/// Which of `ids` are logged in, here or on another server.
pub(super) async fn online(ctx: &Context, mut ids: Vec<i64>) -> Result<HashSet<i64>, Unavailable> {
    let mut online: HashSet<i64> = ids
        .iter()
        .copied()
        .filter(|id| ctx.registry.is_online(*id))
        .collect();
    ids.retain(|id| !online.contains(id));
    ids.sort_unstable();
    ids.dedup();
    online.extend(ctx.bus.online_elsewhere(&ids).await?);
    Ok(online)
}

/// Group `group` of `user`'s groups, members with presence.
pub(super) async fn group_of(
    ctx: &Context,
    user: i64,
    group: i64,
) -> Result<Option<Group>, Unavailable> {
    let mut rows = ctx.store.groups_of(user).await?;
    rows.retain(|row| row.group_id == group);
    let online = online(ctx, rows.iter().map(|row| row.user_id).collect()).await?;
    let presence = |user: i64| {
        if online.contains(&user) {
            Presence::Online
        } else {
            Presence::Offline
        }
    };
    Ok(group_entries(rows, presence).into_iter().next())
}

/// The LOGIN_ACK's friends and groups, with presence; the inbox part is
/// filled in by [`read_inbox_start`].
async fn login_ack(
    ctx: &Context,
    id: i64,
    name: Arc<str>,
    friends: Vec<(i64, String)>,
    members: Vec<GroupMemberRow>,
) -> Result<LoginAck, Unavailable> {
    let mut ids: Vec<i64> = friends.iter().map(|(id, _)| *id).collect();
    ids.extend(members.iter().map(|m| m.user_id));
    ids.retain(|id| !ctx.registry.is_online(*id));
    ids.sort_unstable();
    ids.dedup();
    let elsewhere = ctx.bus.online_elsewhere(&ids).await?;
    let presence = |user: i64| {
        if ctx.registry.is_online(user) || elsewhere.contains(&user) {
            Presence::Online
        } else {
            Presence::Offline
        }
    };
    let friends = friends
        .into_iter()
        .map(|(id, name)| Friend {
            id,
            name,
            state: presence(id),
        })
        .collect();
    let groups = group_entries(members, presence);
    Ok(LoginAck {
        id,
        name: name.to_string(),
        friends,
        groups,
        offline: Vec::new(),
        skipped: 0,
        seq: None,
        token: None,
    })
}

/// Folds one row per (group, member) into groups with their member lists.
fn group_entries(rows: Vec<GroupMemberRow>, presence: impl Fn(i64) -> Presence) -> Vec<Group> {
    let mut groups: BTreeMap<i64, Group> = BTreeMap::new();
    for row in rows {
        let group = groups.entry(row.group_id).or_insert_with(|| Group {
            id: row.group_id,
            name: row.group_name,
            desc: row.group_desc,
            users: Vec::new(),
        });
        group.users.push(Member {
            id: row.user_id,
            name: row.user_name,
            state: presence(row.user_id),
            role: Role::parse(&row.role).unwrap_or(Role::Normal),
        });
    }
    groups.into_values().collect()
}

/// The user's name when the password or token is right. A token costs no
/// password hashing; it must belong to `id` and not have expired.
async fn authenticate(
    ctx: &Context,
    id: i64,
    credential: Credential,
) -> Result<Option<Arc<str>>, Unavailable> {
    match credential {
        Credential::Password(password) => check_password(ctx, id, password).await,
        Credential::Token(token) => {
            let now = chrono::Utc::now().timestamp_millis();
            match ctx.store.token_owner(&token_hash(&token)).await? {
                Some(owner) if owner.user_id == id && owner.expires_at > now => {
                    Ok(Some(owner.name.into()))
                }
                _ => Ok(None),
            }
        }
    }
}

async fn check_password(
    ctx: &Context,
    id: i64,
    password: String,
) -> Result<Option<Arc<str>>, Unavailable> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Ok(None);
    }
    let Some(credentials) = ctx.store.credentials(id).await? else {
        // As much work as for an account that exists: timing tells nothing.
        ctx.hasher.verify_decoy(password).await?;
        return Ok(None);
    };
    if !ctx
        .hasher
        .verify(password, credentials.password_hash)
        .await?
    {
        return Ok(None);
    }
    Ok(Some(credentials.name.into()))
}
