//! The v2 delivery contract on one server, on both storage engines:
//! idempotent sends, bodies stored once, inbox limits, DELIVERED, tokens,
//! HISTORY and retention, asserted on the wire and in the database.

use std::time::Duration;

use protocol::{Credential, Delivered, History, Login};
use serde_json::json;
use testkit::prelude::*;
use testkit::server::{test_config, ChatServer, Storage};

testkit::on_both_backends!(
    a_repeated_cid_is_stored_and_pushed_once,
    a_group_message_is_stored_once_for_all_members,
    a_full_inbox_refuses_direct_messages_and_skips_group_members,
    delivered_moves_the_cursor_and_cannot_pass_what_was_sent,
    tokens_log_in_without_password_until_revoked_or_expired,
    history_pages_back_newest_first_for_members_only,
    retention_purges_old_messages_and_their_inbox_rows,
);

fn token_login(id: i64, token: &str) -> Request {
    Request::Login(Login {
        id,
        credential: Credential::Token(token.into()),
        since: None,
    })
}

async fn a_repeated_cid_is_stored_and_pushed_once(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut alice, _) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let first = alice
        .call_ok(&req::chat_with_cid(bob_id, "once", "c-1"))
        .await;
    let again = alice
        .call_ok(&req::chat_with_cid(bob_id, "once", "c-1"))
        .await;
    assert_eq!(first.mid(), again.mid(), "the first ACK's mid");
    let Reply::Done(first_ack) = &first else {
        panic!("{first:?}")
    };
    let Reply::Done(again_ack) = &again else {
        panic!("{again:?}")
    };
    assert_eq!(first_ack.ts, again_ack.ts);
    assert!(first_ack.ts.is_some());
    assert_eq!(bob.recv_chat().await.msg, "once");
    bob.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM messages").await, 1);
    // Another cid is another message; another sender may reuse the cid.
    alice
        .call_ok(&req::chat_with_cid(bob_id, "twice", "c-2"))
        .await;
    assert_eq!(bob.recv_chat().await.msg, "twice");
    let (mut carol, _) = server.user("carol").await;
    carol
        .call_ok(&req::chat_with_cid(bob_id, "carol's", "c-1"))
        .await;
    assert_eq!(bob.recv_chat().await.msg, "carol's");
    // A cid longer than 64 bytes is refused.
    let refused = alice
        .call(&req::chat_with_cid(bob_id, "x", &"c".repeat(65)))
        .await;
    assert_eq!(refused.errno(), Errno::BadRequest);
    server.stop().await;
}

async fn a_group_message_is_stored_once_for_all_members(storage: Storage) {
    const MEMBERS: usize = 6;
    let server = ChatServer::start(storage).await;
    let (mut owner, _) = server.user("owner").await;
    let group = owner.create_group("g", "").await;
    let mut members = Vec::new();
    for i in 0..MEMBERS - 1 {
        let mut client = server.client().await;
        let id = client.register(&format!("m{i}"), "pw").await;
        client.login(id, "pw").await;
        client.join_group(group).await;
        client.logout().await;
        members.push(id);
    }
    let body = "b".repeat(10_000);
    owner.group_chat(group, &body).await;
    assert_eq!(server.count("SELECT COUNT(*) FROM messages").await, 1);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM inbox").await,
        MEMBERS as i64 - 1,
        "one small row per receiver"
    );
    let stored_bytes = server
        .count("SELECT CAST(SUM(LENGTH(body)) AS SIGNED) FROM messages")
        .await;
    assert!(stored_bytes < 11_000, "the body once: {stored_bytes} bytes");
    let mut member = server.client().await;
    let ack = member.login(members[0], "pw").await;
    assert_eq!(ack.offline.len(), 1);
    assert_eq!(ack.offline[0].msg, body);
    server.stop().await;
}

