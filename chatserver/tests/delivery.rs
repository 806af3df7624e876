//! Delivery guarantees: exactly once around a login, nothing lost when a
//! receiver is too slow, and the per-connection timeouts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{test_config, Backend, Client, TestServer};
use serde_json::{json, Value};

on_both_backends!(
    message_sent_during_login_arrives_exactly_once,
    slow_receiver_is_closed_and_loses_nothing,
    idle_and_stalled_connections_are_closed,
);

fn sequence_number(frame: &Value) -> u32 {
    frame["msg"].as_str().unwrap().parse().unwrap()
}

/// Counts every copy of every message the receiver sees.
fn tally(counts: &mut BTreeMap<u32, u32>, frames: impl IntoIterator<Item = Value>) {
    for frame in frames {
        assert_eq!(frame["msgid"], 6, "unexpected frame {frame}");
        *counts.entry(sequence_number(&frame)).or_default() += 1;
    }
}

/// Bursts of messages race with logins. After each login the receiver must
/// hold every message sent so far (in the LOGIN_ACK or pushed after it)
/// while still logged in: a message stored just after the login read its
/// offline messages must not wait for the next login.
async fn message_sent_during_login_arrives_exactly_once(backend: Backend) {
    const CYCLES: u32 = 25;
    const BURST: u32 = 40;
    let server = TestServer::start(backend).await;
    let (mut sender, _) = Client::user(&server, "sender").await;
    let mut receiver = server.client().await;
    let receiver_id = receiver.register("receiver", "pw").await;
    let mut counts = BTreeMap::new();
    let mut sent = 0;
    for _ in 0..CYCLES {
        let burst = sent..sent + BURST;
        sent += BURST;
        let send_burst = async {
            for i in burst {
                sender
                    .send(json!({"msgid": 6, "toid": receiver_id, "msg": i.to_string()}))
                    .await;
                tokio::task::yield_now().await;
            }
            // The reply proves the server handled the whole burst.
            sender.call(json!({"msgid": 12})).await;
        };
        let (_, ack) = tokio::join!(send_burst, receiver.login(receiver_id, "pw"));
        tally(&mut counts, ack["offlinemsg"].as_array().unwrap().clone());
        while (counts.len() as u32) < sent {
            let frame = tokio::time::timeout(Duration::from_secs(3), receiver.recv())
                .await
                .unwrap_or_else(|_| {
                    let missing: Vec<u32> = (0..sent).filter(|i| !counts.contains_key(i)).collect();
                    panic!("logged in, yet never delivered: {missing:?}")
                });
            tally(&mut counts, [frame]);
        }
        let bye = receiver.call(json!({"msgid": 3})).await;
        assert_eq!(bye["errno"], 0);
        // Nothing may arrive after the LOGOUT reply, and nothing twice.
        assert!(
            counts.values().all(|n| *n == 1),
            "delivered twice: {counts:?}"
        );
    }
    receiver.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM offline_messages").await,
        0
    );
    assert_eq!(counts.len() as u32, sent);
    server.stop().await;
}

async fn slow_receiver_is_closed_and_loses_nothing(backend: Backend) {
    const MESSAGES: u32 = 1500;
    let mut config = test_config(backend);
    config.outbound_queue = 8;
    let server = TestServer::start_with(config).await;
    let (mut sender, _) = Client::user(&server, "fast").await;
    let (mut sleeper, sleeper_id) = Client::user(&server, "sleeper").await;
    let (mut other_a, _) = Client::user(&server, "other-a").await;
    let (mut other_b, other_b_id) = Client::user(&server, "other-b").await;
    // 1500 messages of 8 KiB: far more than the socket buffers hold, so the
    // server's writes to the sleeper stall and its queue fills.
    let padding = "z".repeat(8 * 1024);
    for i in 0..MESSAGES {
        sender
            .send(json!({"msgid": 6, "toid": sleeper_id, "msg": i.to_string(), "time": padding}))
            .await;
    }
    let ack = sender.call(json!({"msgid": 12})).await;
    assert_eq!(ack["msgid"], 13, "the sender was never slowed down");
    // Others are unaffected.
    other_a
        .call(json!({"msgid": 6, "toid": other_b_id, "msg": "unaffected"}))
        .await;
    assert_eq!(other_b.recv().await["msg"], "unaffected");

    // The sleeper wakes up: what reached its socket, then the end of it.
    let received = sleeper.expect_closed(Duration::from_secs(20)).await;
    let mut counts = BTreeMap::new();
    tally(&mut counts, received.clone());
    assert!(
        (received.len() as u32) < MESSAGES,
        "the connection was closed before everything was written"
    );
    let mut again = server.client().await;
    let ack = again.login(sleeper_id, "pw").await;
    tally(&mut counts, ack["offlinemsg"].as_array().unwrap().clone());
    let missing: Vec<u32> = (0..MESSAGES).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(counts.values().all(|n| *n == 1), "duplicates");
    // Stored messages come back in the order they were sent.
    let stored: Vec<u32> = ack["offlinemsg"]
        .as_array()
        .unwrap()
        .iter()
        .map(sequence_number)
        .collect();
    assert!(stored.windows(2).all(|w| w[0] < w[1]));
    server.stop().await;
}

async fn idle_and_stalled_connections_are_closed(backend: Backend) {
    let mut config = test_config(backend);
    config.login_idle_timeout = Duration::from_millis(400);
    config.v2_idle_timeout = Duration::from_millis(400);
    config.frame_stall_timeout = Duration::from_millis(400);
    let server = TestServer::start_with(config).await;
    let bound = Duration::from_secs(5);

    // Not logged in and silent.
    let mut silent = server.client().await;
    assert!(silent.expect_closed(bound).await.is_empty());

    // Half a frame, then nothing.
    let (mut stalled, stalled_id) = Client::user(&server, "stalled").await;
    stalled.send_raw(b"{\"msgid\":6,\"toid\":1,").await;
    stalled.expect_closed(bound).await;

    // A v2 client that stops pinging.
    let (mut quiet_v2, _) = Client::user(&server, "quiet").await;
    quiet_v2.expect_closed(bound).await;

    // A logged-in v1 client (the original one never pings) stays connected.
    let mut v1 = server.client().await;
    let v1_id = v1.register("original", "pw").await;
    // register() spoke v2; log in on a fresh v1 connection.
    drop(v1);
    let mut v1 = server.client().await;
    v1.send_v1(json!({"msgid": 1, "id": v1_id, "password": "pw"}))
        .await;
    assert_eq!(v1.recv().await["errno"], 0);
    v1.expect_silence(Duration::from_millis(1200)).await;
    v1.send_v1(json!({"msgid": 12})).await;
    assert_eq!(v1.recv().await["msgid"], 13);

    // The stalled user was logged out and can log in again.
    let mut back = server.client().await;
    back.login(stalled_id, "pw").await;
    server.stop().await;
}
