//! Hostile and malformed input: each gets the reply docs/protocol.md names, the
//! connection stays usable (except for an oversized frame), other users are
//! unaffected and no stored row changes.

mod common;

use std::time::Duration;

use common::{test_config, Backend, Client, TestServer};
use serde_json::{json, Value};

on_both_backends!(
    malformed_frames_get_errno_6_and_change_nothing,
    requests_before_login_or_for_another_id_get_errno_7,
    oversized_frame_gets_errno_8_and_closes_only_that_connection,
    thousands_of_frames_in_one_write,
    frame_split_across_many_writes_with_pauses,
    hostile_text_round_trips_byte_for_byte,
    repeated_wrong_passwords_are_rate_limited,
);

/// Row counts of every table: compared before and after an attack.
async fn snapshot(server: &TestServer) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "users",
        "friends",
        "chat_groups",
        "group_members",
        "offline_messages",
    ] {
        counts.push(server.count(&format!("SELECT COUNT(*) FROM {table}")).await);
    }
    counts
}

/// Two users who keep chatting while someone else misbehaves.
struct Bystanders {
    a: Client,
    b: Client,
    b_id: i64,
}

impl Bystanders {
    async fn new(server: &TestServer) -> Self {
        let (a, _) = Client::user(server, "bystander-a").await;
        let (b, b_id) = Client::user(server, "bystander-b").await;
        Bystanders { a, b, b_id }
    }

    async fn still_chatting(&mut self) {
        let ack = self
            .a
            .call(json!({"msgid": 6, "toid": self.b_id, "msg": "still here"}))
            .await;
        assert_eq!(ack["errno"], 0);
        assert_eq!(self.b.recv().await["msg"], "still here");
    }
}

async fn expect_error(client: &mut Client, frame: &[u8], reply_msgid: i64, errno: i64) -> Value {
    client.send_raw(frame).await;
    let reply = client.recv().await;
    assert_eq!(
        reply["msgid"],
        reply_msgid,
        "reply to {:?}: {reply}",
        String::from_utf8_lossy(frame)
    );
    assert_eq!(
        reply["errno"],
        errno,
        "reply to {:?}: {reply}",
        String::from_utf8_lossy(frame)
    );
    assert!(reply["errmsg"].as_str().is_some_and(|m| !m.is_empty()));
    reply
}

async fn still_usable(client: &mut Client) {
    let pong = client.call(json!({"msgid": 12})).await;
    assert_eq!(pong["msgid"], 13);
}

async fn malformed_frames_get_errno_6_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut bystanders = Bystanders::new(&server).await;
    let (mut attacker, _) = Client::user(&server, "attacker").await;
    let before = snapshot(&server).await;
    let cases: &[(&[u8], i64)] = &[
        (b"hello there\n", 11),
        (b"{\"msgid\":\n", 11),
        (b"[1,2,3]\0", 11),
        (b"\"just a string\"\n", 11),
        (b"42\n", 11),
        (b"null\n", 11),
        (b"{\"id\":1,\"password\":\"x\"}\n", 11),
        (b"{\"msgid\":\"1\"}\n", 11),
        (b"{\"msgid\":1.5}\n", 11),
        (b"{\"msgid\":null}\n", 11),
        (b"{\"msgid\":99}\n", 11),
        (b"{\"msgid\":-1}\n", 11),
        (b"{\"msgid\":2,\"errno\":0}\n", 11),
        (b"{\"msgid\":5}\n", 11),
        (b"{\"msgid\":11}\n", 11),
        (b"{\"msgid\":13}\n", 11),
        (b"{\"msgid\":1,\"id\":\"13\",\"password\":\"x\"}\0", 2),
        (b"{\"msgid\":1,\"password\":\"x\"}\0", 2),
        (b"{\"msgid\":4,\"name\":5,\"password\":\"x\"}\0", 5),
        (b"{\"msgid\":4,\"name\":\"n\"}\0", 5),
        (b"{\"msgid\":4,\"name\":\"\",\"password\":\"x\"}\0", 5),
        (b"{\"msgid\":6,\"toid\":\"2\",\"msg\":\"x\"}\n", 11),
        (b"{\"msgid\":6,\"toid\":2}\n", 11),
        (b"{\"msgid\":6,\"toid\":2,\"msg\":[\"x\"]}\n", 11),
        (b"{\"msgid\":7,\"friendid\":{}}\n", 11),
        (b"{\"msgid\":8}\n", 11),
        (b"{\"msgid\":8,\"groupname\":\"g\",\"groupdesc\":7}\n", 11),
        (b"{\"msgid\":9,\"groupid\":true}\n", 11),
        (b"{\"msgid\":10,\"groupid\":1}\n", 11),
        (b"{\"msgid\":12,\"v\":3}\n", 11),
        (b"{\"msgid\":12,\"v\":\"2\"}\n", 11),
        (b"{\"msgid\":12,\"rid\":[1]}\n", 11),
        (b"{\"msgid\":12,\"x\":\"\xff\xfe\"}\n", 11),
        (b"\xc3\x28\n", 11),
    ];
    for (frame, reply_msgid) in cases {
        expect_error(&mut attacker, frame, *reply_msgid, 6).await;
    }
    // A bad request keeps its rid in the error reply.
    let reply = expect_error(
        &mut attacker,
        b"{\"msgid\":6,\"rid\":\"x1\",\"toid\":\"no\"}\n",
        11,
        6,
    )
    .await;
    assert_eq!(reply["rid"], "x1");
    still_usable(&mut attacker).await;
    bystanders.still_chatting().await;
    assert_eq!(snapshot(&server).await, before);
    server.stop().await;
}

