//! ADD_FRIEND: mutual and idempotent; both sides get a NOTICE.

use protocol::{Errno, Friend, MsgId, Presence, Reply};

use super::{logged_in, refuse, server_error, SessionState};
use crate::context::Context;
use crate::notices;

pub async fn apply(ctx: &Context, session: &mut SessionState, friend: i64) -> Reply {
    let user = logged_in(session).clone();
    if friend == user.id {
        return refuse(
            MsgId::AddFriend,
            Errno::NotFound,
            "you cannot befriend yourself",
        );
    }
    let friend_name = match ctx.directory.user_name(friend).await {
        Ok(Some(name)) => name,
        Ok(None) => return refuse(MsgId::AddFriend, Errno::NotFound, "no such user"),
        Err(error) => return server_error(ctx, MsgId::AddFriend, error),
    };
    if let Err(error) = ctx.store.add_friends(user.id, friend).await {
        return server_error(ctx, MsgId::AddFriend, error);
    }
    session.relate(friend);
    let state = match super::login::online(ctx, vec![friend]).await {
        Ok(online) if online.contains(&friend) => Presence::Online,
        _ => Presence::Offline,
    };
    notices::friendship(
        ctx,
        Friend {
            id: user.id,
            name: user.name.to_string(),
            state: Presence::Online,
        },
        Friend {
            id: friend,
            name: friend_name.to_string(),
            state,
        },
    )
    .await;
    Reply::DONE
}
