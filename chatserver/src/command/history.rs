//! HISTORY: a conversation's stored messages, newest first, a page at a time.

use protocol::{Chat, ChatTarget, Errno, History, HistoryPage, MsgId, Reply};

use super::{conversation_key, refuse, server_error, User};
use crate::context::Context;

pub async fn apply(ctx: &Context, user: &User, history: History) -> Reply {
    match history.of {
        ChatTarget::User(with) => match ctx.directory.user_name(with).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(MsgId::History, Errno::NotFound, "no such user"),
            Err(error) => return server_error(ctx, MsgId::History, error),
        },
        ChatTarget::Group(group) => match ctx.directory.group_members(group).await {
            Ok(Some(members)) if members.binary_search(&user.id).is_ok() => {}
            Ok(Some(_)) => {
                return refuse(
                    MsgId::History,
                    Errno::NotMember,
                    "you are not a member of that group",
                )
            }
            Ok(None) => return refuse(MsgId::History, Errno::NotFound, "no such group"),
            Err(error) => return server_error(ctx, MsgId::History, error),
        },
    }
    let conversation = conversation_key(user.id, history.of);
    let before = history.before.unwrap_or(i64::MAX);
    let bodies = match ctx
        .store
        .history(&conversation, before, history.limit + 1)
        .await
    {
        Ok(bodies) => bodies,
        Err(error) => return server_error(ctx, MsgId::History, error),
    };
    let more = bodies.len() > history.limit as usize;
    let messages = bodies
        .iter()
        .take(history.limit as usize)
        .filter_map(|body| match Chat::from_json(body) {
            Ok(chat) => Some(chat),
            Err(error) => {
                tracing::error!(%error, "a stored message does not read back; left out of history");
                None
            }
        })
        .collect();
    Reply::History(HistoryPage { messages, more })
}
