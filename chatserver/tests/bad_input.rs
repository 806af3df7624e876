//! Hostile and malformed input: each gets the reply docs/protocol.md names, the
//! connection stays usable (except for an oversized frame), other users are
//! unaffected and no stored row changes.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::prelude::*;
use testkit::server::{test_config, ChatServer, Storage};

testkit::on_both_backends!(
    malformed_frames_get_errno_6_and_change_nothing,
    requests_before_login_or_for_another_id_get_errno_7,
    oversized_frame_gets_errno_8_and_closes_only_that_connection,
    thousands_of_frames_in_one_write,
    frame_split_across_many_writes_with_pauses,
    hostile_text_round_trips_byte_for_byte,
    repeated_wrong_passwords_are_rate_limited,
);

/// Row counts of every table: compared before and after an attack.
async fn snapshot(server: &ChatServer) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "users",
        "friends",
        "chat_groups",
        "group_members",
        "messages",
        "inbox",
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
    async fn new(server: &ChatServer) -> Self {
        let (a, _) = server.user("bystander-a").await;
        let (b, b_id) = server.user("bystander-b").await;
        Bystanders { a, b, b_id }
    }

    /// Still chatting, and the stored rows are as `before`; stops the server.
    async fn unharmed(mut self, server: ChatServer, before: Vec<i64>) {
        assert_eq!(snapshot(&server).await, before);
        self.still_chatting().await;
        server.stop().await;
    }

    async fn still_chatting(&mut self) {
        self.a.chat(self.b_id, "still here").await;
        assert_eq!(self.b.recv_chat().await.msg, "still here");
    }
}

/// Sends `frame` as it is; the reply must be of type `reply_msgid` with
/// `errno` and a message. Returns the reply as JSON.
async fn expect_error(client: &mut Client, frame: &[u8], reply_msgid: i64, errno: i64) -> Value {
    client.send_raw(frame).await;
    let reply = client.recv_json().await;
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
    client.ping().await;
}

async fn malformed_frames_get_errno_6_and_change_nothing(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let bystanders = Bystanders::new(&server).await;
    let (mut attacker, _) = server.user("attacker").await;
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
    bystanders.unharmed(server, before).await;
}

async fn requests_before_login_or_for_another_id_get_errno_7(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let mut bystanders = Bystanders::new(&server).await;
    let b_id = bystanders.b_id;
    let mut anonymous = server.client().await;
    for request in [
        req::logout(),
        req::chat(b_id, "spoof"),
        req::add_friend(b_id),
        req::create_group("g", ""),
        req::join_group(1),
        req::group_chat(1, "m"),
    ] {
        anonymous.send_v1(&request).await;
        match anonymous.recv_reply().await {
            Reply::Error(failure) => {
                assert_eq!(failure.request, None, "an ACK: {failure:?}");
                assert_eq!(failure.errno, Errno::NotAuthorized);
            }
            other => panic!("{request:?}: {other:?}"),
        }
    }
    let (mut mallory, _) = server.user("mallory").await;
    let before = snapshot(&server).await;
    // Claiming to be someone else: refused, and nothing is sent in their name.
    for request in [
        req::chat(b_id, "spoof"),
        req::add_friend(b_id),
        req::group_chat(1, "m"),
        req::logout(),
    ] {
        let reply = mallory.call(&req::claim(request, b_id)).await;
        assert_eq!(reply.errno(), Errno::NotAuthorized, "{reply:?}");
    }
    assert_eq!(
        snapshot(&server).await,
        before,
        "refused requests stored nothing"
    );
    // The name in a chat is the sender's registered one, whatever was sent.
    mallory
        .send_raw(&json_frame(
            &json!({"msgid": 6, "v": 2, "rid": "n", "toid": b_id, "name": "bystander-a", "msg": "hi"}),
            b'\n',
        ))
        .await;
    assert_eq!(mallory.recv_reply().await.errno(), Errno::Ok);
    let push = bystanders.b.recv_chat().await;
    assert_eq!(push.name, "mallory");
    still_usable(&mut anonymous).await;
    let before = snapshot(&server).await;
    bystanders.unharmed(server, before).await;
}

