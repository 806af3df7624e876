//! ONE_CHAT: a message to one user, pushed now or stored for their next login.

use protocol::{Errno, MsgId, Reply, SendChat};

use super::{refuse, send_chat, server_error, User};
use crate::context::Context;

pub async fn apply(ctx: &Context, user: &User, to: i64, chat: SendChat) -> Reply {
    if !ctx.registry.is_online(to) {
        match ctx.directory.user_name(to).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(MsgId::OneChat, Errno::NotFound, "no such user"),
            Err(error) => return server_error(MsgId::OneChat, error),
        }
    }
    send_chat(ctx, user, chat, &[to]).await
}
