//! `chatserver --tls-cert --tls-key`: the binary serves TLS 1.2 and 1.3 on
//! the chat port, counts failed handshakes without logging them at warn,
//! closes a connection that never finishes its handshake within the login
//! idle timeout, and picks up a rotated certificate with 100 TLS
//! connections open, dropping none. With `--ws-listen`, the web listener is
//! https and `wss://`. Certificates are made at test time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::{Request, Version};
use testkit::backend::scrape;
use testkit::bin::{Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::certs::{connector, framed, ping, presented, TestCert};
use testkit::prelude::*;
use testkit::run::temp_dir;
use testkit::ws;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_chatserver");

/// The binary on SQLite in `dir`, TLS with `dir`/cert.pem and key.pem, an
/// admin port; stderr piped (warn and above).
fn start(dir: &Path, args: &[&str]) -> (Process, SocketAddr, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["127.0.0.1", "0"])
        .args(CHEAP_HASHING)
        .args(GENEROUS_LIMITS)
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .args(["--admin", &admin.to_string()])
        .args(args)
        .current_dir(dir)
        .env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_CONFIG")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped());
    let (process, addr) = Process::start_listening(&mut command);
    (process, addr, admin)
}

async fn metric(admin: SocketAddr, name: &str) -> f64 {
    *scrape(admin)
        .await
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// The counter once it reaches `want` (the server counts a handshake after
/// the client has seen its end), or its value after 10 s.
async fn counter_reaches(admin: SocketAddr, name: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(admin, name).await;
        if value >= want || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `request` and reads the answer until the server closes.
async fn exchange(mut stream: impl AsyncReadExt + AsyncWriteExt + Unpin, request: &str) -> String {
    let go = async {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    };
    tokio::time::timeout(WAIT, go)
        .await
        .expect("no close in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_chat_port_and_failed_handshakes_counted_not_logged() {
    let dir = temp_dir("server-tls");
    let cert = TestCert::new();
    cert.install(&dir);
    let (process, addr, admin) = start(&dir, &["--login-idle-timeout", "1s"]);
    let tls = connector(&[&cert]);
    let mut conn = framed(addr, &tls).await;
    assert_eq!(ping(&mut conn).await, addr.to_string());

    // Plaintext: no reply in clear, the connection closed; 10 of them.
    for _ in 0..10 {
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let mut frame = Request::Ping.encode(Version::V1, None);
        frame.push(b'\n');
        plain.write_all(&frame).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut got)).await;
        assert!(
            !String::from_utf8_lossy(&got).contains("msgid"),
            "a plaintext client got a chat reply: {got:?}"
        );
        assert!(read.is_ok(), "a plaintext connection was kept open");
    }
    // A client that stalls before or in its handshake is closed by the
    // login idle timeout (1 s here); the one that started it counts as a
    // failed handshake.
    for first in [&b""[..], &[0x16, 0x03, 0x01][..]] {
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(first).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(WAIT, stalled.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "stalled connection: {closed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    assert_eq!(
        metric(admin, "chatserver_tls_handshake_failures_total").await,
        11.0
    );
    // TLS clients are still served (the first one was closed by the
    // login idle timeout meanwhile).
    let mut conn = framed(addr, &tls).await;
    assert_eq!(ping(&mut conn).await, addr.to_string());
    assert_eq!(
        counter_reaches(admin, "chatserver_tls_handshakes_total", 2.0).await,
        2.0
    );
    drop(conn);

    process.signal("TERM");
    let (exit, mut process) = process.wait_timeout_async(WAIT).await;
    assert!(exit.expect("no exit after SIGTERM").success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut process.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !err.to_lowercase().contains("handshake"),
        "handshake failures logged at warn: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_100_open_tls_connections_drops_none() {
    let dir = temp_dir("server-tls-rotate");
    let (old, new) = (TestCert::new(), TestCert::new());
    old.install(&dir);
    let (_process, addr, admin) = start(&dir, &[]);
    let both = connector(&[&old, &new]);
    let mut open = Vec::new();
    for _ in 0..100 {
        let mut conn = framed(addr, &both).await;
        assert_eq!(presented(&conn), old.der);
        ping(&mut conn).await;
        open.push(conn);
    }

    new.install(&dir);
    let deadline = Deadline::after(WAIT);
    loop {
        let conn = framed(addr, &both).await;
        if presented(&conn) == new.der {
            break;
        }
        deadline.check("the new certificate was never presented");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for conn in &mut open {
        ping(conn).await;
    }
    assert!(metric(admin, "chatserver_tls_reloads_total").await >= 1.0);
    // A pair that does not load leaves the current one serving.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let deadline = Deadline::after(WAIT);
    while metric(admin, "chatserver_tls_reload_failures_total").await < 1.0 {
        deadline.check("a broken key was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fresh = framed(addr, &connector(&[&new])).await;
    ping(&mut fresh).await;
    for conn in &mut open {
        ping(conn).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_user_chats_with_a_tls_line_user_and_the_page_comes_over_https() {
    let dir = temp_dir("server-wss");
    let cert = TestCert::new();
    cert.install(&dir);
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_process, addr, admin) = start(&dir, &["--ws-listen", &web.to_string()]);
    let tls = connector(&[&cert]);
    let host = format!("localhost:{}", web.port());

    // The web client's page, over https.
    let get = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let page = exchange(testkit::certs::connect(web, &tls).await, &get).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<!doctype html>"), "{page}");
    // Plain HTTP on that port gets no page, and counts as a failed handshake.
    let plain = exchange(TcpStream::connect(web).await.unwrap(), &get).await;
    assert!(!plain.contains("HTTP/1.1"), "plain HTTP answered: {plain}");
    assert_eq!(
        counter_reaches(admin, "chatserver_tls_handshake_failures_total", 1.0).await,
        1.0
    );

    // A browser's WebSocket, wss:// from that page, and a terminal on the
    // TLS chat port.
    let (mut browser, _closed) = ws::connect_tls(web, &tls).await;
    let browser_id = browser.register("browser", "pw").await;
    browser.login(browser_id, "pw").await;
    let mut terminal = Client::over_io(Box::new(testkit::certs::connect(addr, &tls).await));
    let terminal_id = terminal.register("terminal", "pw").await;
    terminal.login(terminal_id, "pw").await;

    let mid = browser.chat(terminal_id, "over wss").await;
    let push = terminal.recv_chat().await;
    assert_eq!(
        (push.msg.as_str(), push.from, push.mid),
        ("over wss", browser_id, mid)
    );
    terminal.chat(browser_id, "over TLS lines 你好").await;
    let push = browser.recv_chat().await;
    assert_eq!(
        (push.msg.as_str(), push.from),
        ("over TLS lines 你好", terminal_id)
    );
    assert_eq!(
        push.seq,
        Some(1),
        "WebSocket sessions are v2: pushes carry seq"
    );
    // The page, the WebSocket and the terminal: three handshakes.
    assert_eq!(
        counter_reaches(admin, "chatserver_tls_handshakes_total", 3.0).await,
        3.0
    );
}

#[test]
fn tls_cert_without_key_is_a_usage_error() {
    let output = Command::new(BIN)
        .args(["127.0.0.1", "0", "--tls-cert", "/nonexistent.pem"])
        .env_remove("CHAT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--tls-key"), "{err}");
}

#[test]
fn unreadable_certificate_files_exit_1_naming_the_file() {
    let dir = temp_dir("server-tls-missing");
    let output = Command::new(BIN)
        .args(["127.0.0.1", "0", "--tls-cert", "/nonexistent/cert.pem"])
        .args(["--tls-key", "/nonexistent/key.pem"])
        .current_dir(&dir)
        .env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}
