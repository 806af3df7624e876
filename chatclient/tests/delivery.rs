//! v2 delivery as chatclient uses it, against the REAL chat server
//! (in-process, SQLite; the backlog on MariaDB too): a 30 MB backlog shown completely and confirmed
//! only as it is shown, resume with token and `since` after a cut
//! connection, a server restart and a SIGKILLed server binary (each
//! message shown once; the binary must be built: `cargo build -p
//! chatserver` or `cargo test --workspace`), sends
//! re-sent with their cid after a lost ACK, and the `history` command.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Reader, Relay};
use testkit::bin::code;
use testkit::cli::logged_in;
use testkit::prelude::*;
use testkit::server::{config_on, ChatServer, Storage};

/// `mNNNN ` then filler up to `size` bytes.
fn body(n: usize, size: usize) -> String {
    let head = format!("m{n:04} ");
    let fill = size.saturating_sub(head.len());
    head + &"x".repeat(fill)
}

/// The number of a shown message line `[TIME] ID NAME: mNNNN xxx…`.
fn number(line: &str) -> Option<usize> {
    let (_, text) = line.split_once(": m")?;
    text.get(..4)?.parse().ok()
}

/// A registered user who is not logged in.
async fn offline_user(server: &ChatServer, name: &str, password: &str) -> i64 {
    server.client().await.register(name, password).await
}

async fn send_all(sender: &mut Client, to: i64, numbers: std::ops::Range<usize>, size: usize) {
    for n in numbers {
        sender.chat(to, &body(n, size)).await;
    }
}

