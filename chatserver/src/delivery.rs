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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::Bus;
    use crate::config::HashCost;
    use crate::context::Limits;
    use crate::directory::Directory;
    use crate::hasher::PasswordHasher;
    use crate::mailbox::mailbox;
    use crate::mid::MidGenerator;
    use crate::registry::Registry;
    use crate::store::Store;

    /// A single-server context on a fresh SQLite file: delivery needs no Redis.
    async fn local_context(dir: &std::path::Path) -> Context {
        let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
        let store = Store::connect(&url, Duration::from_secs(5)).await.unwrap();
        Context {
            server_name: "test".into(),
            limits: Limits {
                max_frame: 65_536,
                outbound_queue: 1,
                login_idle_timeout: Duration::from_secs(60),
                v2_idle_timeout: Duration::from_secs(60),
                frame_stall_timeout: Duration::from_secs(60),
                v1_write_gap: Duration::ZERO,
            },
            directory: Directory::new(store.clone(), None),
            store,
            registry: Registry::default(),
            hasher: PasswordHasher::new(
                HashCost {
                    memory_kib: 8,
                    iterations: 1,
                },
                1,
            ),
            guard: Default::default(),
            refusals: Default::default(),
            mids: MidGenerator::new(0),
            bus: Bus::Local,
        }
    }

    #[tokio::test]
    async fn online_receivers_get_the_push_and_the_rest_is_stored_once() {
        let dir = std::env::temp_dir().join(format!("delivery-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let ctx = local_context(&dir).await;
        let online = ctx.store.create_user("online", "h").await.unwrap().unwrap();
        let offline = ctx
            .store
            .create_user("offline", "h")
            .await
            .unwrap()
            .unwrap();
        let full = ctx.store.create_user("full", "h").await.unwrap().unwrap();
        let (handle, mut online_box) = mailbox(1, 4);
        assert!(ctx.registry.claim(online, handle));
        // A receiver whose queue (of one) is already full.
        let (handle, full_box) = mailbox(2, 1);
        assert!(ctx.registry.claim(full, handle.clone()));
        handle.offer(Outbound::SweepOffline);

        let pushed = Pushed::from_json(
            7,
            r#"{"msgid":6,"id":9,"name":"n","toid":0,"msg":"m","time":"t","mid":7}"#.into(),
        );
        deliver(&ctx, &[online, offline, full], &pushed)
            .await
            .unwrap();

        match online_box.rx.try_recv() {
            Ok(Outbound::Push(got)) => assert_eq!(got.mid(), 7),
            other => panic!("expected the push, got {other:?}"),
        }
        assert!(ctx.store.offline_messages(online).await.unwrap().is_empty());
        for receiver in [offline, full] {
            let stored = ctx.store.offline_messages(receiver).await.unwrap();
            assert_eq!(stored.len(), 1, "receiver {receiver}");
            assert_eq!(stored[0].payload, pushed.payload());
        }
        // The full receiver was told to close; its queue held no push.
        assert!(full_box.evict.is_cancelled());
        assert!(full_box.close_and_drain().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
