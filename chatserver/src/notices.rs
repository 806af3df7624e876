//! Who hears of what (NOTICE, msgid 17): a user's friends and fellow group
//! members of its logins and logouts, both sides of a new friendship, a
//! group's members of a new member. Best effort: queued where there is
//! room, broadcast to the other servers, never stored; v1 sessions drop
//! them.

use std::sync::Arc;

use protocol::{Friend, Member, Notice as Wire, Presence};

use crate::context::Context;
use crate::mailbox::Notice;

/// Tells `users` (here or on other servers) `notice`; `related` is who
/// they become related to (see [`Notice::related`]).
pub async fn tell(ctx: &Context, users: &[i64], notice: &Wire, related: Option<i64>) {
    if users.is_empty() {
        return;
    }
    let notice = Notice {
        json: Arc::from(notice.to_json()),
        related,
    };
    let mut elsewhere = Vec::new();
    for &user in users {
        match ctx.registry.get(user) {
            Some(handle) => handle.notify(notice.clone()),
            None => elsewhere.push(user),
        }
    }
    ctx.bus.notice(&elsewhere, &notice).await;
}

/// `user` logged in or out: its friends and fellow members hear it.
pub async fn presence(ctx: &Context, user: i64, related: &[i64], state: Presence) {
    tell(ctx, related, &Wire::Presence { id: user, state }, None).await;
}

/// A new friendship: each side hears of the other.
pub async fn friendship(ctx: &Context, me: Friend, friend: Friend) {
    let (my_id, friend_id) = (me.id, friend.id);
    tell(ctx, &[friend_id], &Wire::Friend(me), Some(my_id)).await;
    tell(ctx, &[my_id], &Wire::Friend(friend), Some(friend_id)).await;
}

/// `member` joined `group`: its other members hear it.
pub async fn joined(ctx: &Context, group: i64, member: Member, others: &[i64]) {
    let id = member.id;
    let notice = Wire::Member {
        groupid: group,
        member,
    };
    tell(ctx, others, &notice, Some(id)).await;
}