async fn requests_before_login_or_for_another_id_get_errno_7(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut bystanders = Bystanders::new(&server).await;
    let b_id = bystanders.b_id;
    let mut anonymous = server.client().await;
    for request in [
        json!({"msgid": 3}),
        json!({"msgid": 6, "toid": b_id, "msg": "spoof"}),
        json!({"msgid": 7, "friendid": b_id}),
        json!({"msgid": 8, "groupname": "g"}),
        json!({"msgid": 9, "groupid": 1}),
        json!({"msgid": 10, "groupid": 1, "msg": "m"}),
    ] {
        anonymous.send_v1(request).await;
        let reply = anonymous.recv().await;
        assert_eq!(reply["msgid"], 11);
        assert_eq!(reply["errno"], 7);
    }
    let (mut mallory, _) = Client::user(&server, "mallory").await;
    let before = snapshot(&server).await;
    // Claiming to be someone else: refused, and nothing is sent in their name.
    for request in [
        json!({"msgid": 6, "id": b_id, "toid": b_id, "msg": "spoof"}),
        json!({"msgid": 7, "id": b_id, "friendid": b_id}),
        json!({"msgid": 10, "id": b_id, "groupid": 1, "msg": "m"}),
        json!({"msgid": 3, "id": b_id}),
    ] {
        let reply = mallory.call(request).await;
        assert_eq!(reply["errno"], 7, "{reply}");
    }
    // The name in a chat is the sender's registered one, whatever was sent.
    mallory
        .call(json!({"msgid": 6, "toid": b_id, "name": "bystander-a", "msg": "hi"}))
        .await;
    let push = bystanders.b.recv().await;
    assert_eq!(push["name"], "mallory");
    still_usable(&mut anonymous).await;
    bystanders.still_chatting().await;
    assert_eq!(snapshot(&server).await, before);
    server.stop().await;
}

async fn oversized_frame_gets_errno_8_and_closes_only_that_connection(backend: Backend) {
    let mut config = test_config(backend);
    config.max_frame = 1024;
    let server = TestServer::start_with(config).await;
    let mut bystanders = Bystanders::new(&server).await;
    let (mut big, _) = Client::user(&server, "big").await;
    let (mut exact, _) = Client::user(&server, "exact").await;
    let before = snapshot(&server).await;
    // No terminator needed: the server refuses as soon as the limit is passed.
    let frame = format!("{{\"msgid\":6,\"toid\":1,\"msg\":\"{}", "x".repeat(2000));
    big.send_raw(frame.as_bytes()).await;
    let frames = big.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["msgid"], 11);
    assert_eq!(frames[0]["errno"], 8);
    // Exactly at the limit is fine.
    let prefix = r#"{"msgid":12,"pad":""#;
    let padded = format!("{prefix}{}\"}}\n", "p".repeat(1024 - prefix.len() - 2));
    assert_eq!(padded.len(), 1025);
    exact.send_raw(padded.as_bytes()).await;
    assert_eq!(exact.recv().await["msgid"], 13);
    bystanders.still_chatting().await;
    assert_eq!(snapshot(&server).await, before);
    server.stop().await;
}

async fn thousands_of_frames_in_one_write(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut bystanders = Bystanders::new(&server).await;
    let mut client = server.client().await;
    let mut burst = Vec::new();
    for i in 0..5000 {
        burst.extend_from_slice(format!("{{\"msgid\":12,\"rid\":{i}}}").as_bytes());
        burst.push(if i % 2 == 0 { b'\n' } else { 0 });
    }
    client.send_raw(&burst).await;
    for i in 0..5000 {
        let pong = client.recv().await;
        assert_eq!(pong["msgid"], 13);
        assert_eq!(pong["rid"], i, "replies come in request order");
    }
    bystanders.still_chatting().await;
    server.stop().await;
}

async fn frame_split_across_many_writes_with_pauses(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut sender, _) = Client::user(&server, "slow-typist").await;
    let (mut receiver, receiver_id) = Client::user(&server, "reader").await;
    let frame = format!(
        "{{\"msgid\":6,\"toid\":{receiver_id},\"msg\":\"split 分开 😀\",\"v\":2,\"rid\":\"s\"}}\n"
    );
    for chunk in frame.as_bytes().chunks(3) {
        sender.send_raw(chunk).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ack = sender.recv().await;
    assert_eq!(ack["rid"], "s");
    assert_eq!(ack["errno"], 0);
    assert_eq!(receiver.recv().await["msg"], "split 分开 😀");
    server.stop().await;
}

