//! Offline messages that arrive for a user after its LOGIN_ACK was built.

use super::AfterWrite;
use crate::context::Context;
use crate::error::StoreError;

/// The stored messages to write now, oldest first, and the clean-up to run
/// once they are written.
pub async fn take(ctx: &Context, user_id: i64) -> Result<(Vec<String>, AfterWrite), StoreError> {
    let stored = ctx.store.offline_messages(user_id).await?;
    let row_ids = stored.iter().map(|m| m.row_id).collect();
    let payloads = stored.into_iter().map(|m| m.payload).collect();
    Ok((payloads, AfterWrite::DeleteOffline(row_ids)))
}
