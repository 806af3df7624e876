//! State machine tests: events in, effects out, no sockets.

use serde_json::{json, Value};

use super::*;

fn settings(interactive: bool) -> Settings {
    Settings {
        interactive,
        ..Settings::default()
    }
}

/// The requests sent by these effects, as the frames the driver writes.
fn sent(fx: &[Effect]) -> Vec<Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { rid, request } => {
                let frame = request.encode(VERSION, Some(&Value::from(*rid)));
                Some(serde_json::from_slice(&frame).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn only_sent(fx: &[Effect]) -> Value {
    let mut all = sent(fx);
    assert_eq!(all.len(), 1, "{fx:?}");
    all.remove(0)
}

fn errors(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Show(Output::Error(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn warns(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Show(Output::Warn(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn done(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Show(Output::Done(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn frame(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn login_ok(rid: &Value) -> Vec<u8> {
    frame(json!({
        "msgid": 2, "errno": 0, "rid": rid, "id": 13, "name": "zhang san",
        "friends": [{"id": 15, "name": "li si", "state": "online"}],
        "groups": [{"id": 1, "groupname": "g", "groupdesc": "d",
                    "users": [{"id": 13, "name": "zhang san", "state": "online", "role": "creator"}]}],
        "offlinemsg": [{"msgid": 6, "id": 15, "name": "li si", "toid": 13, "msg": "while you were away",
                        "time": "2024-01-01 09:00:00", "mid": 1, "ts": 1}]
    }))
}

/// A scripted app logged in as 13 through the menu.
fn logged_in(interactive: bool, now: Instant) -> App {
    let mut app = App::new(settings(interactive));
    app.start(now);
    app.on_input("1\n", now);
    app.on_input("13\n", now);
    let fx = app.on_input("secret\n", now);
    let login = only_sent(&fx);
    let fx = app.on_frame(&login_ok(&login["rid"]), now);
    assert!(fx.contains(&Effect::Ask(Ask::Command)), "{fx:?}");
    app
}

#[test]
fn scripted_menu_login_shows_profile_and_offline_messages() {
    let now = Instant::now();
    let mut app = App::new(settings(false));
    assert_eq!(app.start(now), vec![Effect::Ask(Ask::Menu)]);
    assert_eq!(app.on_input("1\n", now), vec![Effect::Ask(Ask::UserId)]);
    assert_eq!(
        app.on_input("13\r\n", now),
        vec![Effect::Ask(Ask::Password)]
    );
    let fx = app.on_input("pa:ss word\n", now);
    let login = only_sent(&fx);
    assert_eq!(login["msgid"], 1);
    assert_eq!(login["v"], 2);
    assert_eq!(login["id"], 13);
    assert_eq!(login["password"], "pa:ss word");
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Ask(_))),
        "waits for the reply"
    );

    let fx = app.on_frame(&login_ok(&login["rid"]), now);
    let Effect::Show(Output::Welcome(profile)) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(profile.id, 13);
    assert_eq!(profile.friends[0].state, Presence::Online);
    assert_eq!(profile.groups[0].users[0].role, Role::Creator);
    let Effect::Show(Output::Chat(chat)) = &fx[1] else {
        panic!("{fx:?}")
    };
    assert_eq!(chat.msg, "while you were away");
    assert_eq!(fx[2], Effect::Ask(Ask::Command));
    assert!(app.is_logged_in());
}

#[test]
fn interactive_menu_is_shown_and_bad_answers_are_explained() {
    let now = Instant::now();
    let mut app = App::new(settings(true));
    assert_eq!(
        app.start(now),
        vec![Effect::Show(Output::Menu), Effect::Ask(Ask::Menu)]
    );
    let fx = app.on_input("9", now);
    assert_eq!(errors(&fx).len(), 1);
    assert!(fx.ends_with(&[Effect::Show(Output::Menu), Effect::Ask(Ask::Menu)]));
    app.on_input("1", now);
    let fx = app.on_input("abc", now);
    assert!(errors(&fx)[0].contains("positive number"));
    assert_eq!(app.on_input("3", now), vec![Effect::Exit(EXIT_OK)]);
}

#[test]
fn bad_credentials_exit_3_in_scripts_and_return_to_the_menu_interactively() {
    let now = Instant::now();
    for interactive in [false, true] {
        let mut app = App::new(settings(interactive));
        app.start(now);
        app.on_input("1", now);
        app.on_input("13", now);
        let login = only_sent(&app.on_input("wrong", now));
        let fx = app.on_frame(
            &frame(json!({"msgid": 2, "errno": 1, "rid": login["rid"],
                          "errmsg": "incorrect id or password!"})),
            now,
        );
        assert_eq!(
            errors(&fx),
            vec!["login failed: incorrect id or password! (errno 1)".to_owned()]
        );
        if interactive {
            assert!(fx.ends_with(&[Effect::Show(Output::Menu), Effect::Ask(Ask::Menu)]));
        } else {
            assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_CREDENTIALS)));
        }
    }
}

#[test]
fn already_logged_in_at_first_login_is_not_retried() {
    let now = Instant::now();
    let mut app = App::new(Settings {
        auto_login: Some((13, Some("pw".into()))),
        ..settings(false)
    });
    let login = only_sent(&app.start(now));
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 2, "rid": login["rid"]})),
        now,
    );
    assert!(errors(&fx)[0].contains("this account is using"), "{fx:?}");
    assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_CREDENTIALS)));
}

