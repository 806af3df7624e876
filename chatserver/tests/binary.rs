//! The `chatserver` binary itself: options, exit codes, the ready line,
//! and clean shutdown on signals.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::bin::{run_to_exit, Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;
use testkit::run::{fresh_mariadb_url, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_chatserver");

fn chatserver(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        // A short drain: these tests time the whole shutdown.
        .args(["--drain-period", "1s"])
        .current_dir(dir)
        .env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_CONFIG")
        .env("RUST_LOG", "warn");
    command
}

/// [`chatserver`] with the cheapest password hashing.
fn cheap_chatserver(dir: &Path, args: &[&str]) -> Command {
    let mut command = chatserver(dir, args);
    command.args(CHEAP_HASHING).args(GENEROUS_LIMITS);
    command
}

/// Runs to completion within 20 s; returns (exit code, stderr).
fn run(command: Command) -> (i32, String) {
    let exit = run_to_exit(command, Duration::from_secs(20));
    (exit.code, exit.stderr)
}

/// Starts the server (stderr inherited) and waits for its `listening on
/// ADDR` line.
fn start(mut command: Command) -> (Process, std::net::SocketAddr) {
    Process::start_listening(command.stderr(Stdio::inherit()))
}

#[test]
fn help_names_every_option() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for option in [
        "--config",
        "--database-url",
        "CHAT_DATABASE_URL",
        "--max-frame",
        "--hash-memory-kib",
        "--hash-iterations",
        "--hash-threads",
        "--login-idle-timeout",
        "--v2-idle-timeout",
        "--frame-stall-timeout",
        "--outbound-queue",
        "--max-connections",
        "--max-connections-per-ip",
        "--proxy-protocol-from",
        "--tls-cert",
        "--tls-key",
        "CHAT_TLS_CERT",
        "--login-failures-per-account-address",
        "--login-failures-per-address",
        "--login-failures-per-account",
        "--register-per-address",
        "--create-group-per-user",
        "--max-groups-per-user",
        "--db-connect-timeout",
        "--name",
        "--worker-threads",
        "--log-format",
        "--admin",
        "--admin-token",
        "--drain-period",
        "--check",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

#[test]
fn bad_arguments_exit_1_naming_the_option() {
    let dir = temp_dir("bin-badargs");
    let (code, stderr) = run(chatserver(&dir, &["127.0.0.1", "0", "--max-frame", "lots"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("--max-frame"), "{stderr}");
    let (code, stderr) = run(chatserver(&dir, &["127.0.0.1", "0", "--log-format", "xml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("log-format"), "{stderr}");
    std::fs::write(
        dir.join("bad.toml"),
        "outbound_queue = 3\nno_such_key = 1\n",
    )
    .unwrap();
    let (code, stderr) = run(chatserver(&dir, &["--config", "bad.toml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

#[test]
fn busy_port_exits_2() {
    let dir = temp_dir("bin-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run(chatserver(&dir, &["127.0.0.1", &port]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

#[test]
fn unreachable_database_exits_3_after_retrying() {
    let dir = temp_dir("bin-nodb");
    let started = Instant::now();
    let (code, stderr) = run(chatserver(
        &dir,
        &[
            "127.0.0.1",
            "0",
            "--database-url",
            "mysql://root@127.0.0.1:1/chat",
            "--db-connect-timeout",
            "1s",
        ],
    ));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it retried"
    );
    assert!(stderr.contains("database"), "{stderr}");
}

/// No options at all: an embedded chat.db in the working directory. SIGTERM
/// then exits 0 within 5 s with the logged-in users recorded offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_the_embedded_default_and_shuts_down_cleanly() {
    let dir = temp_dir("bin-default");
    let (child, addr) = start(cheap_chatserver(&dir, &["127.0.0.1", "0"]));
    assert!(
        dir.join("chat.db").exists(),
        "chat.db created in the working directory"
    );
    let (mut alice, id) = Client::user(addr, "alice").await;
    let (mut bob, _) = Client::user(addr, "bob").await;
    let url = format!("sqlite://{}/chat.db", dir.display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let online: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE state = 'online'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(online, 2);

    let stopping = Instant::now();
    child.signal("TERM");
    let (status, _) = child.wait_timeout_async(Duration::from_secs(5)).await;
    let status = status.expect("exits within 5 s");
    assert_eq!(status.code(), Some(0));
    assert!(stopping.elapsed() < Duration::from_secs(5));
    // Both (v2) clients are told to go elsewhere, then see the close.
    for client in [&mut alice, &mut bob] {
        let frames = client.expect_closed(WAIT).await;
        assert!(
            matches!(&frames[..], [Incoming { frame: ServerFrame::GoAway(goaway), .. }] if goaway.reason == "shutdown" && goaway.retry_ms > 0),
            "{frames:?}"
        );
    }
    let online: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE state = 'online'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(online, 0, "users recorded offline at shutdown");

    // A restart on the same file keeps the data.
    let (mut child, addr) = start(chatserver(&dir, &["127.0.0.1", "0"]));
    let mut again = Client::connect(addr).await;
    let ack = again.login(id, "pw").await;
    assert_eq!(ack.name, "alice");
    child.signal("INT");
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .expect("exits on SIGINT");
    assert_eq!(status.code(), Some(0));
}

/// The same binary against MariaDB: the database is created when missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_missing_mariadb_database() {
    let dir = temp_dir("bin-maria");
    let url = fresh_mariadb_url();
    let (mut child, addr) = start(chatserver(
        &dir,
        &[
            "127.0.0.1",
            "0",
            "--database-url",
            &url,
            "--hash-memory-kib",
            "64",
        ],
    ));
    let mut client = Client::connect(addr).await;
    let id = client.register("maria", "pw").await;
    client.login(id, "pw").await;
    child.signal("TERM");
    let status = child.wait_timeout(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM users")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names, vec!["maria".to_owned()]);
}

/// While a clean shutdown waits for a session stuck writing to a peer that
/// stopped reading, a second signal exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let dir = temp_dir("bin-second");
    let (mut child, addr) = start(cheap_chatserver(&dir, &["127.0.0.1", "0"]));
    let (sleeper, sleeper_id) = Client::user(addr, "sleeper").await;
    let (mut sender, _) = Client::user(addr, "sender").await;
    // Far more than the socket buffers hold: the sleeper's session blocks in a write.
    let padding = "z".repeat(8 * 1024);
    for i in 0..1000 {
        sender
            .send_v2(&req::chat_at(sleeper_id, &i.to_string(), &padding))
            .await;
    }
    sender.ping().await;
    child.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.is_running(),
        "the first signal waits for the stuck session"
    );
    let second = Instant::now();
    child.signal("TERM");
    let status = child
        .wait_timeout(Duration::from_secs(2))
        .expect("exits at once");
    assert_eq!(status.code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(1));
    drop(sleeper);
}
