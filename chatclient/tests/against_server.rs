//! The real binary, through pipes, against the REAL chat server (in-process,
//! SQLite): registration, login, 1:1 and group chat, errors and exit codes,
//! and a server restart the client must ride out by logging in again.

use testkit::bin::code;
use testkit::cli::{logged_in, login, register, start};
use testkit::server::{config_on, ChatServer, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_chat_and_group_chat() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let port = server.port();
    let alice_id = register(port, "alice", "pw a").await;
    let bob_id = register(port, "bob li", "pw-b").await;
    assert_ne!(alice_id, bob_id);

    // alice without the menu, bob through it.
    let mut alice = logged_in(port, alice_id, "pw a", &[]).await;
    let mut bob = start(port, &[]);
    bob.send(&format!("1\n{bob_id}\npw-b\n")).await;
    assert_eq!(
        bob.expect_out("logged in:").await,
        format!("logged in: id {bob_id} bob li")
    );

    alice.send(&format!("addfriend:{bob_id}\n")).await;
    alice
        .expect_out(&format!("friend added: id {bob_id}"))
        .await;

    let text = "你好 😀 \"quoted\" a:b:c \\ back";
    alice.send(&format!("chat:{bob_id}:{text}\n")).await;
    assert_eq!(
        alice.expect_out("sent to").await,
        format!("sent to {bob_id}")
    );
    let line = bob.expect_out(text).await;
    let prefix = format!("] {alice_id} alice: {text}");
    assert!(
        line.starts_with('[') && line.ends_with(&prefix),
        "not `[TIME] ID NAME: TEXT`: {line:?}"
    );
    bob.send(&format!("chat:{alice_id}:hi alice\n")).await;
    assert!(alice
        .expect_out("hi alice")
        .await
        .ends_with(&format!("] {bob_id} bob li: hi alice")));

    bob.send("creategroup:新群:desc: with colon\n").await;
    let created = bob.expect_out("created group").await;
    let group: i64 = created
        .strip_prefix("created group: id ")
        .and_then(|rest| rest.strip_suffix(" 新群"))
        .unwrap_or_else(|| panic!("{created:?}"))
        .parse()
        .unwrap();
    alice.send(&format!("addgroup:{group}\n")).await;
    assert_eq!(
        alice.expect_out("joined").await,
        format!("joined group: id {group}")
    );
    bob.send(&format!("groupchat:{group}:大家好: everyone\n"))
        .await;
    assert_eq!(
        bob.expect_out("sent to group").await,
        format!("sent to group {group}")
    );
    let line = alice.expect_out("大家好").await;
    assert!(
        line.starts_with('[')
            && line.ends_with(&format!("] #{group} {bob_id} bob li: 大家好: everyone")),
        "not `[TIME] #GROUP ID NAME: TEXT`: {line:?}"
    );
    alice.send("friends\n").await;
    alice
        .expect_out(&format!("friend: {bob_id} online bob li"))
        .await;

    // Logged out, bob's messages wait on the server for alice's next login.
    alice.send("loginout\n").await;
    alice.expect_out("logged out").await;
    bob.send(&format!("chat:{alice_id}:while you were away\n"))
        .await;
    bob.expect_out(&format!("sent to {alice_id}")).await;
    alice.send(&format!("1\n{alice_id}\npw a\n")).await;
    alice
        .expect_out(&format!("logged in: id {alice_id} alice"))
        .await;
    // The profile as the server stored it, then the stored message.
    alice
        .expect_out(&format!("friend: {bob_id} online bob li"))
        .await;
    alice
        .expect_out(&format!("group: #{group} 新群: desc: with colon"))
        .await;
    alice
        .expect_out(&format!("member: #{group} {alice_id} normal online alice"))
        .await;
    alice
        .expect_out(&format!("member: #{group} {bob_id} creator online bob li"))
        .await;
    let line = alice.expect_out("while you were away").await;
    assert!(line.ends_with(&format!("] {bob_id} bob li: while you were away")));

    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let (status, _, err) = bob.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_exit_codes() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let port = server.port();
    let alice_id = register(port, "alice", "pw-a").await;

    // Bad credentials: exit code 3.
    let (status, _, err) = login(port, alice_id, "not the password", &[])
        .finish()
        .await;
    assert_eq!(code(status), 3, "{err:#?}");
    assert!(err.iter().any(|l| l.contains("login failed")), "{err:#?}");

    // Refusals of the real server reach stderr, the client carries on.
    let mut alice = logged_in(port, alice_id, "pw-a", &[]).await;
    alice.send("chat:999:anyone?\n").await;
    assert!(alice.expect_err("chat to 999").await.contains("errno 4"));
    alice.send("addfriend:999\n").await;
    alice.expect_err("addfriend 999 failed").await;
    alice.send("creategroup:g:d\n").await;
    alice.expect_out("created group").await;
    alice.send("creategroup:g:again\n").await;
    alice.expect_err("(errno 3)").await;
    alice.send("groupchat:424242:hello\n").await;
    alice.expect_err("errno 4").await;

    // The account is in use: a second login gets exit code 3.
    let (status, _, err) = login(port, alice_id, "pw-a", &[]).finish().await;
    assert_eq!(code(status), 3, "{err:#?}");
    assert!(
        err.iter().any(|l| l.contains("this account is using")),
        "{err:#?}"
    );

    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");

    // Nothing listens: exit code 2.
    let port = server.port();
    server.stop().await;
    let (status, _, err) = start(port, &["--reconnect-for", "1"]).finish().await;
    assert_eq!(code(status), 2, "{err:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_on_the_same_port_client_logs_in_again() {
    let server = ChatServer::start(Storage::Sqlite).await;
    let (addr, database_url) = (server.addr, server.database_url.clone());
    let port = server.port();
    let alice_id = register(port, "alice", "pw-a").await;
    let bob_id = register(port, "bob", "pw-b").await;
    let mut alice = logged_in(port, alice_id, "pw-a", &[]).await;
    let mut bob = logged_in(port, bob_id, "pw-b", &[]).await;
    alice
        .send(&format!("chat:{bob_id}:before the restart\n"))
        .await;
    bob.expect_out("before the restart").await;

    server.stop().await;
    alice.expect_err("connection lost").await;
    bob.expect_err("connection lost").await;
    // Typed while the server is down: held, sent after the new login.
    alice
        .send(&format!("chat:{bob_id}:typed while the server was down\n"))
        .await;

    let server = ChatServer::start_on(addr, config_on(database_url)).await;
    alice.expect_err("reconnected to the server").await;
    alice
        .expect_err(&format!("logged in again as {alice_id} alice"))
        .await;
    bob.expect_err(&format!("logged in again as {bob_id} bob"))
        .await;
    // Delivered live or, if bob was not back yet, at his re-login.
    bob.expect_out("typed while the server was down").await;

    // Messages sent after the restart reach the re-logged-in clients.
    bob.send(&format!("chat:{alice_id}:welcome back\n")).await;
    assert!(alice
        .expect_out("welcome back")
        .await
        .ends_with(&format!("] {bob_id} bob: welcome back")));
    alice.send(&format!("chat:{bob_id}:thanks\n")).await;
    bob.expect_out(&format!("{alice_id} alice: thanks")).await;

    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let (status, _, err) = bob.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    server.stop().await;
}