#[test]
fn auto_login_without_password_asks_for_it() {
    let now = Instant::now();
    let mut app = App::new(Settings {
        auto_login: Some((13, None)),
        ..settings(false)
    });
    assert_eq!(app.start(now), vec![Effect::Ask(Ask::Password)]);
    let login = only_sent(&app.on_input("pw\n", now));
    assert_eq!(login["password"], "pw");
}

#[test]
fn registration_prints_the_new_id_and_returns_to_the_menu() {
    let now = Instant::now();
    let mut app = App::new(settings(false));
    app.start(now);
    assert_eq!(app.on_input("2", now), vec![Effect::Ask(Ask::UserName)]);
    assert_eq!(
        app.on_input("王小明 😀", now),
        vec![Effect::Ask(Ask::Password)]
    );
    let register = only_sent(&app.on_input("pw", now));
    assert_eq!(register["msgid"], 4);
    assert_eq!(register["name"], "王小明 😀");
    let fx = app.on_frame(
        &frame(json!({"msgid": 5, "errno": 0, "id": 22, "rid": register["rid"]})),
        now,
    );
    assert_eq!(
        fx,
        vec![
            Effect::Show(Output::Registered {
                id: 22,
                name: "王小明 😀".into()
            }),
            Effect::Ask(Ask::Menu)
        ]
    );
    // A taken name is an error with the server's message.
    app.on_input("2", now);
    app.on_input("taken", now);
    let register = only_sent(&app.on_input("pw", now));
    let fx = app.on_frame(
        &frame(json!({"msgid": 5, "errno": 1, "errmsg": "name taken", "rid": register["rid"]})),
        now,
    );
    assert_eq!(
        errors(&fx),
        vec!["registration failed: name taken (errno 1)".to_owned()]
    );
}

