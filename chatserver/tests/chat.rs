//! Chat features end to end over real TCP: register, login, friends,
//! groups, 1:1 and group chat, offline messages, presence. Every scenario
//! runs against SQLite and MariaDB.

mod common;

use std::time::Duration;

use common::{Backend, Client, TestServer};
use serde_json::{json, Value};

on_both_backends!(
    v1_client_round_trip,
    v2_replies_carry_rid_and_lists_are_objects,
    login_errors_and_double_login,
    offline_messages_arrive_oldest_first_then_are_removed,
    group_rules,
    friend_rules,
    disconnect_logs_the_user_out,
    names_are_case_sensitive_and_passwords_hashed,
);

fn parse_inner(value: &Value) -> Value {
    serde_json::from_str(value.as_str().expect("v1 list entries are strings")).unwrap()
}

/// Plays the original client byte for byte: NUL-terminated requests, v1
/// replies with JSON-in-strings, and nothing sent where v1 sent nothing.
async fn v1_client_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut zhang = server.client().await;
    let mut li = server.client().await;
    zhang
        .send_v1(json!({"msgid": 4, "name": "zhang san", "password": "123456"}))
        .await;
    let reg = zhang.recv().await;
    assert_eq!(reg["msgid"], 5);
    assert_eq!(reg["errno"], 0);
    let zhang_id = reg["id"].as_i64().unwrap();
    li.send_v1(json!({"msgid": 4, "name": "li si", "password": "666666"}))
        .await;
    let li_id = li.recv().await["id"].as_i64().unwrap();

    zhang
        .send_v1(json!({"msgid": 1, "id": zhang_id, "password": "123456"}))
        .await;
    let ack = zhang.recv().await;
    assert_eq!(
        ack,
        json!({"msgid": 2, "errno": 0, "id": zhang_id, "name": "zhang san"}),
        "empty lists are left out in v1"
    );

    zhang
        .send_v1(json!({"msgid": 7, "id": zhang_id, "friendid": li_id}))
        .await;
    zhang
        .send_v1(json!({"msgid": 8, "id": zhang_id, "groupname": "ChatChat", "groupdesc": "dev"}))
        .await;
    zhang
        .send_v1(json!({"msgid": 6, "id": zhang_id, "name": "zhang san", "toid": li_id, "msg": "hello li", "time": "2024-05-01 10:00:00"}))
        .await;
    zhang.expect_silence(Duration::from_millis(300)).await;

    li.send_v1(json!({"msgid": 1, "id": li_id, "password": "666666"}))
        .await;
    let ack = li.recv().await;
    assert_eq!(ack["errno"], 0);
    assert_eq!(ack["name"], "li si");
    let friends: Vec<Value> = ack["friends"]
        .as_array()
        .unwrap()
        .iter()
        .map(parse_inner)
        .collect();
    assert_eq!(
        friends,
        vec![json!({"id": zhang_id, "name": "zhang san", "state": "online"})]
    );
    let offline: Vec<Value> = ack["offlinemsg"]
        .as_array()
        .unwrap()
        .iter()
        .map(parse_inner)
        .collect();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["msgid"], 6);
    assert_eq!(offline[0]["id"], zhang_id);
    assert_eq!(offline[0]["name"], "zhang san");
    assert_eq!(offline[0]["toid"], li_id);
    assert_eq!(offline[0]["msg"], "hello li");
    assert_eq!(offline[0]["time"], "2024-05-01 10:00:00");
    assert!(ack.get("groups").is_none(), "li is in no group yet");

    // Join the group (group ids start at 1 in a fresh database).
    li.send_v1(json!({"msgid": 9, "id": li_id, "groupid": 1}))
        .await;
    li.expect_silence(Duration::from_millis(300)).await;
    // Online 1:1 and group chat are pushed in v1 shape.
    li.send_v1(json!({"msgid": 6, "id": li_id, "name": "li si", "toid": zhang_id, "msg": "hi zhang", "time": "t1"}))
        .await;
    let push = zhang.recv().await;
    assert_eq!(push["msgid"], 6);
    assert_eq!(push["msg"], "hi zhang");
    assert_eq!(push["name"], "li si");
    li.send_v1(json!({"msgid": 10, "id": li_id, "name": "li si", "groupid": 1, "msg": "hi all", "time": "t2"}))
        .await;
    let push = zhang.recv().await;
    assert_eq!(push["msgid"], 10);
    assert_eq!(push["groupid"], 1);
    assert_eq!(push["id"], li_id);
    assert_eq!(push["msg"], "hi all");
    li.expect_silence(Duration::from_millis(200)).await;

    // Log out and back in on the same connection; the group is listed with roles.
    li.send_v1(json!({"msgid": 3, "id": li_id})).await;
    li.expect_silence(Duration::from_millis(200)).await;
    li.send_v1(json!({"msgid": 1, "id": li_id, "password": "666666"}))
        .await;
    let ack = li.recv().await;
    assert_eq!(ack["errno"], 0);
    let group = parse_inner(&ack["groups"][0]);
    assert_eq!(group["id"], 1);
    assert_eq!(group["groupname"], "ChatChat");
    assert_eq!(group["groupdesc"], "dev");
    let users: Vec<Value> = group["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(parse_inner)
        .collect();
    assert_eq!(
        users,
        vec![
            json!({"id": zhang_id, "name": "zhang san", "state": "online", "role": "creator"}),
            json!({"id": li_id, "name": "li si", "state": "online", "role": "normal"}),
        ]
    );
    server.stop().await;
}

