//! LOGOUT, and the same clean-up when a connection ends for any reason.

use protocol::Reply;

use super::SessionState;
use crate::context::Context;
use crate::delivery::store_for_later;

pub async fn apply(ctx: &Context, session: &mut SessionState) -> Reply {
    end_login(ctx, session).await;
    Reply::DONE
}

/// Takes the user off this server: unregisters the session so new messages
/// go to storage, stores what was queued but never written, and records the
/// user offline. Used by LOGOUT, disconnects, slow receivers and shutdown.
pub async fn end_login(ctx: &Context, session: &mut SessionState) {
    let Some(user) = session.user.take() else {
        return;
    };
    ctx.registry.release(user.id, session.conn_id);
    ctx.bus.release(user.id).await;
    if let Some(mailbox) = session.mailbox.take() {
        let undelivered = mailbox.close_and_drain();
        if let Err(error) = store_for_later(ctx, &[user.id], &undelivered).await {
            tracing::error!(%error, lost = undelivered.len(), "could not store undelivered messages");
        } else if !undelivered.is_empty() {
            tracing::info!(
                stored = undelivered.len(),
                "undelivered messages stored offline"
            );
        }
    }
    if let Err(error) = ctx.store.set_online(&[user.id], false).await {
        tracing::warn!(%error, "could not record the user offline");
    }
}
