//! ONE_CHAT: a message to one user, pushed now or stored for their next login.

use protocol::{ChatPush, ChatTarget, Errno, MsgId, Reply};

use super::{local_time, now_ms, refuse, server_error, User};
use crate::context::Context;
use crate::delivery::deliver;
use crate::mailbox::Pushed;

pub async fn apply(ctx: &Context, user: &User, to: i64, msg: &str, time: Option<String>) -> Reply {
    if !ctx.registry.is_online(to) {
        match ctx.directory.user_name(to).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(MsgId::OneChat, Errno::NotFound, "no such user"),
            Err(error) => return server_error(MsgId::OneChat, error),
        }
    }
    let mid = ctx.mids.next();
    let time = time.unwrap_or_else(local_time);
    let push = ChatPush {
        target: ChatTarget::User(to),
        from: user.id,
        name: &user.name,
        msg,
        time: &time,
        mid,
        ts: now_ms(),
    };
    let pushed = Pushed::new(mid, push.to_json());
    match deliver(ctx, &[to], &pushed).await {
        Ok(()) => Reply::Done {
            mid: Some(mid),
            groupid: None,
        },
        Err(error) => server_error(MsgId::OneChat, error),
    }
}