async fn v2_replies_carry_rid_and_lists_are_objects(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut a, a_id) = Client::user(&server, "alice").await;
    let mut b = server.client().await;
    let b_id = b.register("bob", "pw").await;

    let ack = a.call(json!({"msgid": 7, "friendid": b_id})).await;
    assert_eq!(ack["msgid"], 11);
    assert_eq!(ack["errno"], 0);
    let created = a
        .call(json!({"msgid": 8, "groupname": "team", "groupdesc": "d"}))
        .await;
    assert_eq!(created["errno"], 0);
    let group_id = created["groupid"].as_i64().unwrap();
    let sent = a
        .call(json!({"msgid": 6, "toid": b_id, "msg": "first"}))
        .await;
    let mid = sent["mid"].as_i64().unwrap();
    assert!(mid > 0 && mid < 1 << 53);

    // rid is echoed verbatim, numbers included.
    b.send(json!({"msgid": 12, "v": 2, "rid": 42})).await;
    let pong = b.recv().await;
    assert_eq!(pong["msgid"], 13);
    assert_eq!(pong["rid"], 42);
    assert_eq!(pong["server"], "test-server");
    assert_eq!(pong["load"], 1);

    let ack = b.login(b_id, "pw").await;
    assert_eq!(ack["msgid"], 2);
    assert_eq!(
        ack["friends"],
        json!([{"id": a_id, "name": "alice", "state": "online"}])
    );
    assert_eq!(ack["groups"], json!([]));
    let offline = ack["offlinemsg"].as_array().unwrap();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["msg"], "first");
    assert_eq!(offline[0]["mid"], mid);
    assert!(offline[0]["ts"].as_i64().unwrap() > 1_700_000_000_000);
    // The server filled in its own time, in the documented format.
    let time = offline[0]["time"].as_str().unwrap();
    assert_eq!(time.len(), 19, "{time}");
    assert_eq!(&time[4..5], "-");

    assert_eq!(
        b.call(json!({"msgid": 9, "groupid": group_id})).await["errno"],
        0
    );
    let sent = b
        .call(json!({"msgid": 10, "groupid": group_id, "msg": "group hi"}))
        .await;
    assert_eq!(sent["errno"], 0);
    let push = a.recv().await;
    assert_eq!(push["msgid"], 10);
    assert_eq!(push["mid"], sent["mid"]);
    assert!(
        push.get("rid").is_none(),
        "pushes never carry the sender's rid"
    );

    let bye = b.call(json!({"msgid": 3})).await;
    assert_eq!(bye["errno"], 0);
    server.stop().await;
}

