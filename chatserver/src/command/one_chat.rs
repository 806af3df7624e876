//! ONE_CHAT: a message to one user, stored in their inbox, then pushed.

use protocol::{Errno, MsgId, Reply, SendChat};

use super::{logged_in, refuse, send_chat, server_error, SessionState};
use crate::context::Context;

pub async fn apply(ctx: &Context, session: &SessionState, to: i64, chat: SendChat) -> Reply {
    if !ctx.registry.is_online(to) {
        match ctx.directory.user_name(to).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(MsgId::OneChat, Errno::NotFound, "no such user"),
            Err(error) => return server_error(ctx, MsgId::OneChat, error),
        }
    }
    send_chat(ctx, session, logged_in(session), chat, vec![to]).await
}
