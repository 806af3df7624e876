//! The real binary, driven through pipes, against the fake server.

use protocol::{Chat, ChatTarget, MsgId, Parsed, Register, Request, SendChat, Version};
use serde_json::Value;
use testkit::bin::{code, LineProcess};
use testkit::cli::{self, logged_in, login, start};
use testkit::fake_server::FakeServer;
use testkit::free_port;

fn msgid(request: &Parsed) -> Option<MsgId> {
    request.request.as_ref().ok().map(Request::msgid)
}

#[tokio::test]
async fn register_prints_the_new_id() {
    let server = FakeServer::start().await;
    server.add_user(13, "alice", "pw");
    let mut client = start(server.port(), &[]);
    client.send("2\n新用户 😀\npass word\n").await;
    assert_eq!(client.expect_out("registered:").await, "registered: id 14");
    // A taken name: an error on stderr, back at the menu.
    client.send("2\nalice\nx\n").await;
    let error = client.expect_err("registration failed").await;
    assert!(error.contains("name is taken (errno 1)"), "{error}");
    client.send("3\n").await;
    let (status, _, _) = client.finish().await;
    assert_eq!(code(status), 0);
    let register = server
        .requests()
        .into_iter()
        .find(|r| msgid(r) == Some(MsgId::Register))
        .unwrap();
    assert_eq!(
        register.request,
        Ok(Request::Register(Register {
            name: "新用户 😀".into(),
            password: "pass word".into()
        }))
    );
    assert_eq!(register.version, Some(Version::V2));
    assert!(register.rid.as_ref().is_some_and(Value::is_number));
}

#[tokio::test]
async fn menu_login_shows_profile_and_offline_messages() {
    let server = FakeServer::with_alice_and_bob().await;
    let from_bob = |target, msg: &str, time: &str, mid| Chat {
        target,
        from: 15,
        name: "bob li".into(),
        msg: msg.into(),
        time: time.into(),
        mid: Some(mid),
        ts: Some(mid),
        seq: None,
    };
    server.store_offline(
        13,
        from_bob(ChatTarget::User(13), "离线: hi", "2024-05-01 08:00:00", 1),
    );
    server.store_offline(
        13,
        from_bob(ChatTarget::Group(1), "group news", "2024-05-01 08:01:00", 2),
    );
    let mut client = start(server.port(), &[]);
    client.send("1\n13\npw-a\n").await;
    client.expect_out("logged in: id 13 alice").await;
    let (status, out, err) = client.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    assert_eq!(
        out,
        vec![
            "logged in: id 13 alice",
            "friend: 15 offline bob li",
            "group: #1 rustaceans: we like: rust",
            "member: #1 13 creator online alice",
            "member: #1 15 normal offline bob li",
            "[2024-05-01 08:00:00] 15 bob li: 离线: hi",
            "[2024-05-01 08:01:00] #1 15 bob li: group news",
        ]
    );
}

#[tokio::test]
async fn two_clients_chat_and_group_chat() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut alice = logged_in(server.port(), 13, "pw-a", &[]).await;
    let mut bob = logged_in(server.port(), 15, "pw-b", &[]).await;

    let text = "你好 😀 \"quoted\" 'single' a:b:c \\ back";
    alice.send(&format!("chat:15:{text}\n")).await;
    assert_eq!(alice.expect_out("sent to").await, "sent to 15");
    let line = bob.expect_out(text).await;
    assert_eq!(line, format!("[2024-05-01 12:00:00] 13 alice: {text}"));

    bob.send("groupchat:1:大家好: everyone\n").await;
    assert_eq!(bob.expect_out("sent to group").await, "sent to group 1");
    assert_eq!(
        alice.expect_out("大家好").await,
        "[2024-05-01 12:00:00] #1 15 bob li: 大家好: everyone"
    );

    alice.send("creategroup:新群:desc: with colon\n").await;
    assert_eq!(
        alice.expect_out("created group").await,
        "created group: id 101 新群"
    );
    bob.send("addgroup:101\n").await;
    assert_eq!(bob.expect_out("joined").await, "joined group: id 101");
    alice.send("groupchat:101:welcome\n").await;
    assert_eq!(
        bob.expect_out("welcome").await,
        "[2024-05-01 12:00:00] #101 13 alice: welcome"
    );
    alice.send("groups\n").await;
    alice.expect_out("group: #101 新群: desc: with colon").await;
    alice.send("friends\n").await;
    alice.expect_out("friend: 15 online bob li").await;

    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let (status, _, err) = bob.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    let chat = server
        .requests()
        .into_iter()
        .find(|r| msgid(r) == Some(MsgId::OneChat))
        .unwrap();
    assert!(
        matches!(&chat.request, Ok(Request::Chat(SendChat { msg, .. })) if msg == text),
        "{chat:?}"
    );
    assert_eq!(chat.version, Some(Version::V2));
}

#[tokio::test]
async fn server_errors_and_bad_commands_go_to_stderr() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut alice = logged_in(server.port(), 13, "pw-a", &[]).await;
    alice.send("chat:999:anyone there?\n").await;
    assert_eq!(
        alice.expect_err("chat to 999").await,
        "error: chat to 999 failed: no such user or group (errno 4)"
    );
    alice.send("addfriend:999\n").await;
    alice.expect_err("addfriend 999 failed").await;
    alice.send("groupchat:77:x\n").await;
    alice.expect_err("errno 4").await;
    alice.send("creategroup:rustaceans:dup\n").await;
    alice.expect_err("group name is taken (errno 3)").await;
    alice.send("chat:abc:hi\n").await;
    alice.expect_err("friendid must be a positive number").await;
    alice.send("frobnicate\n").await;
    alice.expect_err("invalid input command").await;
    alice.send("help\n").await;
    alice.expect_out("chat:friendid:message").await;
    let (status, _, _) = alice.finish().await;
    assert_eq!(code(status), 0);
}

