//! The web client in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, through WebDriver), against the `chatserver` binary's
//! web listener: users register, befriend, chat and share groups from the
//! page, with a terminal client, across a reload and a server restart, and
//! hostile text stays text. Each scenario saves a screenshot of its chat
//! view in `target/browser-screenshots/`. Chromium missing is a failure.

mod driver;
mod server;
mod ui;

use std::time::Duration;

use driver::Driver;
use serde_json::{json, Value};
use server::WebServer;
use testkit::prelude::*;
use ui::short;

/// A desktop window, and a phone-sized one.
const DESKTOP: (u32, u32) = (1100, 760);
const PHONE: (u32, u32) = (390, 780);
/// Drain period of the servers here: GOAWAY tells pages to come back
/// within it.
const DRAIN: Duration = Duration::from_millis(500);

/// Fails if a chat is pushed to a TCP client within `wait` (notices are
/// fine).
async fn no_more_chats(client: &mut Client, wait: Duration) {
    let deadline = Deadline::after(wait);
    while !deadline.passed() {
        match client.recv_raw_within(Duration::from_millis(100)).await {
            Ok(frame) => {
                let frame: Value = serde_json::from_slice(&frame).expect("JSON");
                assert!(
                    frame["msgid"] != json!(6) && frame["msgid"] != json!(10),
                    "a chat twice: {frame}"
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("the connection ended: {e}"),
        }
    }
}

/// The next chat pushed to a TCP client, skipping notices.
async fn next_chat(client: &mut Client) -> Value {
    let deadline = Deadline::after(WAIT);
    loop {
        let frame = client.recv_json().await;
        if frame["msgid"] == json!(6) || frame["msgid"] == json!(10) {
            return frame;
        }
        deadline.check("no chat pushed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_users_befriend_chat_and_share_a_group() {
    let server = WebServer::start(DRAIN);
    let driver = Driver::start().await;
    let alice = driver.page("alice", DESKTOP.0, DESKTOP.1).await;
    let bob = driver.page("bob", PHONE.0, PHONE.1).await;
    let a = ui::register_and_log_in(&alice, &server.url(), "alice", "alice-pw").await;
    let b = ui::register_and_log_in(&bob, &server.url(), "bob", "bob-pw").await;
    // Every field has a label, and nothing needs a mouse: the steps below
    // use Enter on focused buttons and fields only (clicks are for the
    // phone's back button and the member list, which are buttons too).
    let unlabelled = alice
        .js(
            "return [...document.querySelectorAll('input, textarea')]\
             .filter(f => f.labels.length === 0).map(f => f.id)",
            vec![],
        )
        .await;
    assert_eq!(unlabelled, json!([]), "fields without a label");

    // Alice befriends Bob: both lists show the other, online.
    ui::add_friend(&alice, b).await;
    ui::wait_conv(&bob, &format!("u:{a}")).await;
    alice
        .wait_js(
            "bob online in alice's list",
            "return !!document.querySelector('button[data-conv=\"u:' + arguments[0] + '\"] .presence.online')",
            vec![json!(b)],
        )
        .await;
    assert!(ui::shows_online(&bob, a).await, "bob sees alice online");

    // 1:1 both ways; Bob's list counts the message unread until he opens it.
    ui::open(&alice, &format!("u:{b}")).await;
    ui::send(&alice, "hello bob").await;
    bob.wait_js(
        "an unread message from alice",
        "const u = document.querySelector('button[data-conv=\"u:' + arguments[0] + '\"] .unread');\
         return u && !u.hidden && u.textContent === '1'",
        vec![json!(a)],
    )
    .await;
    ui::open(&bob, &format!("u:{a}")).await;
    ui::wait_message(&bob, "hello bob").await;
    assert_eq!(ui::unread(&bob, &format!("u:{a}")).await, 0);
    ui::send(&bob, "hi alice").await;
    // The push and the history page carried "hello bob": shown once.
    assert_eq!(ui::texts(&bob).await, ["hello bob", "hi alice"]);
    ui::wait_message(&alice, "hi alice").await;
    assert_eq!(ui::texts(&alice).await, ["hello bob", "hi alice"]);

    // A group: Alice creates it, Bob joins by id, both see the members and
    // each other's messages live.
    alice.type_into("#group-name", "team").await;
    alice.type_into("#group-desc", "our team").await;
    alice.press_enter("#group-desc").await;
    let group = alice
        .wait_js(
            "the new group open",
            "const c = document.getElementById('messages').dataset.conv || '';\
             return c.startsWith('g:') ? Number(c.slice(2)) : 0",
            vec![],
        )
        .await
        .as_i64()
        .expect("group id");
    bob.click("#back").await;
    bob.type_into("#join-id", &group.to_string()).await;
    bob.press_enter("#join-id").await;
    bob.wait_js(
        "the joined group open, with its name",
        "return document.getElementById('conv-title').textContent.includes('team')",
        vec![],
    )
    .await;
    alice
        .wait_js(
            "bob in the member list",
            "return document.getElementById('members-count').textContent === 'Members (2)'",
            vec![],
        )
        .await;
    ui::send(&bob, "bob joined").await;
    ui::wait_message(&alice, "bob joined").await;
    ui::send(&alice, "welcome, bob").await;
    ui::wait_message(&bob, "welcome, bob").await;
    assert_eq!(ui::texts(&bob).await, ["bob joined", "welcome, bob"]);
    // A 1:1 message while Alice reads the group: counted unread, not shown
    // in the group.
    bob.click("#back").await;
    ui::open(&bob, &format!("u:{a}")).await;
    ui::send(&bob, "lunch at noon?").await;
    alice
        .wait_js(
            "bob's message unread",
            "const u = document.querySelector('button[data-conv=\"u:' + arguments[0] + '\"] .unread');\
             return u && !u.hidden && u.textContent === '1'",
            vec![json!(b)],
        )
        .await;
    assert_eq!(ui::texts(&alice).await, ["bob joined", "welcome, bob"]);
    alice.click("#members-count").await;
    alice.screenshot("two-users-alice").await;
    bob.screenshot("two-users-bob-phone").await;

    // Bob logs out: Alice sees him offline; his browser forgets the session.
    bob.click("#logout").await;
    bob.wait_js(
        "the log-in view again",
        "return !document.getElementById('auth-view').hidden && localStorage.length === 0",
        vec![],
    )
    .await;
    alice
        .wait_js(
            "bob offline",
            "return !!document.querySelector('button[data-conv=\"u:' + arguments[0] + '\"] .presence.offline')",
            vec![json!(b)],
        )
        .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_user_and_a_chatclient_user_chat() {
    let server = WebServer::start(DRAIN);
    let port = server.tcp.port();
    let term_id = testkit::cli::register(port, "terminal", "term-pw").await;
    let mut term = testkit::cli::logged_in(port, term_id, "term-pw", &[]).await;

    let driver = Driver::start().await;
    let page = driver.page("web", DESKTOP.0, DESKTOP.1).await;
    let web_id = ui::register_and_log_in(&page, &server.url(), "webby", "web-pw").await;
    // Refusals read as sentences, not numbers.
    page.type_into("#friend-id", "999999").await;
    page.press_enter("#friend-id").await;
    ui::wait_error(&page, "There is no user with that id.").await;
    page.type_into("#join-id", "999999").await;
    page.press_enter("#join-id").await;
    ui::wait_error(&page, "There is no group with that id.").await;
    ui::add_friend(&page, term_id).await;
    ui::open(&page, &format!("u:{term_id}")).await;
    ui::send(&page, "hello from the browser: 你好").await;
    term.expect_out(&format!("{web_id} webby: hello from the browser: 你好"))
        .await;

    term.send(&format!("chat:{web_id}:hello from the terminal\n"))
        .await;
    ui::wait_message(&page, "hello from the terminal").await;
    assert_eq!(
        ui::texts(&page).await,
        ["hello from the browser: 你好", "hello from the terminal"]
    );
    page.screenshot("browser-and-chatclient").await;
    page.close().await;
    term.send("quit\n").await;
    let _ = term.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resumes_the_session_and_shows_history_page_by_page() {
    let server = WebServer::start(DRAIN);
    let driver = Driver::start().await;
    let page = driver.page("reload", DESKTOP.0, DESKTOP.1).await;
    let me = ui::register_and_log_in(&page, &server.url(), "reader", "secret-pw").await;
    let (mut peer, peer_id) = Client::user(server.tcp, "writer").await;

    // More than a history page (50): the rest comes when scrolling up.
    let sent: Vec<String> = (1..=70).map(|i| format!("message {i}")).collect();
    for text in &sent {
        peer.chat(me, text).await;
    }
    ui::wait_conv(&page, &format!("u:{peer_id}")).await;
    page.wait_js(
        "70 unread",
        "const u = document.querySelector('button[data-conv=\"u:' + arguments[0] + '\"] .unread');\
         return u && u.textContent === '70'",
        vec![json!(peer_id)],
    )
    .await;

    page.client.refresh().await.expect("reload");
    ui::wait_online(&page).await;
    let stored = page.js("return JSON.stringify(localStorage)", vec![]).await;
    let stored = stored.as_str().unwrap_or_default().to_owned();
    assert!(
        !stored.contains("secret-pw"),
        "the password is not kept: {stored}"
    );
    assert!(stored.contains("token"), "the token is kept: {stored}");
    // Unread counts survive the reload.
    assert_eq!(ui::unread(&page, &format!("u:{peer_id}")).await, 70);

    ui::open(&page, &format!("u:{peer_id}")).await;
    page.wait_js(
        "the latest page of history",
        "return document.querySelectorAll('#messages li.msg').length === 50",
        vec![],
    )
    .await;
    assert_eq!(ui::texts(&page).await, sent[20..]);
    page.js("document.getElementById('messages').scrollTop = 0", vec![])
        .await;
    page.wait_js(
        "the start of the conversation",
        "return !document.getElementById('history-start').hidden",
        vec![],
    )
    .await;
    assert_eq!(ui::texts(&page).await, sent, "every message once, in order");
    page.screenshot("reload-history").await;

    // A message the page wrote but never saw acknowledged (the tab went
    // away) is in its saved outbox: the next page sends it; sent again
    // with the same cid, the server keeps one copy.
    let pending = json!([{
        "kind": "u", "id": peer_id, "text": "left in the outbox",
        "cid": "0123456789abcdef0123456789abcdef",
    }]);
    let outbox_key = format!("chatchat.outbox.{me}");
    for round in 0..2 {
        page.js(
            "localStorage.setItem(arguments[0], JSON.stringify(arguments[1]))",
            vec![json!(outbox_key), pending.clone()],
        )
        .await;
        page.client.refresh().await.expect("reload");
        ui::wait_online(&page).await;
        ui::open(&page, &format!("u:{peer_id}")).await;
        ui::wait_stored(&page, "left in the outbox").await;
        if round == 0 {
            let got = next_chat(&mut peer).await;
            assert_eq!(got["msg"], json!("left in the outbox"));
        }
        no_more_chats(&mut peer, Duration::from_millis(300)).await;
        let shown = ui::texts(&page).await;
        let copies = shown.iter().filter(|t| *t == "left in the outbox").count();
        assert_eq!(copies, 1, "shown once (history and the ACK merged by mid)");
        let left = page
            .js(
                "return localStorage.getItem(arguments[0])",
                vec![json!(outbox_key)],
            )
            .await;
        assert_eq!(left, Value::Null, "the outbox is emptied by the ACK");
    }

    // Logging out revokes the token the page held.
    let token = page
        .js(
            "return JSON.parse(localStorage.getItem('chatchat.session')).token",
            vec![],
        )
        .await;
    let token = token.as_str().expect("a token").to_owned();
    page.click("#logout").await;
    page.wait_js(
        "logged out",
        "return !document.getElementById('auth-view').hidden",
        vec![],
    )
    .await;
    let mut other = Client::connect(server.tcp).await;
    other
        .send_raw(&json_frame(
            &json!({"msgid": 1, "v": 2, "rid": 1, "id": me, "token": token}),
            b'\n',
        ))
        .await;
    let refused = other.recv_json().await;
    assert_eq!(
        refused["errno"],
        json!(1),
        "a revoked token logs nobody in: {refused}"
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_an_open_page_loses_and_repeats_nothing() {
    let mut server = WebServer::start(DRAIN);
    let driver = Driver::start().await;
    let page = driver.page("restart", DESKTOP.0, DESKTOP.1).await;
    let me = ui::register_and_log_in(&page, &server.url(), "steady", "pw").await;
    let mut peer = Client::connect(server.tcp).await;
    let peer_id = peer.register("peer", "pw").await;
    peer.login(peer_id, "pw").await;
    ui::add_friend(&page, peer_id).await;
    ui::open(&page, &format!("u:{peer_id}")).await;

    let mut expected = Vec::new();
    for i in 1..=3 {
        let text = format!("before {i}");
        peer.chat(me, &text).await;
        expected.push(text);
    }
    ui::wait_message(&page, "before 3").await;

    server.stop().await;
    page.wait_js(
        "the page notices",
        "return document.body.dataset.status !== 'online'",
        vec![],
    )
    .await;
    // Written while the server is away: shown as sending, sent once it is back.
    page.type_into("#compose-text", "written offline").await;
    page.press_enter("#compose-text").await;
    page.wait_js(
        "my message waiting",
        "return [...document.querySelectorAll('#messages li.msg.mine')]\
         .some(li => li.dataset.state === 'sending')",
        vec![],
    )
    .await;
    page.screenshot("restart-offline").await;

    server.start_again();
    let mut peer = Client::connect(server.tcp).await;
    peer.login(peer_id, "pw").await;
    for i in 1..=5 {
        let text = format!("after {i}");
        peer.chat(me, &text).await;
        expected.push(text);
    }
    // The page may be in its reconnect backoff (at most 8 s by now).
    ui::wait_online_within(&page, Duration::from_secs(20)).await;
    ui::wait_stored(&page, "written offline").await;
    ui::wait_message(&page, "after 5").await;
    // Whatever order the page saw them in, each once.
    let mut shown = ui::texts(&page).await;
    shown.retain(|t| t != "written offline");
    assert_eq!(shown, expected, "every message exactly once, in order");
    let got = next_chat(&mut peer).await;
    assert_eq!(got["msg"], json!("written offline"));
    no_more_chats(&mut peer, Duration::from_millis(500)).await;

    // Killed this time, right after pushing messages the page may not
    // have confirmed yet: it resumes from the seq it holds, not from the
    // server's cursor, and shows nothing twice.
    for i in 1..=3 {
        let text = format!("between {i}");
        peer.chat(me, &text).await;
        expected.push(text);
    }
    ui::wait_message(&page, "between 3").await;
    server.kill();
    server.start_again();
    let mut peer = Client::connect(server.tcp).await;
    peer.login(peer_id, "pw").await;
    for i in 1..=3 {
        let text = format!("killed {i}");
        peer.chat(me, &text).await;
        expected.push(text);
    }
    ui::wait_online_within(&page, Duration::from_secs(20)).await;
    ui::wait_message(&page, "killed 3").await;
    let mut shown = ui::texts(&page).await;
    shown.retain(|t| t != "written offline");
    assert_eq!(shown, expected, "every message exactly once, in order");
    page.screenshot("restart-resumed").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_as_text_never_run() {
    let server = WebServer::start(DRAIN);
    let driver = Driver::start().await;
    let page = driver.page("hostile", DESKTOP.0, DESKTOP.1).await;
    let me = ui::register_and_log_in(&page, &server.url(), "careful", "pw").await;
    let evil_name = "<img src=x onerror=\"window.pwned=1\">\u{202E}evil";
    let mut evil = Client::connect(server.tcp).await;
    let evil_id = evil.register(evil_name, "pw").await;
    evil.login(evil_id, "pw").await;

    let long: String = "😀<b>ok</b> שלום ".repeat(2_600);
    assert!(long.len() > 59_000 && long.len() < 62_000, "{}", long.len());
    let texts = [
        "<script>window.pwned = 2</script>".to_owned(),
        "<img src=x onerror=\"window.pwned=3\"> & &amp; <b>bold</b>".to_owned(),
        "\u{202E}reversed\u{202C} \u{200F}rtl\u{200E} مرحبا".to_owned(),
        "👩‍👩‍👧‍👦🎉 \"quotes\" \\ back\\slash\nsecond line".to_owned(),
        "javascript:alert(1)".to_owned(),
        long.clone(),
    ];
    for text in &texts {
        evil.chat(me, text).await;
    }
    ui::open(&page, &format!("u:{evil_id}")).await;
    ui::wait_message(&page, &texts[texts.len() - 1]).await;
    assert_eq!(ui::texts(&page).await, texts, "shown exactly as sent");
    // And the same texts back from the page arrive byte for byte.
    for text in &texts {
        ui::send_pasted(&page, text).await;
        let got = next_chat(&mut evil).await;
        assert_eq!(got["msg"].as_str(), Some(text.as_str()), "{}", short(text));
    }
    let verdict = page
        .js(
            "const m = document.getElementById('messages');\
             return { pwned: window.pwned === undefined ? null : window.pwned,\
                      elements: m.querySelectorAll('script, img, b').length,\
                      title: document.getElementById('conv-title').textContent }",
            vec![],
        )
        .await;
    assert_eq!(verdict["pwned"], Value::Null, "nothing ran: {verdict}");
    assert_eq!(
        verdict["elements"],
        json!(0),
        "no markup made it: {verdict}"
    );
    assert!(
        verdict["title"]
            .as_str()
            .unwrap_or_default()
            .contains("<img"),
        "the name is shown as text: {verdict}"
    );
    page.js("document.getElementById('messages').scrollTop = 0", vec![])
        .await;
    page.screenshot("hostile-text").await;
    page.close().await;
}
