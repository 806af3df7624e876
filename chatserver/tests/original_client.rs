//! The original C++ client, as it reads: at most 1024 bytes per `recv`,
//! each read parsed as exactly one JSON object. A read holding two frames,
//! part of a frame or 1024 bytes or more would crash it; here it fails the
//! test. The server must keep every v1 frame under 1024 bytes (a long
//! LOGIN_ACK leaves offline messages for pushes after it), space v1 frames
//! so that each is read alone, and send pushes with exactly the original
//! fields.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::prelude::*;
use testkit::server::{test_config, ChatServer, Storage};

testkit::on_both_backends!(
    offline_messages_and_a_900_byte_chat_arrive_whole_one_per_read,
    quick_chats_to_an_online_original_client_arrive_one_per_read,
);

/// The server's spacing of v1 frames here. The default (5 ms) suits the
/// original client on a machine that is not busy; this suite shares two
/// cores with every other test, where a reader can be late by more than
/// 5 ms and find two frames waiting. The mechanism under test is the same.
const WRITE_GAP: Duration = Duration::from_millis(50);

async fn start(storage: Storage) -> ChatServer {
    let mut config = test_config(storage);
    config.v1_write_gap = WRITE_GAP;
    ChatServer::start_with(config).await
}

/// A connection that behaves like the original client.
struct OriginalClient {
    client: Client,
}

impl OriginalClient {
    async fn connect(server: &ChatServer) -> Self {
        OriginalClient {
            client: server.client().await,
        }
    }

    /// Writes `request` as the original client does (JSON and a NUL).
    async fn send(&mut self, request: &Request) {
        self.client.send_v1(request).await;
    }

    /// One `recv(fd, buf, 1024)` parsed as one JSON object, as the original
    /// client does; panics where the original client would crash or
    /// misread. Returns the bytes and their JSON.
    async fn read(&mut self) -> (Vec<u8>, Value) {
        let bytes = self
            .client
            .read_once(protocol::V1_READ_SIZE, WAIT)
            .await
            .unwrap_or_else(|e| panic!("the original client waits in recv: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(!bytes.is_empty(), "connection closed");
        assert!(
            bytes.len() < protocol::V1_READ_SIZE,
            "a read of {} bytes: the frame does not fit the original client's buffer: {text}",
            bytes.len()
        );
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "a read ending inside a frame: {text}"
        );
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("a read that is not exactly one JSON object ({e}): {text}"));
        (bytes, value)
    }

    /// Reads until nothing has come for `quiet`; asserts nothing did.
    async fn expect_nothing_more(&mut self, quiet: Duration) {
        if let Ok(bytes) = self.client.read_once(protocol::V1_READ_SIZE, quiet).await {
            panic!("unexpected read: {}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// The push the original client must read for `msg` from `from` to `to`:
/// exactly the original fields, `\n`-terminated.
fn v1_push(from: i64, name: &str, to: i64, msg: &str, time: &str) -> Vec<u8> {
    let chat = Chat {
        target: ChatTarget::User(to),
        from,
        name: name.into(),
        msg: msg.into(),
        time: time.into(),
        mid: None,
        ts: None,
        seq: None,
    };
    let mut frame = chat.to_json(Version::V1).into_bytes();
    frame.push(b'\n');
    frame
}

const TIME: &str = "2024-05-01 10:00:00";

/// 20 messages from one user, then a 900-byte one from another, all
/// stored: the LOGIN_ACK carries the first few, the rest come as pushes,
/// every frame read alone and whole, in the order sent.
async fn offline_messages_and_a_900_byte_chat_arrive_whole_one_per_read(storage: Storage) {
    let server = start(storage).await;
    let (mut sender, sender_id) = server.user("sender").await;
    let (mut other, other_id) = server.user("other").await;
    let receiver_id = server.client().await.register("original", "123456").await;

    let small: Vec<String> = (0..20)
        .map(|i| format!("offline {i:02} {}", "x".repeat(40)))
        .collect();
    for msg in &small {
        sender.call_ok(&req::chat_at(receiver_id, msg, TIME)).await;
    }
    // A chat whose v1 push is 900 bytes, terminator included.
    let shell = v1_push(other_id, "other", receiver_id, "", TIME).len();
    let big = "长".to_owned() + &"b".repeat(900 - shell - "长".len());
    let big_frame = v1_push(other_id, "other", receiver_id, &big, TIME);
    assert_eq!(big_frame.len(), 900);
    other.call_ok(&req::chat_at(receiver_id, &big, TIME)).await;

    let mut original = OriginalClient::connect(&server).await;
    original.send(&req::login(receiver_id, "123456")).await;
    let (ack_bytes, ack) = original.read().await;
    assert_eq!(ack["msgid"], 2);
    assert_eq!(ack["errno"], 0);
    let inside: Vec<Value> = ack["offlinemsg"]
        .as_array()
        .expect("some offline messages inside the LOGIN_ACK")
        .iter()
        .map(|m| serde_json::from_str(m.as_str().expect("v1 nests JSON text")).unwrap())
        .collect();
    assert!(
        !inside.is_empty() && inside.len() < small.len(),
        "{} of 20 inside a LOGIN_ACK of {} bytes",
        inside.len(),
        ack_bytes.len()
    );
    for (i, message) in inside.iter().enumerate() {
        let expected: Value =
            serde_json::from_slice(&v1_push(sender_id, "sender", receiver_id, &small[i], TIME))
                .unwrap();
        assert_eq!(
            message, &expected,
            "offline message {i}, original fields only"
        );
    }
    // The rest, one push per read, in order, byte for byte.
    for msg in &small[inside.len()..] {
        let (bytes, _) = original.read().await;
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&v1_push(sender_id, "sender", receiver_id, msg, TIME))
        );
    }
    let (bytes, _) = original.read().await;
    assert_eq!(bytes, big_frame, "the 900-byte chat, whole and alone");
    original
        .expect_nothing_more(Duration::from_millis(200))
        .await;
    server.stop().await;
}

/// Ten chats sent back to back to a logged-in original client: ten reads,
/// one chat each, in order.
async fn quick_chats_to_an_online_original_client_arrive_one_per_read(storage: Storage) {
    let server = start(storage).await;
    let (mut sender, sender_id) = server.user("sender").await;
    let receiver_id = server.client().await.register("original", "123456").await;
    let mut original = OriginalClient::connect(&server).await;
    original.send(&req::login(receiver_id, "123456")).await;
    let (_, ack) = original.read().await;
    assert_eq!(
        ack,
        json!({"msgid": 2, "errno": 0, "id": receiver_id, "name": "original"})
    );

    // The original client sits in recv while the chats are sent.
    let sending = async {
        for i in 0..10 {
            sender
                .send_v2(&req::chat_at(receiver_id, &format!("quick {i}"), TIME))
                .await;
        }
        sender.ping().await; // all ten handled
    };
    let reading = async {
        for i in 0..10 {
            let (bytes, _) = original.read().await;
            let expected = v1_push(
                sender_id,
                "sender",
                receiver_id,
                &format!("quick {i}"),
                TIME,
            );
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&expected),
                "chat {i}"
            );
        }
    };
    tokio::join!(sending, reading);
    original
        .expect_nothing_more(Duration::from_millis(200))
        .await;
    server.stop().await;
}
