//! ADD_GROUP: join as a normal member; joining twice changes nothing. The
//! v2 ACK carries the group; its other members get a NOTICE.

use protocol::{Errno, MsgId, Presence, Reply};

use super::{logged_in, refuse, server_error, SessionState};
use crate::context::Context;
use crate::notices;

pub async fn apply(ctx: &Context, session: &mut SessionState, group: i64) -> Reply {
    let user = logged_in(session).clone();
    match ctx.store.join_group(group, user.id).await {
        Ok(true) => {
            ctx.directory.invalidate_group(group);
            ctx.bus.group_changed(group).await;
        }
        Ok(false) => return refuse(MsgId::AddGroup, Errno::NotFound, "no such group"),
        Err(error) => return server_error(ctx, MsgId::AddGroup, error),
    }
    let joined = match super::login::group_of(ctx, user.id, group).await {
        Ok(Some(joined)) => joined,
        Ok(None) => return Reply::DONE,
        Err(error) => {
            // Joined all the same; the next LOGIN_ACK lists the group.
            tracing::warn!(%error, group, "joined, but cannot read the group back");
            return Reply::DONE;
        }
    };
    let others: Vec<i64> = joined
        .users
        .iter()
        .map(|member| member.id)
        .filter(|id| *id != user.id)
        .collect();
    for other in &others {
        session.relate(*other);
    }
    if let Some(me) = joined.users.iter().find(|member| member.id == user.id) {
        let mut me = me.clone();
        me.state = Presence::Online;
        notices::joined(ctx, group, me, &others).await;
    }
    Reply::Joined(Box::new(joined))
}
