//! Delivery guarantees: exactly once around a login, nothing lost when a
//! receiver is too slow, and the per-connection timeouts.

use std::time::Duration;

use testkit::prelude::*;
use testkit::server::{test_config, ChatServer, Storage};

testkit::on_both_backends!(
    message_sent_during_login_arrives_exactly_once,
    slow_receiver_gets_everything_once_in_order,
    idle_and_stalled_connections_are_closed,
);

/// The chat a frame carries; panics on anything else.
fn chat(incoming: Incoming) -> Chat {
    match incoming.frame {
        ServerFrame::Chat(chat) if chat.target.msgid() == MsgId::OneChat => chat,
        other => panic!("unexpected frame {other:?}"),
    }
}

/// Bursts of messages race with logins. After each login the receiver must
/// hold every message sent so far (in the LOGIN_ACK or pushed after it)
/// while still logged in: a message stored just after the login read its
/// offline messages must not wait for the next login.
async fn message_sent_during_login_arrives_exactly_once(storage: Storage) {
    const CYCLES: u32 = 25;
    const BURST: u32 = 40;
    let server = ChatServer::start(storage).await;
    let (mut sender, _) = server.user("sender").await;
    let mut receiver = server.client().await;
    let receiver_id = receiver.register("receiver", "pw").await;
    let mut tally = Tally::new();
    let mut sent = 0;
    for _ in 0..CYCLES {
        let burst = sent..sent + BURST;
        sent += BURST;
        let send_burst = async {
            for i in burst {
                sender
                    .send_v2(&req::chat(receiver_id, &i.to_string()))
                    .await;
                tokio::task::yield_now().await;
            }
            // The reply proves the server handled the whole burst.
            sender.ping().await;
        };
        let (_, ack) = tokio::join!(send_burst, receiver.login(receiver_id, "pw"));
        tally.add_all(&ack.offline);
        while tally.distinct() < sent {
            let frame = receiver
                .recv_within(Duration::from_secs(3))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "logged in, yet never delivered ({e}): {:?}",
                        tally.missing(sent)
                    )
                });
            let chat = chat(frame);
            receiver
                .delivered(chat.seq.expect("v2 pushes carry seq"))
                .await;
            tally.add(&chat);
        }
        receiver.logout().await;
        // Nothing may arrive after the LOGOUT reply, and nothing twice.
        assert!(
            tally.duplicates().is_empty(),
            "delivered twice: {:?}",
            tally.duplicates()
        );
    }
    receiver.expect_silence(Duration::from_millis(200)).await;
    server.count_becomes("SELECT COUNT(*) FROM inbox", 0).await;
    tally.assert_each_once(sent);
    server.stop().await;
}

/// A receiver that stops reading is not closed and costs bounded memory:
/// pushes beyond its queue wait in its inbox.
async fn slow_receiver_gets_everything_once_in_order(storage: Storage) {
    const MESSAGES: u32 = 1500;
    let mut config = test_config(storage);
    config.outbound_queue = 8;
    let server = ChatServer::start_with(config).await;
    let (mut sender, _) = server.user("fast").await;
    let (mut sleeper, sleeper_id) = server.user("sleeper").await;
    let (mut other_a, _) = server.user("other-a").await;
    let (mut other_b, other_b_id) = server.user("other-b").await;
    // 1500 messages of 8 KiB: far more than the socket buffers hold, so the
    // server's writes to the sleeper stall and its queue fills.
    let padding = "z".repeat(8 * 1024);
    for i in 0..MESSAGES {
        sender
            .send_v2(&req::chat_at(sleeper_id, &i.to_string(), &padding))
            .await;
    }
    sender.ping().await; // the sender was never slowed down
                         // Others are unaffected.
    other_a.chat(other_b_id, "unaffected").await;
    assert_eq!(other_b.recv_chat().await.msg, "unaffected");

    // The sleeper wakes up and reads: every message once, in order, its
    // inbox seq without a gap, although its queue held only 8 (the rest
    // came from its stored inbox).
    let mut tally = Tally::new();
    let mut last_seq = 0;
    while tally.distinct() < MESSAGES {
        let chat = sleeper.recv_chat().await;
        assert_eq!(chat.seq, Some(last_seq + 1), "seq follows seq");
        last_seq += 1;
        tally.add(&chat);
    }
    tally.assert_each_once(MESSAGES);
    sleeper.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

async fn idle_and_stalled_connections_are_closed(storage: Storage) {
    let mut config = test_config(storage);
    config.login_idle_timeout = Duration::from_millis(400);
    config.v2_idle_timeout = Duration::from_millis(400);
    config.frame_stall_timeout = Duration::from_millis(400);
    let server = ChatServer::start_with(config).await;
    let bound = Duration::from_secs(5);

    // Not logged in and silent.
    let mut silent = server.client().await;
    assert!(silent.expect_closed(bound).await.is_empty());

    // Half a frame, then nothing.
    let (mut stalled, stalled_id) = server.user("stalled").await;
    stalled.send_raw(b"{\"msgid\":6,\"toid\":1,").await;
    stalled.expect_closed(bound).await;

    // A v2 client that stops pinging.
    let (mut quiet_v2, _) = server.user("quiet").await;
    quiet_v2.expect_closed(bound).await;

    // A logged-in v1 client (the original one never pings) stays connected.
    let mut v1 = server.client().await;
    let v1_id = v1.register("original", "pw").await;
    // register() spoke v2; log in on a fresh v1 connection.
    drop(v1);
    let mut v1 = server.client().await;
    v1.send_v1(&req::login(v1_id, "pw")).await;
    v1.recv_reply().await.into_login();
    v1.expect_silence(Duration::from_millis(1200)).await;
    v1.send_v1(&req::ping()).await;
    v1.recv_reply().await.pong();

    // The stalled user was logged out and can log in again.
    let mut back = server.client().await;
    back.login(stalled_id, "pw").await;
    server.stop().await;
}