#[tokio::test]
async fn bad_credentials_and_busy_accounts_exit_3() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut client = start(server.port(), &[]);
    client.send("1\n13\nwrong\n").await;
    let error = client.expect_err("login failed").await;
    assert!(
        error.contains("incorrect id or password! (errno 1)"),
        "{error}"
    );
    let (status, _, _) = client.finish().await;
    assert_eq!(code(status), 3);

    let _alice = logged_in(server.port(), 13, "pw-a", &[]).await;
    let mut again = start(server.port(), &[]);
    again.send("1\n13\npw-a\n").await;
    again.expect_err("this account is using").await;
    let (status, _, _) = again.finish().await;
    assert_eq!(code(status), 3);
}

#[tokio::test]
async fn cannot_connect_exits_2() {
    let port = free_port();
    let client = start(port, &[]);
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 2);
    assert!(
        err[0].starts_with("error: cannot connect to 127.0.0.1:"),
        "{err:#?}"
    );
}

#[tokio::test]
async fn bad_usage_exits_1_and_help_documents_everything() {
    for args in [
        &[][..],
        &["127.0.0.1"],
        &["127.0.0.1", "notaport"],
        &["127.0.0.1", "1", "--password-env", "X"],
        &[
            "127.0.0.1",
            "1",
            "--login",
            "1",
            "--password-env",
            "X",
            "--password-file",
            "f",
        ],
        &["127.0.0.1", "1", "--linger", "-1"],
        &[
            "127.0.0.1",
            "1",
            "--login",
            "1",
            "--password-env",
            "SURELY_UNSET_VARIABLE_42",
        ],
        &[
            "127.0.0.1",
            "1",
            "--login",
            "1",
            "--password-file",
            "/nonexistent/pw",
        ],
        &["127.0.0.1", "1", "--bogus"],
    ] {
        let client = LineProcess::spawn(cli::command(args));
        let (status, out, err) = client.finish().await;
        assert_eq!(code(status), 1, "{args:?}: {out:#?} {err:#?}");
        assert!(!err.is_empty(), "{args:?}: no message");
    }
    let client = LineProcess::spawn(cli::command(&["--help"]));
    let (status, out, _) = client.finish().await;
    assert_eq!(code(status), 0);
    let help = out.join("\n");
    for needle in [
        "HOST",
        "PORT",
        "--login",
        "--password-env",
        "--password-file",
        "--json",
        "--linger",
        "--color",
        "--ping-interval",
        "--reconnect-for",
        "chat:friendid:message",
        "groupchat:groupid:message",
        "creategroup:",
        "addfriend:friendid",
        "addgroup:groupid",
        "loginout",
        "registered: id N",
        "[TIME] #<group id> <sender id> <sender name>: <text>",
        "Exit codes",
        "NO_COLOR",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
}

#[tokio::test]
async fn password_file_login() {
    let server = FakeServer::with_alice_and_bob().await;
    let file = testkit::run::temp_dir("password-file").join("pw");
    std::fs::write(&file, "pw-b\n").unwrap();
    let mut bob = start(
        server.port(),
        &["--login", "15", "--password-file", file.to_str().unwrap()],
    );
    bob.expect_out("logged in: id 15 bob li").await;
    let (status, _, _) = bob.finish().await;
    assert_eq!(code(status), 0);
}

#[tokio::test]
async fn json_mode_prints_frames_raw() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut bob = logged_in(server.port(), 15, "pw-b", &[]).await;
    let mut alice = login(server.port(), 13, "pw-a", &["--json"]);
    let ack: Value = serde_json::from_str(&alice.expect_out("\"msgid\":2").await).unwrap();
    assert_eq!(ack["friends"][0]["name"], "bob li");
    bob.send("chat:13:line1\\nstill line1\n").await;
    let push: Value = serde_json::from_str(&alice.expect_out("line1").await).unwrap();
    assert_eq!(push["msg"], "line1\\nstill line1");
    alice.send("chat:15:ok\n").await;
    let (status, out, _) = alice.finish().await;
    assert_eq!(code(status), 0);
    for line in &out {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    assert!(out.iter().any(|l| l.contains("\"msgid\":11")), "{out:#?}");
    let _ = bob.finish().await;
}

#[tokio::test]
async fn heartbeats_are_sent() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut alice = login(server.port(), 13, "pw-a", &["--ping-interval", "0.2"]);
    alice.expect_out("logged in").await;
    server
        .wait_requests(
            |r| r.iter().filter(|r| msgid(r) == Some(MsgId::Ping)).count() >= 3,
            "three PINGs",
        )
        .await;
    let ping = server
        .requests()
        .into_iter()
        .find(|r| msgid(r) == Some(MsgId::Ping))
        .unwrap();
    assert_eq!(ping.version, Some(Version::V2));
    let (status, _, err) = alice.finish().await;
    assert_eq!(code(status), 0);
    assert!(
        !err.iter().any(|l| l.contains("connection lost")),
        "{err:#?}"
    );
}

#[tokio::test]
async fn logout_then_login_again_on_the_same_connection() {
    let server = FakeServer::with_alice_and_bob().await;
    let mut client = start(server.port(), &[]);
    client.send("1\n13\npw-a\n").await;
    client.expect_out("logged in: id 13").await;
    client.send("loginout\n").await;
    client.expect_out("logged out").await;
    client.send("1\n15\npw-b\n").await;
    client.expect_out("logged in: id 15").await;
    let (status, _, _) = client.finish().await;
    assert_eq!(code(status), 0);
    assert_eq!(server.accepted(), 1);
}
