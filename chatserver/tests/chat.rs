//! Chat features end to end over real TCP: register, login, friends,
//! groups, 1:1 and group chat, offline messages, presence. Every scenario
//! runs against SQLite and MariaDB.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::prelude::*;
use testkit::server::{ChatServer, Storage};

testkit::on_both_backends!(
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

/// A v1 list: each entry JSON text, read back.
fn inner_list(list: &Value) -> Vec<Value> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(parse_inner)
        .collect()
}

fn registered(reply: Reply) -> i64 {
    match reply {
        Reply::RegisterOk { id } => id,
        other => panic!("expected a successful REGISTER_ACK, got {other:?}"),
    }
}

/// Plays the original client byte for byte: NUL-terminated requests, v1
/// replies with JSON-in-strings, pushes with exactly the original fields,
/// and nothing sent where v1 sent nothing.
async fn v1_client_round_trip(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let mut zhang = server.client().await;
    let mut li = server.client().await;
    zhang.send_v1(&req::register("zhang san", "123456")).await;
    let zhang_id = registered(zhang.recv_reply().await);
    li.send_v1(&req::register("li si", "666666")).await;
    let li_id = registered(li.recv_reply().await);

    zhang.send_v1(&req::login(zhang_id, "123456")).await;
    let ack = zhang.recv_json().await;
    assert_eq!(
        ack,
        json!({"msgid": 2, "errno": 0, "id": zhang_id, "name": "zhang san"}),
        "empty lists are left out in v1"
    );

    zhang
        .send_v1(&req::claim(req::add_friend(li_id), zhang_id))
        .await;
    zhang
        .send_v1(&req::claim(req::create_group("ChatChat", "dev"), zhang_id))
        .await;
    // The original client names itself in a chat; the server ignores it.
    zhang
        .send_raw(&json_frame(
            &json!({"msgid": 6, "id": zhang_id, "name": "zhang san", "toid": li_id, "msg": "hello li", "time": "2024-05-01 10:00:00"}),
            0,
        ))
        .await;
    zhang.expect_silence(Duration::from_millis(300)).await;

    li.send_v1(&req::login(li_id, "666666")).await;
    let ack = li.recv_json().await;
    assert_eq!(ack["errno"], 0);
    assert_eq!(ack["name"], "li si");
    let friends: Vec<Value> = inner_list(&ack["friends"]);
    assert_eq!(
        friends,
        vec![json!({"id": zhang_id, "name": "zhang san", "state": "online"})]
    );
    let offline: Vec<Value> = inner_list(&ack["offlinemsg"]);
    assert_eq!(
        offline,
        vec![
            json!({"msgid": 6, "id": zhang_id, "name": "zhang san", "toid": li_id, "msg": "hello li", "time": "2024-05-01 10:00:00"})
        ],
        "exactly the original fields"
    );
    assert!(ack.get("groups").is_none(), "li is in no group yet");

    // Join the group (group ids start at 1 in a fresh database).
    li.send_v1(&req::claim(req::join_group(1), li_id)).await;
    li.expect_silence(Duration::from_millis(300)).await;
    // Online 1:1 and group chat are pushed with exactly the original fields.
    li.send_raw(&json_frame(
        &json!({"msgid": 6, "id": li_id, "name": "li si", "toid": zhang_id, "msg": "hi zhang", "time": "t1"}),
        0,
    ))
    .await;
    assert_eq!(
        zhang.recv_json().await,
        json!({"msgid": 6, "id": li_id, "name": "li si", "toid": zhang_id, "msg": "hi zhang", "time": "t1"})
    );
    li.send_raw(&json_frame(
        &json!({"msgid": 10, "id": li_id, "name": "li si", "groupid": 1, "msg": "hi all", "time": "t2"}),
        0,
    ))
    .await;
    assert_eq!(
        zhang.recv_json().await,
        json!({"msgid": 10, "id": li_id, "name": "li si", "groupid": 1, "msg": "hi all", "time": "t2"})
    );
    li.expect_silence(Duration::from_millis(200)).await;

    // Log out and back in on the same connection; the group is listed with roles.
    li.send_v1(&req::claim(req::logout(), li_id)).await;
    li.expect_silence(Duration::from_millis(200)).await;
    li.send_v1(&req::login(li_id, "666666")).await;
    let ack = li.recv_json().await;
    assert_eq!(ack["errno"], 0);
    let group = parse_inner(&ack["groups"][0]);
    assert_eq!(group["id"], 1);
    assert_eq!(group["groupname"], "ChatChat");
    assert_eq!(group["groupdesc"], "dev");
    let users: Vec<Value> = inner_list(&group["users"]);
    assert_eq!(
        users,
        vec![
            json!({"id": zhang_id, "name": "zhang san", "state": "online", "role": "creator"}),
            json!({"id": li_id, "name": "li si", "state": "online", "role": "normal"}),
        ]
    );
    server.stop().await;
}

