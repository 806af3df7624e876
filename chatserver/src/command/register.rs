//! REGISTER: a new user with an argon2id password hash.

use protocol::{Errno, MsgId, Reply, MAX_PASSWORD_BYTES};

use super::{refuse, server_error};
use crate::context::Context;

pub async fn apply(ctx: &Context, name: String, password: String) -> Reply {
    if !protocol::valid_name(&name) {
        return refuse(
            MsgId::Register,
            Errno::BadRequest,
            "name must be 1 to 50 characters",
        );
    }
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return refuse(
            MsgId::Register,
            Errno::BadRequest,
            "password must be 1 to 128 bytes",
        );
    }
    let hash = match ctx.hasher.hash(password).await {
        Ok(hash) => hash,
        Err(error) => return server_error(ctx, MsgId::Register, error),
    };
    match ctx.store.create_user(&name, &hash).await {
        Ok(Some(id)) => {
            ctx.directory.remember_name(id, name.into());
            Reply::RegisterOk { id }
        }
        Ok(None) => refuse(MsgId::Register, Errno::BadCredentials, "name is taken"),
        Err(error) => server_error(ctx, MsgId::Register, error),
    }
}