async fn login_errors_and_double_login(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut first = server.client().await;
    let id = first.register("carol", "right").await;

    let wrong = first
        .call(json!({"msgid": 1, "id": id, "password": "wrong"}))
        .await;
    assert_eq!(wrong["msgid"], 2);
    assert_eq!(wrong["errno"], 1);
    assert_eq!(wrong["errmsg"], "incorrect id or password!");
    let missing = first
        .call(json!({"msgid": 1, "id": 999_999, "password": "x"}))
        .await;
    assert_eq!(missing["errno"], 1);

    first.login(id, "right").await;
    let again = first
        .call(json!({"msgid": 1, "id": id, "password": "right"}))
        .await;
    assert_eq!(again["errno"], 2, "LOGIN on a logged-in connection");

    let mut second = server.client().await;
    second
        .send_v1(json!({"msgid": 1, "id": id, "password": "right"}))
        .await;
    let taken = second.recv().await;
    assert_eq!(
        taken,
        json!({"msgid": 2, "errno": 2, "errmsg": "this account is using, input another!"})
    );

    // After LOGOUT the account is free again, on either connection.
    first.send_v1(json!({"msgid": 3, "id": id})).await;
    second.login(id, "right").await;
    server.stop().await;
}

async fn offline_messages_arrive_oldest_first_then_are_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut sender, _) = Client::user(&server, "sender").await;
    let mut receiver = server.client().await;
    let receiver_id = receiver.register("receiver", "pw").await;
    for i in 0..200 {
        sender
            .send(json!({"msgid": 6, "toid": receiver_id, "msg": format!("m{i}")}))
            .await;
    }
    // A v2 round trip after the burst proves all 200 were handled.
    sender.call(json!({"msgid": 12})).await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM offline_messages").await,
        200
    );
    let ack = receiver.login(receiver_id, "pw").await;
    let texts: Vec<&str> = ack["offlinemsg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    // Removed once written; the next login gets none.
    receiver.call(json!({"msgid": 12})).await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM offline_messages").await,
        0
    );
    receiver.call(json!({"msgid": 3})).await;
    let ack = receiver.login(receiver_id, "pw").await;
    assert_eq!(ack["offlinemsg"], json!([]));
    server.stop().await;
}

async fn group_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut owner, owner_id) = Client::user(&server, "owner").await;
    let (mut member, member_id) = Client::user(&server, "member").await;
    let (mut outsider, _) = Client::user(&server, "outsider").await;
    let mut absent = server.client().await;
    let absent_id = absent.register("absent", "pw").await;

    let group = owner
        .call(json!({"msgid": 8, "groupname": "club", "groupdesc": ""}))
        .await["groupid"]
        .as_i64()
        .unwrap();
    let taken = member.call(json!({"msgid": 8, "groupname": "club"})).await;
    assert_eq!(taken["errno"], 3);
    let other_case = member.call(json!({"msgid": 8, "groupname": "Club"})).await;
    assert_eq!(other_case["errno"], 0, "group names are case-sensitive");

    assert_eq!(
        member.call(json!({"msgid": 9, "groupid": group})).await["errno"],
        0
    );
    assert_eq!(
        member.call(json!({"msgid": 9, "groupid": group})).await["errno"],
        0
    );
    assert_eq!(
        owner.call(json!({"msgid": 9, "groupid": group})).await["errno"],
        0
    );
    assert_eq!(absent.login(absent_id, "pw").await["errno"], 0);
    assert_eq!(
        absent.call(json!({"msgid": 9, "groupid": group})).await["errno"],
        0
    );
    absent.call(json!({"msgid": 3})).await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM group_members WHERE group_id = {group}"
            ))
            .await,
        3,
        "joining twice is idempotent and the creator stays creator"
    );
    let missing = member.call(json!({"msgid": 9, "groupid": 424242})).await;
    assert_eq!(missing["errno"], 4);
    let not_member = outsider
        .call(json!({"msgid": 10, "groupid": group, "msg": "let me in"}))
        .await;
    assert_eq!(not_member["errno"], 5);
    let no_group = owner
        .call(json!({"msgid": 10, "groupid": 424242, "msg": "x"}))
        .await;
    assert_eq!(no_group["errno"], 4);

    // The sender gets no copy; online members get a push; offline ones get it at login.
    owner
        .call(json!({"msgid": 10, "groupid": group, "msg": "welcome"}))
        .await;
    let push = member.recv().await;
    assert_eq!(push["msg"], "welcome");
    assert_eq!(push["id"], owner_id);
    owner.expect_silence(Duration::from_millis(200)).await;
    outsider.expect_silence(Duration::from_millis(10)).await;
    let ack = absent.login(absent_id, "pw").await;
    assert_eq!(ack["offlinemsg"][0]["msg"], "welcome");
    let users = &ack["groups"][0]["users"];
    assert_eq!(users[0]["id"], owner_id);
    assert_eq!(users[0]["role"], "creator");
    assert_eq!(users[1]["id"], member_id);
    assert_eq!(users[1]["role"], "normal");
    server.stop().await;
}