async fn v2_replies_carry_rid_and_lists_are_objects(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut a, a_id) = server.user("alice").await;
    let mut b = server.client().await;
    let b_id = b.register("bob", "pw").await;

    assert_eq!(a.call(&req::add_friend(b_id)).await, Reply::DONE);
    let group_id = a.create_group("team", "d").await;
    let mid = a.chat(b_id, "first").await.expect("v2 ACK carries the mid");
    assert!(mid > 0 && mid < 1 << 53);

    // rid is echoed verbatim, numbers included.
    b.send_with_rid(&req::ping(), 42).await;
    let pong = b.recv().await;
    assert_eq!(pong.rid, Some(json!(42)));
    assert_eq!(
        pong.frame,
        ServerFrame::Reply(Reply::Pong(protocol::Pong {
            server: "test-server".into(),
            load: 1,
            ready: true,
        }))
    );

    // The wire shape of a v2 LOGIN_ACK: every list, as objects.
    b.send_with_rid(&req::login(b_id, "pw"), "login").await;
    let ack = b.recv_json().await;
    assert_eq!(ack["rid"], "login");
    assert_eq!(ack["msgid"], 2);
    assert_eq!(
        ack["friends"],
        json!([{"id": a_id, "name": "alice", "state": "online"}])
    );
    assert_eq!(ack["groups"], json!([]));
    // v2: `offlinemsg` stays empty; the inbox follows as pushes with `seq`,
    // and the ACK carries the newest seq and a token.
    assert_eq!(ack["offlinemsg"], json!([]));
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["token"].as_str().map(str::len), Some(64));
    let stored = b.recv_json().await;
    assert_eq!(stored["msgid"], 6);
    assert_eq!(stored["msg"], "first");
    assert_eq!(stored["mid"], mid);
    assert_eq!(stored["seq"], 1);
    assert!(stored["ts"].as_i64().unwrap() > 1_700_000_000_000);
    // The server filled in its own time, in the documented format.
    let time = stored["time"].as_str().unwrap();
    assert_eq!(time.len(), 19, "{time}");
    assert_eq!(&time[4..5], "-");

    b.join_group(group_id).await;
    let mid = b.group_chat(group_id, "group hi").await;
    let push = a.recv().await;
    assert!(push.rid.is_none(), "pushes never carry the sender's rid");
    match push.frame {
        ServerFrame::Chat(chat) => {
            assert_eq!(chat.target, ChatTarget::Group(group_id));
            assert_eq!(chat.mid, mid);
        }
        other => panic!("expected a group chat, got {other:?}"),
    }

    b.logout().await;
    server.stop().await;
}

async fn login_errors_and_double_login(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let mut first = server.client().await;
    let id = first.register("carol", "right").await;

    let wrong = first.call(&req::login(id, "wrong")).await;
    assert_eq!(
        wrong,
        Reply::error(Some(MsgId::Login), Errno::BadCredentials),
        "LOGIN_ACK errno 1 with the original wording"
    );
    assert_eq!(wrong.errmsg(), "incorrect id or password!");
    let missing = first.call(&req::login(999_999, "x")).await;
    assert_eq!(missing.errno(), Errno::BadCredentials);

    first.login(id, "right").await;
    let again = first.call(&req::login(id, "right")).await;
    assert_eq!(
        again.errno(),
        Errno::AlreadyLoggedIn,
        "LOGIN on a logged-in connection"
    );

    let mut second = server.client().await;
    second.send_v1(&req::login(id, "right")).await;
    assert_eq!(
        second.recv_json().await,
        json!({"msgid": 2, "errno": 2, "errmsg": "this account is using, input another!"})
    );

    // After LOGOUT the account is free again, on either connection. The
    // first connection speaks v2 by now: wait for the ACK of its LOGOUT
    // rather than race the second connection's LOGIN against it.
    let logout = first.call(&req::claim(req::logout(), id)).await;
    assert_eq!(logout.errno(), Errno::Ok);
    second.login(id, "right").await;
    server.stop().await;
}

async fn offline_messages_arrive_oldest_first_then_are_removed(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut sender, _) = server.user("sender").await;
    let mut receiver = server.client().await;
    let receiver_id = receiver.register("receiver", "pw").await;
    for i in 0..200 {
        sender
            .send_v2(&req::chat(receiver_id, &format!("m{i}")))
            .await;
    }
    // A v2 round trip after the burst proves all 200 were handled.
    sender.ping().await;
    assert_eq!(server.count("SELECT COUNT(*) FROM inbox").await, 200);
    let ack = receiver.login(receiver_id, "pw").await;
    let texts: Vec<&str> = ack.offline.iter().map(|m| m.msg.as_str()).collect();
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    // Removed once confirmed (DELIVERED); the next login gets none.
    server.count_becomes("SELECT COUNT(*) FROM inbox", 0).await;
    receiver.logout().await;
    let ack = receiver.login(receiver_id, "pw").await;
    assert!(ack.offline.is_empty(), "{:?}", ack.offline);
    server.stop().await;
}