#[test]
fn every_command_gets_a_result() {
    let now = Instant::now();
    let mut app = logged_in(false, now);

    let fx = app.on_input("chat:15:hi: there 😀\n", now);
    let chat = only_sent(&fx);
    assert_eq!(chat["msgid"], 6);
    assert_eq!(chat["toid"], 15);
    assert_eq!(chat["msg"], "hi: there 😀");
    assert_eq!(chat["id"], 13);
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Command)));
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 0, "mid": 77, "rid": chat["rid"]})),
        now,
    );
    assert_eq!(done(&fx), vec!["sent to 15".to_owned()]);

    let chat = only_sent(&app.on_input("chat:99:hello", now));
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 4, "rid": chat["rid"]})),
        now,
    );
    assert_eq!(
        errors(&fx),
        vec!["chat to 99 failed: no such user or group (errno 4)".to_owned()]
    );

    let create = only_sent(&app.on_input("creategroup:rust:a: b", now));
    assert_eq!(create["groupname"], "rust");
    assert_eq!(create["groupdesc"], "a: b");
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 0, "groupid": 9, "rid": create["rid"]})),
        now,
    );
    assert_eq!(done(&fx), vec!["created group: id 9 rust".to_owned()]);
    let fx = app.on_input("groups", now);
    let Effect::Show(Output::Groups(groups)) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(groups.iter().map(|g| g.id).collect::<Vec<_>>(), vec![1, 9]);

    let add = only_sent(&app.on_input("addfriend:16", now));
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 0, "rid": add["rid"]})),
        now,
    );
    assert_eq!(done(&fx), vec!["friend added: id 16".to_owned()]);
    let fx = app.on_input("friends", now);
    let Effect::Show(Output::Friends(friends)) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(friends.len(), 2);

    let join = only_sent(&app.on_input("addgroup:5", now));
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 4, "errmsg": "no such group", "rid": join["rid"]})),
        now,
    );
    assert_eq!(
        errors(&fx),
        vec!["addgroup 5 failed: no such group (errno 4)".to_owned()]
    );

    let gc = only_sent(&app.on_input("groupchat:1:大家好", now));
    assert_eq!(gc["msgid"], 10);
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 5, "rid": gc["rid"]})),
        now,
    );
    assert!(errors(&fx)[0].contains("not a member"));

    let fx = app.on_input("nonsense", now);
    assert!(errors(&fx)[0].contains("help"));
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Command)));
    assert_eq!(
        app.on_input("help", now),
        vec![Effect::Show(Output::Help), Effect::Ask(Ask::Command)]
    );
}

#[test]
fn loginout_logs_out_and_shows_the_menu() {
    let now = Instant::now();
    let mut app = logged_in(true, now);
    let fx = app.on_input("loginout", now);
    let logout = only_sent(&fx);
    assert_eq!(logout["msgid"], 3);
    assert!(fx.ends_with(&[Effect::Show(Output::Menu), Effect::Ask(Ask::Menu)]));
    assert!(!app.is_logged_in());
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 0, "rid": logout["rid"]})),
        now,
    );
    assert_eq!(done(&fx), vec!["logged out".to_owned()]);
    // No re-login after a reconnect once logged out.
    app.on_disconnected("test", now);
    assert!(sent(&app.on_connected(now)).is_empty());
}

#[test]
fn pushed_messages_are_shown_and_json_mode_shows_raw_frames() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    let push = json!({"msgid": 10, "id": 15, "name": "li si", "groupid": 1, "msg": "hey",
                      "time": "t", "mid": 3, "ts": 4});
    let fx = app.on_frame(&frame(push.clone()), now);
    assert!(matches!(&fx[..], [Effect::Show(Output::Chat(c))] if c.msg == "hey"));
    // A live message shows its sender online in the lists.
    app.profile.as_mut().unwrap().friends[0].state = Presence::Offline;
    app.on_frame(&frame(push.clone()), now);
    assert_eq!(app.profile().unwrap().friends[0].state, Presence::Online);

    let mut app = App::new(Settings {
        json: true,
        auto_login: Some((13, Some("pw".into()))),
        ..settings(false)
    });
    let login = only_sent(&app.start(now));
    let fx = app.on_frame(&login_ok(&login["rid"]), now);
    assert!(matches!(&fx[0], Effect::Show(Output::Raw(text)) if text.contains("\"msgid\":2")));
    assert!(!fx
        .iter()
        .any(|e| matches!(e, Effect::Show(Output::Chat(_) | Output::Welcome(_)))));
    let fx = app.on_frame(&frame(push), now);
    assert!(matches!(&fx[..], [Effect::Show(Output::Raw(_))]), "{fx:?}");
}

