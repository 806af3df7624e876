//! GROUP_CHAT: one message, stored once, referenced from every other
//! member's inbox.

use protocol::{Errno, MsgId, Reply, SendChat};

use super::{logged_in, refuse, send_chat, server_error, SessionState};
use crate::context::Context;

pub async fn apply(ctx: &Context, session: &SessionState, group: i64, chat: SendChat) -> Reply {
    let user = logged_in(session);
    let members = match ctx.directory.group_members(group).await {
        Ok(Some(members)) => members,
        Ok(None) => return refuse(MsgId::GroupChat, Errno::NotFound, "no such group"),
        Err(error) => return server_error(ctx, MsgId::GroupChat, error),
    };
    if members.binary_search(&user.id).is_err() {
        return refuse(
            MsgId::GroupChat,
            Errno::NotMember,
            "you are not a member of that group",
        );
    }
    let receivers: Vec<i64> = members
        .iter()
        .copied()
        .filter(|&id| id != user.id)
        .collect();
    send_chat(ctx, session, user, chat, receivers).await
}
