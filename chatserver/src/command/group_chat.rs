//! GROUP_CHAT: one message, serialized once, to every other member.

use protocol::{ChatPush, ChatTarget, Errno, MsgId, Reply};

use super::{local_time, now_ms, refuse, server_error, User};
use crate::context::Context;
use crate::delivery::deliver;
use crate::mailbox::Pushed;

pub async fn apply(
    ctx: &Context,
    user: &User,
    group: i64,
    msg: &str,
    time: Option<String>,
) -> Reply {
    let members = match ctx.directory.group_members(group).await {
        Ok(Some(members)) => members,
        Ok(None) => return refuse(MsgId::GroupChat, Errno::NotFound, "no such group"),
        Err(error) => return server_error(MsgId::GroupChat, error),
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
    let mid = ctx.mids.next();
    let time = time.unwrap_or_else(local_time);
    let push = ChatPush {
        target: ChatTarget::Group(group),
        from: user.id,
        name: &user.name,
        msg,
        time: &time,
        mid,
        ts: now_ms(),
    };
    let pushed = Pushed::new(mid, push.to_json());
    match deliver(ctx, &receivers, &pushed).await {
        Ok(()) => Reply::Done {
            mid: Some(mid),
            groupid: None,
        },
        Err(error) => server_error(MsgId::GroupChat, error),
    }
}