#[test]
fn bad_frames_are_reported_not_fatal() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    for bad in [
        &b"garbage"[..],
        b"\xff\xfe\xfd",
        b"[1,2,3]",
        b"{\"msgid\":6}",
        b"{\"msgid\":2,\"errno\":0}",
        b"{\"msgid\":11,\"errno\":6,\"errmsg\":\"bad request\"}",
        b"{\"msgid\":77}",
        b"{\"msgid\":5,\"errno\":0}",
    ] {
        let fx = app.on_frame(bad, now);
        assert!(
            !fx.is_empty() && fx.iter().all(|e| matches!(e, Effect::Show(_))),
            "{:?} -> {fx:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(app.is_logged_in());
}

#[test]
fn reconnect_logs_in_again_and_reports_what_was_lost() {
    let now = Instant::now();
    let mut app = logged_in(true, now);
    only_sent(&app.on_input("chat:15:in flight", now));

    only_sent(&app.on_input("addfriend:16", now));

    let fx = app.on_disconnected("the server closed the connection", now);
    assert!(warns(&fx)[0].contains("connection lost"));
    // The chat is sent again after the login; the rest is reported.
    assert_eq!(
        errors(&fx),
        vec!["not confirmed, the connection was lost: addfriend:16".to_owned()]
    );
    let fx = app.on_input("chat:15:while down", now);
    assert_eq!(
        errors(&fx),
        vec!["not sent (not connected): chat:15:while down".to_owned()]
    );
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Command)));
    assert_eq!(app.next_deadline(), None, "no timers while disconnected");

    let t1 = now + Duration::from_secs(3);
    let fx = app.on_connected(t1);
    let login = only_sent(&fx);
    assert_eq!(login["password"], "secret");
    let fx = app.on_input("chat:15:while logging in", t1);
    assert!(errors(&fx)[0].starts_with("not sent (still logging in again)"));

    // The old session is still closing: errno 2, retried a second later.
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 2, "rid": login["rid"]})),
        t1,
    );
    assert!(errors(&fx).is_empty(), "{fx:?}");
    assert!(warns(&fx)[0].contains("retrying"));
    assert_eq!(app.next_deadline(), Some(t1 + RELOGIN_RETRY_STEP));
    let t2 = t1 + RELOGIN_RETRY_STEP;
    let login = only_sent(&app.on_tick(t2));
    assert_eq!(login["msgid"], 1);
    let fx = app.on_frame(&login_ok(&login["rid"]), t2);
    assert!(warns(&fx)[0].starts_with("logged in again as 13"));
    let again = only_sent(&fx);
    assert_eq!(again["msg"], "in flight");
    assert!(warns(&fx)[1].contains("sending again 1 message(s)"));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Show(Output::Chat(_)))));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Ask(_))),
        "prompt still out"
    );
    assert!(app.is_logged_in());
    assert_eq!(sent(&app.on_input("chat:15:back", t2)).len(), 1);
}

#[test]
fn relogin_gives_up_after_the_window() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    app.on_disconnected("reset", now);
    let login = only_sent(&app.on_connected(now));
    let late = now + Settings::default().relogin_window + Duration::from_secs(1);
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 2, "rid": login["rid"]})),
        late,
    );
    assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_CREDENTIALS)));
}

#[test]
fn scripted_lines_wait_for_the_relogin() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    app.on_disconnected("reset", now);
    assert!(app.on_input("chat:15:held", now).is_empty());
    let login = only_sent(&app.on_connected(now));
    let fx = app.on_frame(&login_ok(&login["rid"]), now);
    let chat = only_sent(&fx);
    assert_eq!(chat["msg"], "held");
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Command)));
}

#[test]
fn scripted_lines_held_are_reported_if_reconnecting_fails() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    app.on_disconnected("reset", now);
    app.on_input("chat:15:held", now);
    let fx = app.on_reconnect_gave_up("refused");
    assert_eq!(
        errors(&fx),
        vec![
            "could not reconnect: refused".to_owned(),
            "not sent: chat:15:held".to_owned()
        ]
    );
    assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_CONNECTION)));
}

#[test]
fn heartbeat_and_dead_links() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    let interval = Settings::default().ping_interval;
    assert_eq!(app.next_deadline(), Some(now + interval));
    assert!(app.on_tick(now + interval / 2).is_empty());
    let ping = only_sent(&app.on_tick(now + interval));
    assert_eq!(ping["msgid"], 12);
    assert_eq!(ping["v"], 2);
    // PONG in time: the next ping goes out.
    app.on_frame(
        &frame(json!({"msgid": 13, "rid": ping["rid"], "server": "s1", "load": 1})),
        now + interval,
    );
    only_sent(&app.on_tick(now + interval * 2));
    // No answer for a whole interval: the link is dead.
    let fx = app.on_tick(now + interval * 3);
    assert!(matches!(&fx[..], [Effect::Disconnect(reason)] if reason.contains("heartbeat")));

    // A request unanswered for the reply timeout: dead too.
    let mut app = logged_in(false, now);
    only_sent(&app.on_input("chat:15:x", now));
    let timeout = Settings::default().reply_timeout;
    assert_eq!(app.next_deadline(), Some(now + timeout));
    let fx = app.on_tick(now + timeout);
    assert!(matches!(&fx[..], [Effect::Disconnect(reason)] if reason.contains("no reply")));
}

