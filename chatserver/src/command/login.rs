//! LOGIN: check the password, claim the user on this server, and answer
//! with friends, groups and the offline messages.
//!
//! Exactly-once delivery around a login: the session is registered *before*
//! the offline messages are read, so a message sent after that is pushed
//! into the mailbox (and written after the LOGIN_ACK, since the session
//! writes the ACK before it reads its mailbox again). A sender that found
//! the user offline stores the message and then looks again; if the user is
//! registered by then it asks the session for a second read
//! (`Outbound::SweepOffline`). Rows are deleted only after they were written,
//! and reads and deletes run one after another in the session, so no row is
//! written twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::{
    Chat, Credential, Errno, Friend, Group, Login, LoginAck, Member, MsgId, Presence, Reply, Role,
    Version, MAX_PASSWORD_BYTES, V1_READ_SIZE,
};

use super::{refuse, server_error, AfterWrite, Outcome, SessionState, User};
use crate::context::Context;
use crate::error::Unavailable;
use crate::mailbox::mailbox;
use crate::rate_limit::PER_CONNECTION;
use crate::refusals::Refusal;
use crate::store::GroupMemberRow;

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
    let Some(attempt) = ctx.guard.logins.admit(id, session.peer_ip).await else {
        ctx.refusals.note(Refusal::LoginRate, session.peer_ip);
        return Reply::error(Some(MsgId::Login), Errno::RateLimited).into();
    };
    let name = match check_password(ctx, id, login.credential).await {
        Ok(Some(name)) => {
            ctx.guard.logins.succeeded(attempt).await;
            name
        }
        Ok(None) => {
            session.login_failures.record(now);
            tracing::info!(user = id, "login refused: bad credentials");
            return Reply::error(Some(MsgId::Login), Errno::BadCredentials).into();
        }
        Err(error) => return server_error(MsgId::Login, error).into(),
    };
    let (handle, mailbox) = mailbox(session.conn_id, ctx.limits.outbound_queue);
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
    let login = match load_login(ctx, id, name.clone()).await {
        Ok(login) => login,
        Err(error) => {
            ctx.registry.release(id, session.conn_id);
            ctx.bus.release(id).await;
            return server_error(MsgId::Login, error).into();
        }
    };
    ctx.directory.remember_name(id, name.clone());
    session.user = Some(User { id, name });
    session.mailbox = Some(mailbox);
    tracing::Span::current().record("user", id);
    tracing::info!("logged in");
    let (mut ack, mut row_ids) = login;
    let after_write = if session.version == Version::V1 {
        // The original client reads 1024 bytes at most: what does not fit
        // stays stored and is pushed right after the ACK, paced.
        let pushed_after = ack.fit_v1(V1_READ_SIZE);
        if pushed_after.is_empty() {
            AfterWrite::DeleteOffline(row_ids)
        } else {
            row_ids.truncate(ack.offline.len());
            AfterWrite::DeleteOfflineThenSweep(row_ids)
        }
    } else {
        AfterWrite::DeleteOffline(row_ids)
    };
    Outcome {
        reply: Reply::LoginOk(Box::new(ack)),
        after_write,
    }
}

/// Everything the LOGIN_ACK carries, and the offline rows it includes.
async fn load_login(
    ctx: &Context,
    id: i64,
    name: Arc<str>,
) -> Result<(LoginAck, Vec<i64>), Unavailable> {
    ctx.store.set_online(&[id], true).await?;
    let friends = ctx.store.friends(id).await?;
    let members = ctx.store.groups_of(id).await?;
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
    let mut row_ids = Vec::new();
    let mut offline = Vec::new();
    for stored in ctx.store.offline_messages(id).await? {
        match Chat::from_json(&stored.payload) {
            Ok(chat) => {
                row_ids.push(stored.row_id);
                offline.push(chat);
            }
            // Only our own JSON is stored; a row that does not read back
            // stays stored (and logged) rather than be deleted unseen.
            Err(error) => {
                tracing::error!(%error, row = stored.row_id, "unreadable offline message")
            }
        }
    }
    let login = LoginAck {
        id,
        name: name.to_string(),
        friends,
        groups,
        offline,
        skipped: 0,
        seq: None,
        token: None,
    };
    Ok((login, row_ids))
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

/// The user's name when the password is right.
async fn check_password(
    ctx: &Context,
    id: i64,
    credential: Credential,
) -> Result<Option<Arc<str>>, Unavailable> {
    let Credential::Password(password) = credential else {
        return Ok(None);
    };
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
