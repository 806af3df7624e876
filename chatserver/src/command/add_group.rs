//! ADD_GROUP: join as a normal member; joining twice changes nothing.

use protocol::{Errno, MsgId, Reply};

use super::{refuse, server_error, User};
use crate::context::Context;

pub async fn apply(ctx: &Context, user: &User, group: i64) -> Reply {
    match ctx.store.join_group(group, user.id).await {
        Ok(true) => {
            ctx.directory.invalidate_group(group);
            ctx.bus.group_changed(group).await;
            Reply::DONE
        }
        Ok(false) => refuse(MsgId::AddGroup, Errno::NotFound, "no such group"),
        Err(error) => server_error(ctx, MsgId::AddGroup, error),
    }
}