async fn friend_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut a, a_id) = Client::user(&server, "a").await;
    let (mut b, b_id) = Client::user(&server, "b").await;
    assert_eq!(
        a.call(json!({"msgid": 7, "friendid": a_id})).await["errno"],
        4
    );
    assert_eq!(
        a.call(json!({"msgid": 7, "friendid": 777_777})).await["errno"],
        4
    );
    assert_eq!(
        a.call(json!({"msgid": 7, "friendid": b_id})).await["errno"],
        0
    );
    assert_eq!(
        a.call(json!({"msgid": 7, "friendid": b_id})).await["errno"],
        0
    );
    assert_eq!(
        b.call(json!({"msgid": 7, "friendid": a_id})).await["errno"],
        0
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM friends").await, 2);
    let missing = a
        .call(json!({"msgid": 6, "toid": 777_777, "msg": "x"}))
        .await;
    assert_eq!(missing["errno"], 4);
    b.call(json!({"msgid": 3})).await;
    let ack = b.login(b_id, "pw").await;
    assert_eq!(
        ack["friends"],
        json!([{"id": a_id, "name": "a", "state": "online"}])
    );
    server.stop().await;
}

async fn disconnect_logs_the_user_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (gone, gone_id) = Client::user(&server, "gone").await;
    let (mut friend, _) = Client::user(&server, "friend").await;
    friend.call(json!({"msgid": 7, "friendid": gone_id})).await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE id = {gone_id} AND state = 'online'"
            ))
            .await,
        1
    );
    drop(gone);
    // The account becomes free: a new connection logs in without errno 2.
    let mut again = server.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ack = again
            .call(json!({"msgid": 1, "id": gone_id, "password": "pw"}))
            .await;
        if ack["errno"] == 0 {
            break;
        }
        assert_eq!(ack["errno"], 2);
        assert!(tokio::time::Instant::now() < deadline, "still logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.call(json!({"msgid": 3})).await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE id = {gone_id} AND state = 'offline'"
            ))
            .await,
        1
    );
    friend.call(json!({"msgid": 3})).await;
    let friend_id = server
        .count("SELECT id FROM users WHERE name = 'friend'")
        .await;
    let ack = friend.login(friend_id, "pw").await;
    assert_eq!(ack["friends"][0]["state"], "offline");
    server.stop().await;
}

async fn names_are_case_sensitive_and_passwords_hashed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut client = server.client().await;
    let upper = client.register("Bob", "secret-pw").await;
    let lower = client.register("bob", "secret-pw").await;
    let spaced = client.register("bob ", "secret-pw").await;
    assert!(upper != lower && lower != spaced);
    let taken = client
        .call(json!({"msgid": 4, "name": "Bob", "password": "x"}))
        .await;
    assert_eq!(taken["msgid"], 5);
    assert_eq!(taken["errno"], 1);
    let pool = server.db().await;
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 3);
    for hash in hashes {
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("secret-pw"));
    }
    server.stop().await;
}
