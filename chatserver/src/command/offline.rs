//! Offline messages that arrive for a user after its LOGIN_ACK was built.

use crate::context::Context;
use crate::error::StoreError;

/// The stored messages to write now, oldest first (their v2 JSON text), and
/// their row ids, to delete once they are written.
pub async fn take(ctx: &Context, user_id: i64) -> Result<(Vec<String>, Vec<i64>), StoreError> {
    let stored = ctx.store.offline_messages(user_id).await?;
    let row_ids = stored.iter().map(|m| m.row_id).collect();
    let payloads = stored.into_iter().map(|m| m.payload).collect();
    Ok((payloads, row_ids))
}