#[test]
fn end_of_script_lingers_then_exits() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    only_sent(&app.on_input("chat:15:last words", now));
    assert!(app.on_input_eof(now).is_empty());
    let linger = Settings::default().linger;
    assert_eq!(app.next_deadline(), Some(now + linger));
    // A push during the linger is still shown.
    let fx = app.on_frame(
        &frame(json!({"msgid": 6, "id": 15, "name": "li si", "toid": 13, "msg": "bye"})),
        now,
    );
    assert_eq!(fx.len(), 1);
    let fx = app.on_tick(now + linger);
    assert_eq!(
        errors(&fx),
        vec!["no reply before exit: chat:15:last words".to_owned()]
    );
    assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_OK)));

    // At the menu there is nothing to wait for.
    let mut app = App::new(settings(false));
    app.start(now);
    assert_eq!(app.on_input_eof(now), vec![Effect::Exit(EXIT_OK)]);
    // In the middle of a login it is a usage error.
    let mut app = App::new(settings(false));
    app.start(now);
    app.on_input("1", now);
    assert_eq!(
        app.on_input_eof(now).last(),
        Some(&Effect::Exit(EXIT_USAGE))
    );
    // Lost connection at the end: exit 2.
    let mut app = logged_in(false, now);
    app.on_input_eof(now);
    app.on_disconnected("reset", now);
    assert_eq!(
        app.on_tick(now + linger).last(),
        Some(&Effect::Exit(EXIT_CONNECTION))
    );
}

#[test]
fn interactive_eof_and_interrupt() {
    let now = Instant::now();
    let mut app = logged_in(true, now);
    let fx = app.on_interrupt(now);
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Command)));
    assert_eq!(app.on_input_eof(now), vec![Effect::Exit(EXIT_OK)]);

    let mut app = App::new(settings(true));
    app.start(now);
    app.on_input("1", now);
    assert!(app
        .on_interrupt(now)
        .ends_with(&[Effect::Show(Output::Menu), Effect::Ask(Ask::Menu)]));
    assert_eq!(app.on_interrupt(now), vec![Effect::Exit(EXIT_OK)]);
}

#[test]
fn quit_in_a_script_lingers_like_the_end_of_input() {
    let now = Instant::now();
    let mut app = logged_in(false, now);
    assert!(app.on_input("quit", now).is_empty());
    assert_eq!(
        app.on_tick(now + Settings::default().linger).last(),
        Some(&Effect::Exit(EXIT_OK))
    );
    let mut app = logged_in(true, now);
    assert_eq!(app.on_input("quit", now), vec![Effect::Exit(EXIT_OK)]);
}

#[test]
fn registration_lost_with_the_connection_is_reported() {
    let now = Instant::now();
    let mut app = App::new(settings(false));
    app.start(now);
    app.on_input("2", now);
    app.on_input("name", now);
    only_sent(&app.on_input("pw", now));
    let fx = app.on_disconnected("reset", now);
    assert!(errors(&fx)[0].contains("may or may not"));
    assert_eq!(fx.last(), Some(&Effect::Ask(Ask::Menu)));
    // Registering while disconnected is refused at once.
    app.on_input("2", now);
    app.on_input("name", now);
    let fx = app.on_input("pw", now);
    assert!(sent(&fx).is_empty());
    assert!(errors(&fx)[0].contains("not connected"));
}

/// A v2 delivery LOGIN_ACK: inbox `seq` and a token, no offline list.
fn login_v2(rid: &Value, seq: i64, token: &str) -> Vec<u8> {
    frame(json!({
        "msgid": 2, "errno": 0, "rid": rid, "id": 13, "name": "zhang san",
        "friends": [], "groups": [], "offlinemsg": [], "seq": seq, "token": token
    }))
}

