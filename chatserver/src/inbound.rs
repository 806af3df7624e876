//! Cluster mode's background work, above the Redis client: the heartbeat
//! that keeps this server's presence (and re-claims its users after an
//! outage), and the subscriber that takes other servers' frames:
//! notifications of stored messages for users here, and group changes.
//!
//! Pub/sub drops what arrives while a subscriber is disconnected (or cut off
//! by Redis for a full output buffer, or after a Redis restart), so every
//! (re)subscription and every presence re-claim makes each local session
//! read its inbox: a lost notification delays a message, never loses it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::PubSub;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::redis::{bounded, parse_bus_frame, BusFrame, RedisBus, RECONNECT_MAX_DELAY};
use crate::context::Context;
use crate::error::BusError;
use crate::mailbox::{Notice, Offer, Outbound, Pushed};

/// Runs the heartbeat and the subscriber on `tasks` until `stop` is
/// cancelled.
pub fn spawn(
    ctx: Arc<Context>,
    cluster: Arc<RedisBus>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(heartbeat(ctx.clone(), cluster.clone(), stop.clone()));
    tasks.spawn(subscriber(ctx, cluster, stop));
}

/// Renews this server's lease every third of it. After an outage longer
/// than the lease (or a Redis restart, which forgets every key) it claims
/// its users again and evicts those another server took meanwhile.
async fn heartbeat(ctx: Arc<Context>, cluster: Arc<RedisBus>, stop: CancellationToken) {
    let period = cluster.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let was_reachable = cluster.reachable.load(Ordering::Relaxed);
        let result = async {
            let mut conn = cluster.conn();
            let key = cluster.alive_key();
            let still_alive: bool = cluster
                .call("exists", async move { conn.exists(key).await })
                .await?;
            cluster.beat().await?;
            cluster.lease_node().await?;
            if !still_alive || !was_reachable {
                reclaim(&ctx, &cluster).await?;
            }
            Ok::<_, BusError>(())
        }
        .await;
        match result {
            Ok(()) => {
                if !was_reachable {
                    tracing::info!("redis is back; presence renewed");
                }
                cluster.reachable.store(true, Ordering::Relaxed);
                retry_releases(&ctx, &cluster).await;
                ctx.mids.set_node(cluster.node());
            }
            Err(error) => {
                if was_reachable {
                    tracing::error!(%error, "redis unavailable: serving local users; other servers' users get their messages from their inboxes once it is back");
                }
                cluster.reachable.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Claims every local user again and evicts the sessions of users now held
/// elsewhere. The others read their inboxes: notifications sent while
/// Redis was away went nowhere.
async fn reclaim(ctx: &Context, cluster: &RedisBus) -> Result<(), BusError> {
    for user in ctx.registry.users() {
        let claimed = cluster.claim_now(user).await?;
        let Some(handle) = ctx.registry.get(user) else {
            continue;
        };
        if claimed {
            handle.offer(Outbound::CatchUp);
        } else {
            tracing::warn!(
                user,
                "login taken by another server during a redis outage; closing this session"
            );
            handle.evict();
        }
    }
    ctx.directory.clear_groups();
    Ok(())
}

async fn retry_releases(ctx: &Context, cluster: &RedisBus) {
    let pending: Vec<i64> = cluster
        .pending_releases
        .lock()
        .expect("pending lock")
        .drain()
        .collect();
    for user in pending {
        if ctx.registry.is_online(user) {
            continue;
        }
        cluster.release(user).await;
    }
}

/// Receives frames for this server, reconnecting with backoff.
///
/// The subscription is probed with a PING as often as the heartbeat beats:
/// waiting for frames alone would not notice a connection that died without
/// a FIN or RST (a paused or partitioned Redis), nor one whose end the
/// client library reports late, and frames meant for this server would go
/// unheard until the next login reads the inbox.
async fn subscriber(ctx: Arc<Context>, cluster: Arc<RedisBus>, stop: CancellationToken) {
    let probe_period = cluster.lease / 3;
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        let session = async {
            let mut pubsub = bounded(cluster.client.get_async_pubsub()).await?;
            bounded(pubsub.subscribe(&[cluster.own_channel(), cluster.cluster_channel()])).await?;
            Ok::<_, BusError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            session = session => session,
        };
        match pubsub {
            Ok(pubsub) => {
                tracing::info!("subscribed to cluster channels");
                ctx.metrics.subscribed(true);
                if !std::mem::take(&mut first) {
                    ctx.metrics.subscription_reset();
                }
                delay = Duration::from_millis(100);
                // Membership may have changed, and notifications been
                // missed, while we were not listening.
                ctx.directory.clear_groups();
                catch_up_everyone(&ctx);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = listen(&ctx, &cluster, pubsub, probe_period) => {}
                }
                ctx.metrics.subscribed(false);
            }
            Err(error) => {
                tracing::warn!(%error, ?delay, "cannot subscribe to cluster channels; retrying")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX_DELAY);
    }
}

/// Hands the subscription's frames to the local sessions (passing on the
/// pushes for receivers who moved) until it ends or stops answering the
/// PING sent every `probe_period`.
async fn listen(ctx: &Context, cluster: &RedisBus, pubsub: PubSub, probe_period: Duration) {
    let (mut sink, mut messages) = pubsub.split();
    let mut probes =
        tokio::time::interval_at(tokio::time::Instant::now() + probe_period, probe_period);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    tracing::error!("lost the cluster subscription; reconnecting");
                    return;
                };
                // Frames wait meanwhile, in order; the call is bounded.
                if let Some(strays) = handle_frame(ctx, message.get_payload_bytes()) {
                    cluster.reroute(&strays.deliveries, strays.mid, &strays.payload).await;
                }
            }
            _ = probes.tick() => {
                if let Err(error) = bounded(sink.ping::<redis::Value>()).await {
                    tracing::error!(%error, "the cluster subscription stopped answering; reconnecting");
                    return;
                }
            }
        }
    }
}