async fn a_full_inbox_refuses_direct_messages_and_skips_group_members(storage: Storage) {
    let mut config = test_config(storage);
    config.inbox_limit = 3;
    let server = ChatServer::start_with(config).await;
    let (mut sender, _) = server.user("sender").await;
    let mut away = server.client().await;
    let away_id = away.register("away", "pw").await;
    let (mut present, _) = server.user("present").await;
    let group = sender.create_group("g", "").await;
    present.join_group(group).await;
    away.login(away_id, "pw").await;
    away.join_group(group).await;
    away.logout().await;

    for i in 0..3 {
        sender.chat(away_id, &i.to_string()).await;
    }
    let refused = sender.call(&req::chat(away_id, "3")).await;
    assert_eq!(refused.errno(), Errno::RateLimited, "{refused:?}");
    assert_eq!(server.count("SELECT COUNT(*) FROM messages").await, 3);
    // A group message reaches the members with room, not the full inbox.
    sender.group_chat(group, "to the group").await;
    assert_eq!(present.recv_chat().await.msg, "to the group");
    assert_eq!(server.count("SELECT COUNT(*) FROM messages").await, 4);
    assert_eq!(server.count("SELECT COUNT(*) FROM inbox").await, 4);

    // Reading the inbox (and confirming it) makes room again.
    let ack = away.login(away_id, "pw").await;
    let texts: Vec<&str> = ack.offline.iter().map(|c| c.msg.as_str()).collect();
    assert_eq!(texts, ["0", "1", "2"]);
    away.logout().await;
    sender.chat(away_id, "room again").await;
    server.stop().await;
}