async fn execute(server: &ChatServer, sql: &str) {
    let pool = server.db().await;
    sqlx::query(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

/// Reads stdout until every number in `0..count` was shown; panics on a
/// number shown twice or out of order. Returns the lines read.
async fn read_messages(client: &mut Reader, shown: &mut Vec<usize>, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while shown.len() < count {
        let line = client.next_line().await;
        if let Some(n) = number(&line) {
            assert_eq!(
                n,
                shown.len(),
                "shown out of order or twice after {:?}",
                shown.last()
            );
            shown.push(n);
        }
        lines.push(line);
    }
    lines
}

testkit::on_both_backends!(a_30_mb_backlog_is_shown_in_order_and_confirmed_only_as_shown);

async fn a_30_mb_backlog_is_shown_in_order_and_confirmed_only_as_shown(storage: Storage) {
    const COUNT: usize = 500;
    const SIZE: usize = 60_000;
    let server = ChatServer::start(storage).await;
    let (mut alice, _) = server.user("alice").await;
    let bob = offline_user(&server, "bob", "pw-b").await;
    send_all(&mut alice, bob, 0..COUNT, SIZE).await;
    let rows = format!("SELECT COUNT(*) FROM inbox WHERE user_id = {bob}");
    let cursor = format!("SELECT delivered_seq FROM inboxes WHERE user_id = {bob}");
    assert_eq!(server.count(&rows).await, COUNT as i64);
    assert_eq!(server.count(&cursor).await, 0);

    // bob logs in; nobody reads his stdout yet: the pipe (64 KiB) takes at
    // most one message line, then showing blocks.
    let mut client = Reader::login(server.port(), bob, "pw-b", &[]);
    server
        .count_becomes(
            &format!("SELECT COUNT(*) FROM users WHERE id = {bob} AND state = 'online'"),
            1,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let confirmed = server.count(&cursor).await;
    assert!(
        confirmed <= 1,
        "confirmed {confirmed} before they were shown"
    );
    assert!(server.count(&rows).await >= COUNT as i64 - 1);

    // Read everything: all of it, in order, then all of it confirmed.
    let first = client.next_line().await;
    assert!(
        first.starts_with(&format!("logged in: id {bob} bob")),
        "{first:?}"
    );
    let mut shown = Vec::new();
    let lines = read_messages(&mut client, &mut shown, COUNT).await;
    let line = lines.iter().find(|l| number(l) == Some(7)).unwrap();
    assert!(line.ends_with(&body(7, SIZE)), "{}", &line[..80]);
    server.count_becomes(&rows, 0).await;
    assert_eq!(server.count(&cursor).await, COUNT as i64);

    let (status, rest, err) = client.finish().await;
    assert_eq!(status, 0, "{err:#?}");
    assert!(rest.iter().all(|l| number(l).is_none()), "shown again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_cut_and_a_restart_shows_each_message_once() {
    const FIRST: usize = 300;
    const SECOND: usize = 100;
    const SIZE: usize = 20_000;
    let server = ChatServer::start(Storage::Sqlite).await;
    let (addr, database_url) = (server.addr, server.database_url.clone());
    let (mut alice, alice_id) = server.user("alice").await;
    let bob = offline_user(&server, "bob", "pw-b").await;
    send_all(&mut alice, bob, 0..FIRST, SIZE).await;

    // The connection passes about 100 messages, then nothing (the rest is
    // lost on the way), then it is cut.
    let relay = Relay::start(addr).await;
    relay.limit(100 * SIZE as u64);
    let mut client = Reader::login(relay.port, bob, "pw-b", &[]);
    let mut shown = Vec::new();
    read_messages(&mut client, &mut shown, 90).await;
    // From now on only the session token logs bob in.
    execute(
        &server,
        &format!("UPDATE users SET password_hash = 'none' WHERE id = {bob}"),
    )
    .await;
    relay.cut();
    relay.limit(u64::MAX);
    read_messages(&mut client, &mut shown, FIRST).await;
    assert!(client.stderr_has("connection lost"));
    assert!(client.stderr_has(&format!("logged in again as {bob} bob")));
    server
        .count_becomes(
            &format!("SELECT COUNT(*) FROM inbox WHERE user_id = {bob}"),
            0,
        )
        .await;

    // Live messages, and the server restarted in their middle: GOAWAY, then
    // a new server on the same address and database.
    send_all(&mut alice, bob, FIRST..FIRST + SECOND / 2, SIZE).await;
    server.stop().await;
    let server = ChatServer::start_on(addr, config_on(database_url)).await;
    let mut alice = server.client().await;
    alice.login(alice_id, "pw").await;
    send_all(&mut alice, bob, FIRST + SECOND / 2..FIRST + SECOND, SIZE).await;
    read_messages(&mut client, &mut shown, FIRST + SECOND).await;
    assert!(client.stderr_has("the server is going away (shutdown)"));
    server
        .count_becomes(
            &format!("SELECT COUNT(*) FROM inbox WHERE user_id = {bob}"),
            0,
        )
        .await;

    let (status, rest, err) = client.finish().await;
    assert_eq!(status, 0, "{err:#?}");
    assert!(rest.iter().all(|l| number(l).is_none()), "shown again");
    assert!(!err.iter().any(|l| l.contains("login failed")), "{err:#?}");
    let shown: BTreeSet<usize> = shown.into_iter().collect();
    assert_eq!(shown.len(), FIRST + SECOND);
    server.stop().await;
}

/// The chatserver binary (built beforehand: `cargo build -p chatserver`,
/// or `cargo test --workspace`; or CHATSERVER_BIN) over the SQLite file
/// `chat.db` in `dir`, on a free port.
fn chatserver_binary(dir: &std::path::Path) -> (testkit::bin::Process, std::net::SocketAddr) {
    testkit::bin::Process::start_listening(
        std::process::Command::new(testkit::bin::path("chatserver"))
            .args(["127.0.0.1", "0"])
            .args(testkit::bin::CHEAP_HASHING)
            .current_dir(dir)
            .env_remove("CHAT_DATABASE_URL")
            .env_remove("CHAT_CONFIG")
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::inherit()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_and_restarted_loses_and_repeats_nothing() {
    const COUNT: usize = 300;
    const SIZE: usize = 20_000;
    let dir = testkit::run::temp_dir("chatclient-kill");
    let (mut server, addr) = chatserver_binary(&dir);
    let (mut alice, _) = Client::user(addr, "alice").await;
    let bob = Client::connect(addr).await.register("bob", "pw-b").await;
    send_all(&mut alice, bob, 0..COUNT, SIZE).await;

    // About 100 messages get through, then the server is SIGKILLed.
    let relay = Relay::start(addr).await;
    relay.limit(100 * SIZE as u64);
    let mut client = Reader::login(relay.port, bob, "pw-b", &[]);
    let mut shown = Vec::new();
    read_messages(&mut client, &mut shown, 90).await;
    server.kill();
    let (_server, addr) = chatserver_binary(&dir);
    relay.retarget(addr);
    relay.limit(u64::MAX);
    read_messages(&mut client, &mut shown, COUNT).await;
    assert!(client.stderr_has("connection lost"));
    assert!(client.stderr_has(&format!("logged in again as {bob} bob")));

    let (status, rest, err) = client.finish().await;
    assert_eq!(status, 0, "{err:#?}");
    assert!(rest.iter().all(|l| number(l).is_none()), "shown again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_ack_was_lost_is_sent_again_and_received_once() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let alice = offline_user(&server, "alice", "pw-a").await;
    let bob = offline_user(&server, "bob", "pw-b").await;
    let relay = Relay::start(server.addr).await;
    let mut sender = logged_in(relay.port, alice, "pw-a", &[]).await;
    let mut receiver = logged_in(server.port(), bob, "pw-b", &[]).await;

    // The server stores and delivers it; its ACK is lost on the way back.
    relay.limit(0);
    sender.send(&format!("chat:{bob}:only once\n")).await;
    receiver.expect_out("only once").await;
    relay.cut();
    relay.limit(u64::MAX);
    sender.expect_err("connection lost").await;
    sender
        .expect_err("sending again 1 message(s) not confirmed")
        .await;
    assert_eq!(sender.expect_out("sent to").await, format!("sent to {bob}"));

    sender.send(&format!("chat:{bob}:afterwards\n")).await;
    receiver.expect_out("afterwards").await;
    let (status, _, err) = sender.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let (status, out, err) = receiver.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    // Every stdout line the receiver printed, the expected ones included.
    assert_eq!(receiver_lines(&out, "only once"), 1, "{out:#?}");
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM messages WHERE sender_id = {alice}"
            ))
            .await,
        2,
        "stored once each"
    );
    server.stop().await;
}

/// Lines of `out` containing `needle`.
fn receiver_lines(out: &[String], needle: &str) -> usize {
    out.iter().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_back_through_a_conversation_and_a_group() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (mut alice, alice_id) = server.user("alice").await;
    let (mut bob, bob_id) = server.user("bob").await;
    for n in 1..=24 {
        alice.chat(bob_id, &format!("h{n:02}")).await;
    }
    bob.chat(alice_id, "h25 from bob").await;
    let group = alice.create_group("club", "d").await;
    bob.join_group(group).await;
    alice.group_chat(group, "g1").await;
    alice.group_chat(group, "g2").await;
    bob.logout().await;

    let mut client = logged_in(server.port(), bob_id, "pw", &[]).await;
    client.send(&format!("history:{alice_id}\n")).await;
    let mut page = Vec::new();
    loop {
        let line = client.expect_out("history: ").await;
        let end = !line.starts_with("history: [");
        page.push(line);
        if end {
            break;
        }
    }
    assert_eq!(page.len(), 21, "{page:#?}");
    assert!(
        page[0].ends_with(&format!("] {alice_id} alice: h06")),
        "{page:#?}"
    );
    assert!(page[18].ends_with(&format!("] {alice_id} alice: h24")));
    assert!(page[19].ends_with(&format!("] {bob_id} bob: h25 from bob")));
    assert_eq!(
        page[20],
        format!("history: more before these: history:{alice_id} again")
    );

    client.send(&format!("history:{alice_id}\n")).await;
    for n in 1..=5 {
        let line = client.expect_out("history: ").await;
        assert!(line.ends_with(&format!("alice: h{n:02}")), "{line:?}");
    }
    assert_eq!(
        client.expect_out("history: ").await,
        format!("history: start of the conversation with {alice_id}")
    );

    client.send(&format!("history:#{group}\n")).await;
    assert!(client
        .expect_out("history: ")
        .await
        .ends_with(&format!("#{group} {alice_id} alice: g1")));
    assert!(client.expect_out("history: ").await.ends_with("alice: g2"));
    client
        .expect_out(&format!("history: start of the conversation with #{group}"))
        .await;

    client.send("history:#999999\n").await;
    client.expect_err("history #999999 failed").await;
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    server.stop().await;
}
