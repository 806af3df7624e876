//! The real binary in a pseudo-terminal (interactive mode, rustyline)
//! against the real chat server: log in from the menu, receive a message
//! while a line is half typed, and that line stays intact.

use std::process::Command;

use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession;
use expectrl::{Eof, Expect, Regex, Session};
use testkit::bin::code;
use testkit::cli::{logged_in, register};
use testkit::server::{ChatServer, Storage};
use testkit::WAIT;

/// A `chatclient` in a pseudo-terminal, with everything it showed so far
/// kept for failure messages.
struct Term {
    session: OsSession,
    screen: Vec<u8>,
}

impl Term {
    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.screen)
            .escape_debug()
            .to_string()
    }

    /// Waits (at most [`WAIT`]) for `needle` on the terminal.
    fn expect(&mut self, needle: &str) {
        match self.session.expect(needle) {
            Ok(found) => self.screen.extend_from_slice(found.before()),
            Err(e) => panic!(
                "{e}: no {needle:?} on the terminal; it showed {}",
                self.shown()
            ),
        }
        self.screen.extend_from_slice(needle.as_bytes());
    }

    /// Waits for `pattern`; returns what matched.
    fn expect_regex(&mut self, pattern: &str) -> String {
        match self.session.expect(Regex(pattern)) {
            Ok(found) => {
                self.screen.extend_from_slice(found.before());
                self.screen.extend_from_slice(&found[0]);
                String::from_utf8_lossy(&found[0]).to_string()
            }
            Err(e) => panic!(
                "{e}: nothing matched {pattern:?}; the terminal showed {}",
                self.shown()
            ),
        }
    }

    fn send(&mut self, text: &str) {
        self.session.send(text).unwrap();
    }
}

#[test]
fn message_arrives_while_typing_and_the_typed_line_stays_intact() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(ChatServer::start(Storage::Sqlite));
    let port = server.port();
    let (alice_id, bob_id) = rt.block_on(async {
        (
            register(port, "alice", "pw-a").await,
            register(port, "bob", "pw-b").await,
        )
    });
    let mut bob = rt.block_on(logged_in(port, bob_id, "pw-b", &[]));

    let mut command = Command::new(env!("CARGO_BIN_EXE_chatclient"));
    command
        .args(["127.0.0.1", &port.to_string()])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut session = Session::spawn(command).expect("chatclient in a pty");
    session.set_expect_timeout(Some(WAIT));
    let mut alice = Term {
        session,
        screen: Vec::new(),
    };

    // The menu, one answer per prompt (typed-ahead input can be dropped).
    alice.expect("choice: ");
    alice.send("1\r");
    alice.expect("userid: ");
    alice.send(&format!("{alice_id}\r"));
    alice.expect("userpassword: ");
    alice.send("pw-a\r");
    alice.expect("> ");
    assert!(
        !alice.shown().contains("pw-a"),
        "the password was echoed: {}",
        alice.shown()
    );

    // Half a line, not yet Enter.
    let partial = format!("chat:{bob_id}:half typed 你好");
    alice.send(&partial);
    alice.expect("half typed 你好");

    // Meanwhile bob writes: it shows above the line being typed...
    rt.block_on(async {
        bob.send(&format!("chat:{alice_id}:incoming while you type\n"))
            .await;
        bob.expect_out(&format!("sent to {alice_id}")).await;
    });
    alice.expect(&format!("{bob_id} bob: incoming while you type"));
    // ...and the prompt comes back with the half line as it was.
    let redrawn = alice.expect_regex(r"> (\x1b\[[0-9;?]*[A-Za-z])*chat:\d+:half typed 你好");
    assert!(redrawn.ends_with(&partial), "redrawn as {redrawn:?}");

    // Enter finishes it: sent as typed, the whole text arrives.
    alice.send(" (done)\r");
    alice.expect(&format!("sent to {bob_id}"));
    let line = rt.block_on(bob.expect_out("half typed"));
    assert!(
        line.starts_with('[')
            && line.ends_with(&format!("] {alice_id} alice: half typed 你好 (done)")),
        "{line:?}"
    );

    // quit ends the session with exit code 0.
    alice.expect("> ");
    alice.send("quit\r");
    if let Err(e) = alice.session.expect(Eof) {
        panic!("{e}: chatclient did not exit; it showed {}", alice.shown());
    }
    match alice.session.get_process().wait().unwrap() {
        WaitStatus::Exited(_, 0) => {}
        other => panic!(
            "chatclient ended with {other:?}; it showed {}",
            alice.shown()
        ),
    }

    rt.block_on(async {
        let (status, _, err) = bob.finish().await;
        assert_eq!(code(status), 0, "{err:#?}");
        server.stop().await;
    });
}