/// Has every local session read its inbox.
fn catch_up_everyone(ctx: &Context) {
    for user in ctx.registry.users() {
        if let Some(handle) = ctx.registry.get(user) {
            handle.offer(Outbound::CatchUp);
        }
    }
}

/// A push for receivers this server does not hold: its id, body and
/// those receivers with their seqs.
struct Strays {
    mid: i64,
    payload: String,
    deliveries: Vec<(i64, i64)>,
}

/// Hands a frame to the local sessions it is for; returns the receivers of
/// a push that are not here (they moved since the sender's server looked
/// them up).
fn handle_frame(ctx: &Context, bytes: &[u8]) -> Option<Strays> {
    match parse_bus_frame(bytes) {
        Some(BusFrame::Push {
            mid,
            deliveries,
            payload,
        }) => {
            let pushed = Pushed::from_json(mid, payload.into());
            let mut strays = Vec::new();
            for (user, seq) in deliveries {
                let Some(handle) = ctx.registry.get(user) else {
                    strays.push((user, seq));
                    continue;
                };
                let offer = handle.offer(Outbound::Push {
                    pushed: pushed.clone(),
                    seq,
                });
                if offer == Offer::Deferred {
                    ctx.metrics.deferred();
                }
            }
            if !strays.is_empty() {
                return Some(Strays {
                    mid,
                    payload: payload.to_owned(),
                    deliveries: strays,
                });
            }
        }
        Some(BusFrame::GroupChanged { group }) => ctx.directory.invalidate_group(group),
        Some(BusFrame::Notice {
            related,
            users,
            payload,
        }) => {
            let notice = Notice {
                json: payload.into(),
                related,
            };
            for user in users {
                if let Some(handle) = ctx.registry.get(user) {
                    handle.notify(notice.clone());
                }
            }
        }
        None => {
            tracing::warn!(frame = %String::from_utf8_lossy(bytes), "unreadable cluster frame ignored")
        }
    }
    None
}
