//! Dropped connections, re-login, and servers that misbehave: the real
//! binary through pipes, against the fake server.

use protocol::{Login, Request};
use testkit::bin::code;
use testkit::cli::{logged_in, login, start};
use testkit::fake_server::FakeServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn dropped_connection_logs_in_again_and_loses_nothing() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut alice = logged_in(server.port(), 13, "pw-a", &[]).await;
    let mut bob = logged_in(server.port(), 15, "pw-b", &[]).await;

    // The old session is "still closing" for the first two attempts.
    server.busy_logins(2);
    server.kick(15);
    bob.expect_err("connection lost").await;
    // Typed while the connection is down: held, then sent after re-login.
    bob.send("chat:13:written while reconnecting: 断线\n").await;
    bob.expect_err("reconnected to the server").await;
    bob.expect_err("retrying").await;
    bob.expect_err("logged in again as 15 bob li").await;
    assert_eq!(
        alice.expect_out("断线").await,
        "[2024-05-01 12:00:00] 15 bob li: written while reconnecting: 断线"
    );
    assert_eq!(bob.expect_out("sent to").await, "sent to 13");

    // Messages reach bob on the new connection.
    alice.send("chat:15:welcome back\n").await;
    bob.expect_out("13 alice: welcome back").await;
    assert_eq!(server.accepted(), 3);
    let logins = server
        .requests()
        .iter()
        .filter(|r| matches!(r.request, Ok(Request::Login(Login { id: 15, .. }))))
        .count();
    assert_eq!(logins, 4, "first login, two refused, one accepted");

    let (status, _, err) = bob.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let (status, _, _) = alice.finish().await;
    assert_eq!(code(status), 0);
}

#[tokio::test]
async fn giving_up_reconnecting_exits_2_and_reports_unsent_lines() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut bob = logged_in(server.port(), 15, "pw-b", &["--reconnect-for", "0.5"]).await;
    server.stop_accepting();
    server.kick(15);
    bob.expect_err("connection lost").await;
    bob.send("chat:13:never delivered\n").await;
    bob.expect_err("could not reconnect").await;
    let (status, _, err) = bob.finish().await;
    assert_eq!(code(status), 2);
    assert!(
        err.iter()
            .any(|l| l == "error: not sent: chat:13:never delivered"),
        "{err:#?}"
    );
}

#[tokio::test]
async fn bad_server_frames_are_reported_not_fatal() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut alice = logged_in(server.port(), 13, "pw-a", &[]).await;
    let mut bob = logged_in(server.port(), 15, "pw-b", &[]).await;

    server.send_raw(
        13,
        b"garbage\n[1,2]\n{\"msgid\":6}\n\xff\xfe\x00{\"msgid\":99}\n\"just a string\"\r\n",
    );
    for needle in [
        "not valid JSON",
        "not a JSON object",
        "field toid is missing",
        "not valid UTF-8",
        "unexpected msgid 99",
        "not a JSON object",
    ] {
        alice.expect_err(needle).await;
    }
    // Still working.
    bob.send("chat:13:still here\n").await;
    alice.expect_out("15 bob li: still here").await;

    // Half a frame, then the socket closes.
    server.send_raw(13, b"{\"msgid\":6,\"id\":15,\"na");
    server.kick(13);
    alice
        .expect_err("in the middle of a frame (22 bytes)")
        .await;
    alice.expect_err("logged in again as 13").await;
    bob.send("chat:13:after the half frame\n").await;
    alice.expect_out("after the half frame").await;

    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let _ = bob.finish().await;
}

#[tokio::test]
async fn a_silent_server_is_detected() {
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            held.push(socket);
        }
    });
    let mut client = login(port, 13, "pw", &["--reply-timeout", "0.5"]);
    client
        .expect_err("connection lost (no reply from the server in 0.5 s)")
        .await;
    client.expect_err("reconnected").await;
    accept.abort();
}

#[tokio::test]
async fn a_server_that_closes_at_once() {
    // Accepts and closes every connection, writing half a frame first.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"{\"msgid\":2,").await;
        }
    });
    let mut client = start(port, &["--reconnect-for", "0.3"]);
    client.expect_err("connection lost").await;
    client.send("1\n13\npw\n").await;
    accept.abort();
    let (status, _, err) = client.finish().await;
    // The login can never complete: the client gives up reconnecting.
    assert_eq!(code(status), 2, "{err:#?}");
}