async fn hostile_text_round_trips_byte_for_byte(backend: Backend) {
    let server = TestServer::start(backend).await;
    let names = [
        "quote\"d 'single'",
        "back\\slash\\",
        "nul\u{0}inside",
        "张三",
        "emoji 😀🎉",
        "'); DROP TABLE users;--",
    ];
    let long_text: String = "长文本 10KB 😀 \"quoted\" \\ ".repeat(400);
    assert!(long_text.len() > 10_000);
    let messages = [
        "quote\" and 'single'".to_owned(),
        "back\\slash \\n not a newline".to_owned(),
        "nul \u{0} byte".to_owned(),
        "中文消息".to_owned(),
        "emoji 😀👍🏽".to_owned(),
        "'); DROP TABLE users;--".to_owned(),
        "colons: a:b:c".to_owned(),
        long_text,
    ];
    let mut clients = Vec::new();
    for name in names {
        let mut client = server.client().await;
        let id = client.register(name, "pw").await;
        let ack = client.login(id, "pw").await;
        assert_eq!(ack["name"], name);
        clients.push((client, id));
    }
    let (mut sender, _) = clients.remove(0);
    let (mut receiver, receiver_id) = clients.remove(0);
    let group = sender
        .call(json!({"msgid": 8, "groupname": names[3], "groupdesc": names[4]}))
        .await["groupid"]
        .as_i64()
        .unwrap();
    receiver.call(json!({"msgid": 9, "groupid": group})).await;
    let mut offline_user = server.client().await;
    let offline_user_id = offline_user.register("later", "pw").await;
    for text in &messages {
        sender
            .call(json!({"msgid": 6, "toid": receiver_id, "msg": text, "time": text}))
            .await;
        let push = receiver.recv().await;
        assert_eq!(push["msg"].as_str().unwrap(), text);
        assert_eq!(push["time"].as_str().unwrap(), text);
        assert_eq!(push["name"], names[0]);
        sender
            .call(json!({"msgid": 10, "groupid": group, "msg": text}))
            .await;
        assert_eq!(receiver.recv().await["msg"].as_str().unwrap(), text);
        sender
            .call(json!({"msgid": 6, "toid": offline_user_id, "msg": text}))
            .await;
    }
    let ack = offline_user.login(offline_user_id, "pw").await;
    let stored: Vec<&str> = ack["offlinemsg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored,
        messages.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The same through v1's JSON-in-strings.
    receiver.call(json!({"msgid": 3})).await;
    sender
        .call(json!({"msgid": 6, "toid": receiver_id, "msg": messages[2]}))
        .await;
    let mut v1 = server.client().await;
    v1.send_v1(json!({"msgid": 1, "id": receiver_id, "password": "pw"}))
        .await;
    let ack = v1.recv().await;
    let inner: Value = serde_json::from_str(ack["offlinemsg"][0].as_str().unwrap()).unwrap();
    assert_eq!(inner["msg"].as_str().unwrap(), messages[2]);
    let group_entry: Value = serde_json::from_str(ack["groups"][0].as_str().unwrap()).unwrap();
    assert_eq!(group_entry["groupname"], names[3]);
    assert_eq!(group_entry["groupdesc"], names[4]);
    still_usable(&mut v1).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM users").await, 7);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM offline_messages").await,
        0
    );
    server.stop().await;
}

async fn repeated_wrong_passwords_are_rate_limited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut setup = server.client().await;
    let id = setup.register("target", "right").await;
    let mut guesser = server.client().await;
    for _ in 0..5 {
        let reply = guesser
            .call(json!({"msgid": 1, "id": id, "password": "guess"}))
            .await;
        assert_eq!(reply["errno"], 1);
    }
    // The sixth attempt within the minute is refused, even with the right password.
    let reply = guesser
        .call(json!({"msgid": 1, "id": id, "password": "right"}))
        .await;
    assert_eq!(reply["msgid"], 2);
    assert_eq!(reply["errno"], 9);
    still_usable(&mut guesser).await;
    // Another connection from the same address is not blocked yet...
    let mut other = server.client().await;
    other.login(id, "right").await;
    other.call(json!({"msgid": 3})).await;
    // ...until the address has failed more than 30 times in the minute.
    for _ in 0..5 {
        let mut conn = server.client().await;
        for _ in 0..5 {
            let reply = conn
                .call(json!({"msgid": 1, "id": id, "password": "guess"}))
                .await;
            assert_eq!(reply["errno"], 1);
        }
    }
    let mut late = server.client().await;
    let reply = late
        .call(json!({"msgid": 1, "id": id, "password": "right"}))
        .await;
    assert_eq!(reply["errno"], 9);
    server.stop().await;
}
