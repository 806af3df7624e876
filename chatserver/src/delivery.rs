//! Getting a pushed message to its receivers: into the mailbox of a session
//! here, to the server that holds them (cluster mode), or into offline
//! storage. Never both, never neither.

use crate::context::Context;
use crate::error::Unavailable;
use crate::mailbox::{Offer, Outbound, Pushed};
use crate::store::OfflineMessage;

/// Delivers one message to each receiver: to sessions here, then through
/// the cluster to other servers, and into storage for everyone else. An
/// error means storage failed for receivers that could not take it now;
/// those online got it regardless.
pub async fn deliver(ctx: &Context, receivers: &[i64], pushed: &Pushed) -> Result<(), Unavailable> {
    let mut offline = Vec::new();
    let mut elsewhere = Vec::new();
    for &receiver in receivers {
        match ctx.registry.get(receiver) {
            Some(handle) => {
                if handle.offer(Outbound::Push(pushed.clone())) != Offer::Queued {
                    offline.push(receiver);
                }
            }
            None => elsewhere.push(receiver),
        }
    }
    offline.extend(ctx.bus.hand_off(&elsewhere, pushed).await);
    store_for_later(ctx, &offline, std::slice::from_ref(pushed)).await
}

/// Stores messages for receivers who cannot take them now. A receiver who
/// logged in meanwhile may already have read its offline messages, so its
/// session is told to look again: the stored row is then delivered once,
/// either by the login or by that second look.
pub async fn store_for_later(
    ctx: &Context,
    receivers: &[i64],
    messages: &[Pushed],
) -> Result<(), Unavailable> {
    if receivers.is_empty() || messages.is_empty() {
        return Ok(());
    }
    let rows: Vec<OfflineMessage> = receivers
        .iter()
        .flat_map(|&user_id| {
            messages.iter().map(move |pushed| OfflineMessage {
                user_id,
                mid: pushed.mid(),
                payload: pushed.payload(),
            })
        })
        .collect();
    ctx.store.store_offline(&rows).await?;
    let mut elsewhere = Vec::new();
    for &receiver in receivers {
        match ctx.registry.get(receiver) {
            // If full or gone, the session is closing and the row stays stored.
            Some(handle) => {
                handle.offer(Outbound::SweepOffline);
            }
            None => elsewhere.push(receiver),
        }
    }
    if let Err(error) = ctx.bus.request_sweep(&elsewhere).await {
        // The rows stay stored; they arrive at the receivers' next login.
        tracing::debug!(%error, "sweep request not sent");
    }
    Ok(())
}