async fn oversized_frame_gets_errno_8_and_closes_only_that_connection(storage: Storage) {
    let mut config = test_config(storage);
    config.max_frame = 1024;
    let server = ChatServer::start_with(config).await;
    let bystanders = Bystanders::new(&server).await;
    let (mut big, _) = server.user("big").await;
    let (mut exact, _) = server.user("exact").await;
    let before = snapshot(&server).await;
    // No terminator needed: the server refuses as soon as the limit is passed.
    let frame = format!("{{\"msgid\":6,\"toid\":1,\"msg\":\"{}", "x".repeat(2000));
    big.send_raw(frame.as_bytes()).await;
    let frames = big.expect_closed(Duration::from_secs(5)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    match &frames[0].frame {
        ServerFrame::Reply(Reply::Error(failure)) => {
            assert_eq!(failure.request, None, "an ACK");
            assert_eq!(failure.errno, Errno::FrameTooLarge);
        }
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is fine.
    let prefix = r#"{"msgid":12,"pad":""#;
    let padded = format!("{prefix}{}\"}}\n", "p".repeat(1024 - prefix.len() - 2));
    assert_eq!(padded.len(), 1025);
    exact.send_raw(padded.as_bytes()).await;
    exact.recv_reply().await.pong();
    bystanders.unharmed(server, before).await;
}

async fn thousands_of_frames_in_one_write(storage: Storage) {
    let server = ChatServer::start(storage).await;
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
        assert!(
            matches!(pong.frame, ServerFrame::Reply(Reply::Pong(_))),
            "{pong:?}"
        );
        assert_eq!(
            pong.rid,
            Some(Value::from(i)),
            "replies come in request order"
        );
    }
    bystanders.still_chatting().await;
    server.stop().await;
}

async fn frame_split_across_many_writes_with_pauses(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut sender, _) = server.user("slow-typist").await;
    let (mut receiver, receiver_id) = server.user("reader").await;
    let frame = req::chat(receiver_id, "split 分开 😀").encode(Version::V2, Some(&json!("s")));
    for chunk in frame.chunks(3) {
        sender.send_raw(chunk).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ack = sender.recv().await;
    assert_eq!(ack.rid, Some(json!("s")));
    match ack.frame {
        ServerFrame::Reply(reply) => assert_eq!(reply.errno(), Errno::Ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.recv_chat().await.msg, "split 分开 😀");
    server.stop().await;
}

async fn hostile_text_round_trips_byte_for_byte(storage: Storage) {
    let server = ChatServer::start(storage).await;
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
        assert_eq!(ack.name, name);
        clients.push((client, id));
    }
    let (mut sender, _) = clients.remove(0);
    let (mut receiver, receiver_id) = clients.remove(0);
    let group = sender.create_group(names[3], names[4]).await;
    receiver.join_group(group).await;
    let mut offline_user = server.client().await;
    let offline_user_id = offline_user.register("later", "pw").await;
    let mut last_seq = 0;
    for text in &messages {
        sender.call_ok(&req::chat_at(receiver_id, text, text)).await;
        let push = receiver.recv_chat().await;
        assert_eq!(&push.msg, text);
        assert_eq!(&push.time, text);
        assert_eq!(push.name, names[0]);
        sender.group_chat(group, text).await;
        let group_push = receiver.recv_chat().await;
        assert_eq!(&group_push.msg, text);
        last_seq = group_push.seq.expect("v2 pushes carry seq");
        sender.chat(offline_user_id, text).await;
    }
    let ack = offline_user.login(offline_user_id, "pw").await;
    let stored: Vec<&str> = ack.offline.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(
        stored,
        messages.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The same through v1's JSON-in-strings.
    receiver.delivered(last_seq).await;
    receiver.logout().await;
    sender.chat(receiver_id, &messages[2]).await;
    let mut v1 = server.client().await;
    v1.send_v1(&req::login(receiver_id, "pw")).await;
    let ack = v1.recv_json().await;
    let inner: Value = serde_json::from_str(ack["offlinemsg"][0].as_str().unwrap()).unwrap();
    assert_eq!(inner["msg"].as_str().unwrap(), messages[2]);
    let group_entry: Value = serde_json::from_str(ack["groups"][0].as_str().unwrap()).unwrap();
    assert_eq!(group_entry["groupname"], names[3]);
    assert_eq!(group_entry["groupdesc"], names[4]);
    still_usable(&mut v1).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM users").await, 7);
    server.count_becomes("SELECT COUNT(*) FROM inbox", 0).await;
    server.stop().await;
}

async fn repeated_wrong_passwords_are_rate_limited(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let mut setup = server.client().await;
    let id = setup.register("target", "right").await;
    let mut others = Vec::new();
    for i in 0..6 {
        others.push(setup.register(&format!("other{i}"), "pw").await);
    }
    let mut guesser = server.client().await;
    for _ in 0..5 {
        let reply = guesser.call(&req::login(id, "guess")).await;
        assert_eq!(reply.errno(), Errno::BadCredentials);
    }
    // The sixth attempt within the minute is refused, even with the right password.
    let reply = guesser.call(&req::login(id, "right")).await;
    match reply {
        Reply::Error(failure) => {
            assert_eq!(failure.request, Some(MsgId::Login), "a LOGIN_ACK");
            assert_eq!(failure.errno, Errno::RateLimited);
        }
        other => panic!("{other:?}"),
    }
    still_usable(&mut guesser).await;
    // Another connection from the same address, at the same account, too...
    let mut again = server.client().await;
    assert_eq!(
        again.call(&req::login(id, "right")).await.errno(),
        Errno::RateLimited
    );
    // ...but the address may still log into other accounts...
    let mut other = server.client().await;
    other.login(others[0], "pw").await;
    other.logout().await;
    // ...until it has failed 30 times in the minute, whatever the accounts.
    for &account in &others[1..] {
        let mut conn = server.client().await;
        for _ in 0..5 {
            let reply = conn.call(&req::login(account, "guess")).await;
            assert_eq!(reply.errno(), Errno::BadCredentials);
        }
    }
    let mut late = server.client().await;
    let reply = late.call(&req::login(others[0], "pw")).await;
    assert_eq!(reply.errno(), Errno::RateLimited);
    // Another address is not, at any account.
    let mut elsewhere = Client::connect_from(server.addr, [127, 0, 0, 2].into()).await;
    elsewhere.login(id, "right").await;
    server.stop().await;
}