fn push(seq: i64, text: &str) -> Vec<u8> {
    frame(
        json!({"msgid": 6, "id": 15, "name": "li si", "toid": 13, "msg": text,
                 "time": "t", "mid": 100 + seq, "seq": seq}),
    )
}

fn chats(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Show(Output::Chat(chat)) => Some(chat.msg.clone()),
            _ => None,
        })
        .collect()
}

/// Logged in as 13 on a v2 delivery server whose inbox holds 3 messages
/// (cursor at 1); the backlog and the PONG that ends it are consumed.
fn logged_in_v2(now: Instant) -> App {
    let mut app = App::new(settings(false));
    app.start(now);
    app.on_input("1\n", now);
    app.on_input("13\n", now);
    let login = only_sent(&app.on_input("secret\n", now));
    assert!(
        login.get("since").is_none(),
        "first login: the server's cursor"
    );
    let fx = app.on_frame(&login_v2(&login["rid"], 3, "tok-1"), now);
    let sync = only_sent(&fx);
    assert_eq!(sync["msgid"], 12, "a PING marks the end of the backlog");
    assert_eq!(chats(&app.on_frame(&push(2, "two"), now)), vec!["two"]);
    assert_eq!(chats(&app.on_frame(&push(3, "three"), now)), vec!["three"]);
    app.on_frame(
        &frame(json!({"msgid": 13, "rid": sync["rid"], "server": "s", "load": 0})),
        now,
    );
    app
}

#[test]
fn shown_messages_are_confirmed_in_batches_and_never_shown_twice() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    assert_eq!(app.next_deadline(), Some(now + DELIVERED_DELAY));
    let t1 = now + DELIVERED_DELAY;
    let delivered = only_sent(&app.on_tick(t1));
    assert_eq!(
        delivered,
        json!({"msgid": 14, "v": 2, "seq": 3, "rid": delivered["rid"]})
    );
    assert!(app.on_tick(t1 + DELIVERED_DELAY).is_empty(), "nothing new");

    // A replayed push is dropped, raw frames too.
    assert!(app.on_frame(&push(3, "three"), t1).is_empty());
    // 5 overtook 4: shown, but only 4 and 5 together are confirmed.
    assert_eq!(chats(&app.on_frame(&push(5, "five"), t1)), vec!["five"]);
    let t2 = t1 + DELIVERED_DELAY;
    assert!(sent(&app.on_tick(t2)).is_empty());
    assert_eq!(chats(&app.on_frame(&push(4, "four"), t2)), vec!["four"]);
    let t3 = t2 + DELIVERED_DELAY;
    assert_eq!(only_sent(&app.on_tick(t3))["seq"], 5);

    // Before LOGOUT, what was shown is confirmed.
    app.on_frame(&push(6, "six"), t3);
    let fx = app.on_input("loginout", t3);
    let all = sent(&fx);
    assert_eq!(
        (all[0]["msgid"].clone(), all[0]["seq"].clone()),
        (json!(14), json!(6))
    );
    assert_eq!(all[1]["msgid"], 3);
}

#[test]
fn reconnect_uses_the_token_and_since_then_the_password_if_refused() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    app.on_disconnected("reset", now);
    let login = only_sent(&app.on_connected(now));
    assert_eq!(login["token"], "tok-1");
    assert_eq!(login["since"], 3);
    assert!(login.get("password").is_none(), "{login}");

    // Token refused: the password, still with since.
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 1, "rid": login["rid"]})),
        now,
    );
    assert!(errors(&fx).is_empty(), "{fx:?}");
    let login = only_sent(&fx);
    assert_eq!(login["password"], "secret");
    assert_eq!(login["since"], 3);
    let fx = app.on_frame(&login_v2(&login["rid"], 4, "tok-2"), now);
    assert_eq!(only_sent(&fx)["msgid"], 12);
    assert!(app.on_frame(&push(3, "three"), now).is_empty());
    assert_eq!(chats(&app.on_frame(&push(4, "four"), now)), vec!["four"]);

    // A refused password is final.
    app.on_disconnected("reset", now);
    let login = only_sent(&app.on_connected(now));
    assert_eq!(login["token"], "tok-2");
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 1, "rid": login["rid"]})),
        now,
    );
    let login = only_sent(&fx);
    let fx = app.on_frame(
        &frame(json!({"msgid": 2, "errno": 1, "rid": login["rid"]})),
        now,
    );
    assert_eq!(fx.last(), Some(&Effect::Exit(EXIT_CREDENTIALS)));
}