async fn group_rules(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut owner, owner_id) = server.user("owner").await;
    let (mut member, member_id) = server.user("member").await;
    let (mut outsider, _) = server.user("outsider").await;
    let mut absent = server.client().await;
    let absent_id = absent.register("absent", "pw").await;

    let group = owner.create_group("club", "").await;
    let taken = member.call(&req::create_group("club", "")).await;
    assert_eq!(taken.errno(), Errno::GroupNameTaken);
    let other_case = member.call(&req::create_group("Club", "")).await;
    assert_eq!(
        other_case.errno(),
        Errno::Ok,
        "group names are case-sensitive"
    );

    member.join_group(group).await;
    member.join_group(group).await;
    owner.join_group(group).await;
    absent.login(absent_id, "pw").await;
    absent.join_group(group).await;
    absent.logout().await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM group_members WHERE group_id = {group}"
            ))
            .await,
        3,
        "joining twice is idempotent and the creator stays creator"
    );
    let missing = member.call(&req::join_group(424242)).await;
    assert_eq!(missing.errno(), Errno::NotFound);
    let not_member = outsider.call(&req::group_chat(group, "let me in")).await;
    assert_eq!(not_member.errno(), Errno::NotMember);
    let no_group = owner.call(&req::group_chat(424242, "x")).await;
    assert_eq!(no_group.errno(), Errno::NotFound);

    // The sender gets no copy; online members get a push; offline ones get it at login.
    owner.group_chat(group, "welcome").await;
    let push = member.recv_chat().await;
    assert_eq!(push.msg, "welcome");
    assert_eq!(push.from, owner_id);
    owner.expect_silence(Duration::from_millis(200)).await;
    outsider.expect_silence(Duration::from_millis(10)).await;
    let ack = absent.login(absent_id, "pw").await;
    assert_eq!(ack.offline[0].msg, "welcome");
    let users = &ack.groups[0].users;
    assert_eq!((users[0].id, users[0].role), (owner_id, Role::Creator));
    assert_eq!((users[1].id, users[1].role), (member_id, Role::Normal));
    server.stop().await;
}

async fn friend_rules(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut a, a_id) = server.user("a").await;
    let (mut b, b_id) = server.user("b").await;
    assert_eq!(
        a.call(&req::add_friend(a_id)).await.errno(),
        Errno::NotFound
    );
    assert_eq!(
        a.call(&req::add_friend(777_777)).await.errno(),
        Errno::NotFound
    );
    a.add_friend(b_id).await;
    a.add_friend(b_id).await;
    b.add_friend(a_id).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM friends").await, 2);
    let missing = a.call(&req::chat(777_777, "x")).await;
    assert_eq!(missing.errno(), Errno::NotFound);
    b.logout().await;
    let ack = b.login(b_id, "pw").await;
    assert_eq!(
        ack.friends,
        vec![Friend {
            id: a_id,
            name: "a".into(),
            state: Presence::Online
        }]
    );
    server.stop().await;
}

async fn disconnect_logs_the_user_out(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (gone, gone_id) = server.user("gone").await;
    let (mut friend, friend_id) = server.user("friend").await;
    friend.add_friend(gone_id).await;
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
    let deadline = Deadline::after(Duration::from_secs(5));
    loop {
        let reply = again.call(&req::login(gone_id, "pw")).await;
        if reply.errno() == Errno::Ok {
            break;
        }
        assert_eq!(reply.errno(), Errno::AlreadyLoggedIn);
        deadline.check("still logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.logout().await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM users WHERE id = {gone_id} AND state = 'offline'"
            ))
            .await,
        1
    );
    friend.logout().await;
    let ack = friend.login(friend_id, "pw").await;
    assert_eq!(ack.friends[0].state, Presence::Offline);
    server.stop().await;
}

async fn names_are_case_sensitive_and_passwords_hashed(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let mut client = server.client().await;
    let upper = client.register("Bob", "secret-pw").await;
    let lower = client.register("bob", "secret-pw").await;
    let spaced = client.register("bob ", "secret-pw").await;
    assert!(upper != lower && lower != spaced);
    let taken = client.call(&req::register("Bob", "x")).await;
    match taken {
        Reply::Error(failure) => {
            assert_eq!(failure.request, Some(MsgId::Register), "a REGISTER_ACK");
            assert_eq!(failure.errno, Errno::BadCredentials);
        }
        other => panic!("{other:?}"),
    }
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