async fn delivered_moves_the_cursor_and_cannot_pass_what_was_sent(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut sender, _) = server.user("sender").await;
    let (mut receiver, receiver_id) = server.user("receiver").await;
    for i in 0..5 {
        sender.chat(receiver_id, &i.to_string()).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(receiver.recv_chat().await.seq.unwrap());
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    // Above what was sent: errno 6, and nothing moves.
    receiver
        .send_with_rid(&Request::Delivered(Delivered { seq: 6 }), "d")
        .await;
    let refused = receiver.recv().await;
    assert_eq!(refused.rid, Some(json!("d")));
    assert!(
        matches!(refused.frame, ServerFrame::Reply(Reply::Error(ref f)) if f.errno == Errno::BadRequest),
        "{refused:?}"
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM inbox").await, 5);
    // Confirming 3 removes rows 1-3; a lower seq afterwards is ignored.
    receiver.delivered(3).await;
    receiver.delivered(1).await;
    receiver.ping().await;
    server.count_becomes("SELECT COUNT(*) FROM inbox", 2).await;
    assert_eq!(
        server
            .count("SELECT delivered_seq FROM inboxes WHERE user_id = 2")
            .await,
        3
    );
    // A login without `since` resumes after the cursor.
    drop(receiver);
    let mut again = server.client().await;
    let ack = wait_login(&mut again, &req::login(receiver_id, "pw")).await;
    assert_eq!(ack.seq, Some(5));
    assert!(ack.offline.is_empty(), "v2: the inbox follows as pushes");
    assert_eq!(again.recv_chat().await.seq, Some(4));
    assert_eq!(again.recv_chat().await.seq, Some(5));
    again.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}

/// `login`, retried while the previous connection's end is not yet noticed.
async fn wait_login(client: &mut Client, login: &Request) -> LoginAck {
    let deadline = Deadline::after(WAIT);
    loop {
        match client.call(login).await {
            Reply::LoginOk(ack) => return *ack,
            Reply::Error(f) if f.errno == Errno::AlreadyLoggedIn => {
                deadline.check("old login never ended");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn tokens_log_in_without_password_until_revoked_or_expired(storage: Storage) {
    let mut config = test_config(storage);
    config.token_ttl = Duration::from_secs(2);
    let server = ChatServer::start_with(config).await;
    let mut alice = server.client().await;
    let alice_id = alice.register("alice", "pw").await;
    let ack = alice.login(alice_id, "pw").await;
    let token = ack.token.expect("v2 LOGIN_ACK carries a token");
    assert_eq!(
        server.count("SELECT COUNT(*) FROM tokens").await,
        1,
        "stored"
    );
    let pool = server.db().await;
    let stored: String = sqlx::query_scalar("SELECT hash FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(stored, token, "stored only as a hash");
    drop(alice);

    // The token logs in (the same token comes back); a wrong one, or the
    // right one for another id, is errno 1.
    let mut again = server.client().await;
    let bob_id = again.register("bob", "pw").await;
    for (id, token) in [(alice_id, "0".repeat(64)), (bob_id, token.clone())] {
        let refused = again.call(&token_login(id, &token)).await;
        assert_eq!(refused.errno(), Errno::BadCredentials, "{refused:?}");
    }
    let ack = wait_login(&mut again, &token_login(alice_id, &token)).await;
    assert_eq!(ack.token.as_deref(), Some(token.as_str()));
    // LOGOUT revokes it.
    again.logout().await;
    let refused = again.call(&token_login(alice_id, &token)).await;
    assert_eq!(refused.errno(), Errno::BadCredentials);
    assert_eq!(server.count("SELECT COUNT(*) FROM tokens").await, 0);

    // A token past its lifetime is refused.
    let ack = again.login(alice_id, "pw").await;
    let short_lived = ack.token.unwrap();
    drop(again);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut late = server.client().await;
    let refused = late.call(&token_login(alice_id, &short_lived)).await;
    assert_eq!(refused.errno(), Errno::BadCredentials);
    pool.close().await;
    server.stop().await;
}

async fn history_pages_back_newest_first_for_members_only(storage: Storage) {
    let server = ChatServer::start(storage).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    let (mut carol, _) = server.user("carol").await;
    for i in 0..5 {
        if i % 2 == 0 {
            alice.chat(bob_id, &format!("m{i}")).await;
        } else {
            bob.chat(alice_id, &format!("m{i}")).await;
        }
    }
    carol.chat(bob_id, "not in alice's history").await;
    let page = |of, before, limit| Request::History(History { of, before, limit });
    let texts = |reply: &Reply| -> (Vec<String>, bool) {
        match reply {
            Reply::History(page) => (
                page.messages.iter().map(|c| c.msg.clone()).collect(),
                page.more,
            ),
            other => panic!("{other:?}"),
        }
    };
    let first = alice
        .call_ok(&page(ChatTarget::User(bob_id), None, 2))
        .await;
    assert_eq!(texts(&first), (vec!["m4".into(), "m3".into()], true));
    let Reply::History(first_page) = &first else {
        unreachable!()
    };
    let oldest = first_page.messages.last().unwrap().mid;
    let next = alice
        .call_ok(&page(ChatTarget::User(bob_id), oldest, 10))
        .await;
    assert_eq!(
        texts(&next),
        (vec!["m2".into(), "m1".into(), "m0".into()], false)
    );
    // The same conversation from the other side.
    let from_bob = bob
        .call_ok(&page(ChatTarget::User(alice_id), None, 50))
        .await;
    assert_eq!(texts(&from_bob).0.len(), 5);

    let group = alice.create_group("g", "").await;
    alice.group_chat(group, "g0").await;
    let refused = carol.call(&page(ChatTarget::Group(group), None, 50)).await;
    assert_eq!(refused.errno(), Errno::NotMember);
    let group_page = alice
        .call_ok(&page(ChatTarget::Group(group), None, 50))
        .await;
    assert_eq!(texts(&group_page), (vec!["g0".into()], false));
    let missing = alice.call(&page(ChatTarget::User(999_999), None, 50)).await;
    assert_eq!(missing.errno(), Errno::NotFound);
    server.stop().await;
}

async fn retention_purges_old_messages_and_their_inbox_rows(storage: Storage) {
    let config = test_config(storage);
    let server = ChatServer::start_with(config.clone()).await;
    let (mut alice, _) = server.user("alice").await;
    let mut bob = server.client().await;
    let bob_id = bob.register("bob", "pw").await;
    let recent_mid = alice
        .chat(bob_id, "recent")
        .await
        .expect("v2 ACKs carry the mid");
    drop((alice, bob));
    let pool = server.db().await;
    server.stop().await;
    // Alice confirmed an ancient message (seq 10) whose row the MySQL
    // sweeper never reached (a crash), and has one pending (seq 11): the
    // purge removes the first row without counting it out a second time.
    for statement in [
        "INSERT INTO messages (mid, sender_id, conversation, body) VALUES (2, 2, 'u:1:2', '{}')".to_string(),
        format!("INSERT INTO inbox (user_id, seq, mid, size) VALUES (1, 10, 2, 80), (1, 11, {recent_mid}, 80)"),
        "DELETE FROM inboxes WHERE user_id = 1".to_string(),
        "INSERT INTO inboxes (user_id, last_seq, delivered_seq, pending_count, pending_bytes) VALUES (1, 11, 10, 1, 80)".to_string(),
    ] {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    // A message from long ago (mid 1 is from 2024), still undelivered.
    sqlx::query(
        "INSERT INTO messages (mid, sender_id, conversation, body) VALUES (1, 1, 'u:1:2', '{\"msgid\":6,\"id\":1,\"name\":\"alice\",\"toid\":2,\"msg\":\"ancient\",\"time\":\"t\",\"mid\":1}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO inbox (user_id, seq, mid, size) VALUES (2, 100, 1, 80)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE inboxes SET last_seq = 100, pending_count = pending_count + 1, pending_bytes = pending_bytes + 80 WHERE user_id = 2",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // The purge runs shortly after start, in the background.
    let server = ChatServer::start_with(config).await;
    server
        .count_becomes("SELECT COUNT(*) FROM messages WHERE mid = 1", 0)
        .await;
    server
        .count_becomes("SELECT COUNT(*) FROM inbox WHERE mid = 1", 0)
        .await;
    assert_eq!(
        server
            .count("SELECT pending_count FROM inboxes WHERE user_id = 2")
            .await,
        1
    );
    server
        .count_becomes("SELECT COUNT(*) FROM inbox WHERE mid = 2", 0)
        .await;
    assert_eq!(
        server
            .count("SELECT pending_count FROM inboxes WHERE user_id = 1")
            .await,
        1,
        "a confirmed row is not counted out twice"
    );
    let mut bob = server.client().await;
    let ack = bob.login(bob_id, "pw").await;
    let texts: Vec<&str> = ack.offline.iter().map(|c| c.msg.as_str()).collect();
    assert_eq!(texts, ["recent"]);
    server.stop().await;
}

/// On MariaDB a receiver's DELIVERED is not held up by another user's
/// inbox row that some writer (another server's, in a cluster) has not
/// committed yet. Deleting the confirmed rows as a range made InnoDB lock
/// the first row past the range, the next user's, and wait for that
/// transaction: on 55 servers sharing one database such waits chained
/// writers together and deletes took 1-4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_confirmation_does_not_wait_for_the_next_users_uncommitted_row() {
    let server = ChatServer::start(Storage::MariaDb).await;
    let (mut sender, _) = server.user("sender").await;
    let (mut receiver, receiver_id) = server.user("receiver").await;
    let (_neighbour, neighbour_id) = server.user("neighbour").await;
    assert_eq!(neighbour_id, receiver_id + 1, "ids in registration order");
    let mid = sender
        .chat(receiver_id, "one")
        .await
        .expect("v2 ACKs carry the mid");
    let seq = receiver.recv_chat().await.seq.expect("v2 pushes carry seq");

    // Another writer's transaction stays open with the neighbour's next row,
    // the row right after the receiver's in the inbox's key order.
    let db = server.db().await;
    let mut other_writer = db.begin().await.expect("BEGIN");
    sqlx::query("INSERT INTO inbox (user_id, seq, mid, size) VALUES (?, ?, ?, ?)")
        .bind(neighbour_id)
        .bind(1_i64)
        .bind(mid)
        .bind(3_i64)
        .execute(&mut *other_writer)
        .await
        .expect("the other writer's insert");

    // Nothing the receiver does waits for that transaction: the cursor
    // moves and the next message arrives while it stays open.
    let confirmed = std::time::Instant::now();
    confirm(&server, &mut receiver, receiver_id, seq).await;
    sender.chat(receiver_id, "two").await;
    assert_eq!(receiver.recv_chat().await.msg, "two");
    not_held_up(
        confirmed,
        Duration::from_secs(1),
        "the confirmation and the answer",
    );

    // The confirmed row leaves the inbox once nothing holds its neighbour.
    other_writer.rollback().await.expect("ROLLBACK");
    server
        .count_becomes(
            &format!("SELECT COUNT(*) FROM inbox WHERE user_id = {receiver_id} AND seq <= {seq}"),
            0,
        )
        .await;
    server.stop().await;
}

/// On MariaDB many receivers confirming at once are not held up by a row
/// another writer has not committed. With few rows in `inbox` (the usual
/// state: receivers confirm promptly) the planner read the whole table for
/// a batch's many ranges, waiting for every uncommitted row; in a 100-pair
/// ping-pong a third of the box sat idle in such waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_many_confirmations_do_not_wait_for_another_writers_rows() {
    const RECEIVERS: usize = 24;
    let server = ChatServer::start(Storage::MariaDb).await;
    let (mut sender, _) = server.user("sender").await;
    let mut receivers = Vec::new();
    for i in 0..RECEIVERS {
        receivers.push(server.user(&format!("receiver{i}")).await);
    }
    let (_outsider, outsider_id) = server.user("outsider").await;
    let mut seqs = Vec::new();
    for (receiver, id) in &mut receivers {
        let mid = sender
            .chat(*id, "hello")
            .await
            .expect("v2 ACKs carry the mid");
        seqs.push((
            receiver.recv_chat().await.seq.expect("pushes carry seq"),
            mid,
        ));
    }

    let db = server.db().await;
    let mut other_writer = db.begin().await.expect("BEGIN");
    sqlx::query("INSERT INTO inbox (user_id, seq, mid, size) VALUES (?, 1, ?, 3)")
        .bind(outsider_id)
        .bind(seqs[0].1)
        .execute(&mut *other_writer)
        .await
        .expect("the other writer's insert");

    let confirmed = std::time::Instant::now();
    for ((receiver, _), (seq, _)) in receivers.iter_mut().zip(&seqs) {
        receiver.delivered(*seq).await;
    }
    let ids: Vec<String> = receivers.iter().map(|(_, id)| id.to_string()).collect();
    server
        .count_becomes(
            &format!(
                "SELECT COUNT(*) FROM inboxes WHERE delivered_seq = 1 AND user_id IN ({})",
                ids.join(",")
            ),
            RECEIVERS as i64,
        )
        .await;
    not_held_up(confirmed, Duration::from_secs(2), "the confirmations");
    other_writer.rollback().await.expect("ROLLBACK");
    server
        .count_becomes(
            &format!(
                "SELECT COUNT(*) FROM inbox WHERE user_id IN ({})",
                ids.join(",")
            ),
            0,
        )
        .await;
    server.stop().await;
}

/// On MariaDB a clean stop sweeps what receivers confirmed: no confirmed
/// row outlives the server (rows a crash leaves go with retention).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_clean_stop_leaves_no_confirmed_rows() {
    let server = ChatServer::start(Storage::MariaDb).await;
    let (mut sender, _) = server.user("sender").await;
    let (mut receiver, receiver_id) = server.user("receiver").await;
    sender.chat(receiver_id, "one").await;
    let seq = receiver.recv_chat().await.seq.expect("v2 pushes carry seq");
    confirm(&server, &mut receiver, receiver_id, seq).await;
    let db = server.db().await;
    server.stop().await;
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM inbox WHERE user_id = {receiver_id}"
    ))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(left, 0, "confirmed rows left after a clean stop");
}

/// Fails when what began at `started` took `within` or more: it waited for
/// another writer's open transaction.
fn not_held_up(started: std::time::Instant, within: Duration, what: &str) {
    let waited = started.elapsed();
    println!("{what}: written after {waited:?}");
    assert!(
        waited < within,
        "{what} waited {waited:?} for another writer's transaction"
    );
}

/// Sends DELIVERED `seq` and waits until the receiver's cursor is there.
async fn confirm(server: &ChatServer, receiver: &mut Client, receiver_id: i64, seq: i64) {
    receiver.delivered(seq).await;
    server
        .count_becomes(
            &format!("SELECT delivered_seq FROM inboxes WHERE user_id = {receiver_id}"),
            seq,
        )
        .await;
}
