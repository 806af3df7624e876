//! Telling receivers of a stored message: into the mailbox of a session
//! here, or through the cluster to the server that holds them. The message
//! is already committed to every receiver's inbox, so a notification that
//! does not arrive (queue full, receiver gone, Redis away) only delays it:
//! the receiver's session reads its inbox.

use crate::bus::Bus;
use crate::context::Context;
use crate::mailbox::{Offer, Outbound, Pushed};
use crate::metrics::DeliveryPath;

/// Offers `pushed` to each (receiver, seq) online here and hands the rest
/// to the cluster.
pub async fn notify(ctx: &Context, pushed: &Pushed, deliveries: &[(i64, i64)]) {
    let mut elsewhere = Vec::new();
    for &(receiver, seq) in deliveries {
        match ctx.registry.get(receiver) {
            Some(handle) => {
                let offer = handle.offer(Outbound::Push {
                    pushed: pushed.clone(),
                    seq,
                });
                if offer == Offer::Deferred {
                    ctx.metrics.deferred();
                }
            }
            None => elsewhere.push((receiver, seq)),
        }
    }
    let metrics = &ctx.metrics;
    metrics.delivered(DeliveryPath::Stored, deliveries.len());
    metrics.delivered(DeliveryPath::Local, deliveries.len() - elsewhere.len());
    if matches!(ctx.bus, Bus::Redis(_)) {
        metrics.delivered(DeliveryPath::Cluster, elsewhere.len());
    }
    ctx.bus.notify(&elsewhere, pushed).await;
}
