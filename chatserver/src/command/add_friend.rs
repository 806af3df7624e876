//! ADD_FRIEND: mutual and idempotent.

use protocol::{Errno, MsgId, Reply};

use super::{refuse, server_error, User};
use crate::context::Context;

pub async fn apply(ctx: &Context, user: &User, friend: i64) -> Reply {
    if friend == user.id {
        return refuse(
            MsgId::AddFriend,
            Errno::NotFound,
            "you cannot befriend yourself",
        );
    }
    match ctx.directory.user_name(friend).await {
        Ok(Some(_)) => {}
        Ok(None) => return refuse(MsgId::AddFriend, Errno::NotFound, "no such user"),
        Err(error) => return server_error(ctx, MsgId::AddFriend, error),
    }
    match ctx.store.add_friends(user.id, friend).await {
        Ok(()) => Reply::DONE,
        Err(error) => server_error(ctx, MsgId::AddFriend, error),
    }
}
