//! CREATE_GROUP: a uniquely named group with its creator as first member.

use protocol::{Ack, Errno, MsgId, Reply, MAX_GROUP_DESC_CHARS};

use super::{refuse, server_error, User};
use crate::context::Context;

pub async fn apply(ctx: &Context, user: &User, name: &str, desc: &str) -> Reply {
    if !protocol::valid_name(name) {
        return refuse(
            MsgId::CreateGroup,
            Errno::BadRequest,
            "group name must be 1 to 50 characters",
        );
    }
    if desc.chars().count() > MAX_GROUP_DESC_CHARS {
        return refuse(
            MsgId::CreateGroup,
            Errno::BadRequest,
            "group description must be at most 200 characters",
        );
    }
    match ctx.store.create_group(user.id, name, desc).await {
        Ok(Some(group_id)) => {
            ctx.directory.invalidate_group(group_id);
            Reply::Done(Ack {
                mid: None,
                groupid: Some(group_id),
                ..Ack::default()
            })
        }
        Ok(None) => refuse(
            MsgId::CreateGroup,
            Errno::GroupNameTaken,
            "group name is taken",
        ),
        Err(error) => server_error(ctx, MsgId::CreateGroup, error),
    }
}
