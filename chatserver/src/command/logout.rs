//! LOGOUT, and the same clean-up when a connection ends for any reason.

use std::sync::atomic::Ordering;

use protocol::{Presence, Reply};

use super::SessionState;
use crate::context::Context;
use crate::notices;

/// LOGOUT ends the login and revokes the session's token: a client that
/// logs out means to need the password next time.
pub async fn apply(ctx: &Context, session: &mut SessionState) -> Reply {
    if let Some(hash) = session.token_hash.take() {
        if let Err(error) = ctx.store.delete_token(&hash).await {
            tracing::warn!(%error, "could not revoke the session's token");
        }
    }
    end_login(ctx, session).await;
    Reply::DONE
}

/// Takes the user off this server: unregisters the session and records the
/// user offline. What was queued but not written stays in the user's inbox
/// (messages are stored before they are queued). Used by LOGOUT,
/// disconnects and shutdown.
pub async fn end_login(ctx: &Context, session: &mut SessionState) {
    let Some(user) = session.user.take() else {
        return;
    };
    // Further offers find the session gone.
    drop(session.mailbox.take());
    // The session's DELIVERED confirmations (and its presence) are
    // committed before the login is free again, so the user's next login
    // starts after them.
    ctx.writer.presence(user.id, false).await;
    ctx.writer.flush().await;
    ctx.registry.release(user.id, session.conn_id);
    ctx.bus.release(user.id).await;
    let related = std::mem::take(&mut session.related);
    // At shutdown users are not leaving: GOAWAY sends them to another
    // server, whose login tells their friends they are (still) online.
    if !ctx.shutting_down.load(Ordering::Relaxed) {
        notices::presence(ctx, user.id, &related, Presence::Offline).await;
    }
}