#[test]
fn chat_sends_carry_a_cid_and_are_sent_again_with_it() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    let first = only_sent(&app.on_input("chat:15:one", now));
    let second = only_sent(&app.on_input("groupchat:1:two", now));
    let cid = first["cid"].as_str().unwrap().to_owned();
    assert_ne!(json!(cid), second["cid"]);
    app.on_disconnected("reset", now);
    let login = only_sent(&app.on_connected(now));
    let fx = app.on_frame(&login_v2(&login["rid"], 3, "tok-1"), now);
    let again = sent(&fx);
    assert_eq!(again[0]["msgid"], 12);
    assert_eq!(
        (again[1]["msg"].clone(), again[1]["cid"].clone()),
        (json!("one"), json!(cid))
    );
    assert_eq!(again[2]["cid"], second["cid"]);
    let fx = app.on_frame(
        &frame(json!({"msgid": 11, "errno": 0, "mid": 7, "rid": again[1]["rid"]})),
        now,
    );
    assert_eq!(done(&fx), vec!["sent to 15".to_owned()]);
}

#[test]
fn goaway_confirms_then_reconnects_within_retry_ms() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    let fx = app.on_frame(
        &frame(json!({"msgid": 16, "reason": "shutdown", "retry_ms": 500})),
        now,
    );
    assert_eq!(only_sent(&fx)["msgid"], 14);
    let Some(Effect::Reconnect { after, .. }) = fx.last() else {
        panic!("{fx:?}")
    };
    assert!(*after <= Duration::from_millis(500));
    assert!(warns(&fx)[0].contains("going away (shutdown)"));
}

#[test]
fn history_pages_continue_from_the_oldest_shown() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    let ask = only_sent(&app.on_input("history:15", now));
    assert_eq!(
        ask,
        json!({"msgid": 15, "v": 2, "with": 15, "limit": HISTORY_PAGE, "rid": ask["rid"]})
    );
    let page = |rid: &Value, mids: &[i64], more: bool| {
        let messages: Vec<Value> = mids
            .iter()
            .map(|mid| {
                json!({"msgid": 6, "id": 15, "name": "li si", "toid": 13,
                              "msg": format!("m{mid}"), "time": "t", "mid": mid})
            })
            .collect();
        frame(json!({"msgid": 11, "errno": 0, "rid": rid, "messages": messages, "more": more}))
    };
    let fx = app.on_frame(&page(&ask["rid"], &[30, 29], true), now);
    let Effect::Show(Output::History { messages, more, .. }) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        (messages[0].msg.as_str(), *more),
        ("m29", true),
        "oldest first"
    );
    let ask = only_sent(&app.on_input("history:15", now));
    assert_eq!(ask["before"], 29);
    app.on_frame(&page(&ask["rid"], &[28], false), now);
    // The start was reached: the next one begins again at the newest.
    let ask = only_sent(&app.on_input("history:15", now));
    assert!(ask.get("before").is_none());
    // Another conversation starts at its newest.
    app.on_frame(&page(&ask["rid"], &[30, 29], true), now);
    let ask = only_sent(&app.on_input("history:#1", now));
    assert_eq!(
        (ask["groupid"].clone(), ask.get("before")),
        (json!(1), None)
    );
}

#[test]
fn a_reply_behind_a_long_backlog_is_waited_for_while_frames_arrive() {
    let now = Instant::now();
    let mut app = logged_in_v2(now);
    only_sent(&app.on_input("chat:15:x", now));
    let timeout = Settings::default().reply_timeout;
    // Pushes keep coming: the link is alive, the reply is behind them.
    let later = now + timeout - Duration::from_secs(1);
    app.on_frame(&push(4, "four"), later);
    let fx = app.on_tick(now + timeout);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Disconnect(_))),
        "{fx:?}"
    );
    let fx = app.on_tick(later + timeout);
    assert!(matches!(&fx[..], [Effect::Disconnect(reason)] if reason.contains("no reply")));
}
