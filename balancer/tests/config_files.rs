//! Config files that would hang or bloat a naive reader, and a file with a
//! secret on a bad line, against the real binary: traffic keeps flowing,
//! `/status` says why without echoing the file, and SIGTERM still exits
//! within `shutdown_grace`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::get_with;
use testkit::backend::{Mode, TestBackend};
use testkit::bin::Process;
use testkit::lb::config_toml;
use testkit::{free_port, run, who_serves, Deadline, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

async fn status(admin: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = get_with(admin, "/status", "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `/status` shows `n` rejected reloads and returns it.
async fn rejected(admin: std::net::SocketAddr, n: u64) -> serde_json::Value {
    let deadline = Deadline::after(WAIT);
    loop {
        let v = status(admin).await;
        if v["reloads_failed"].as_u64() >= Some(n) {
            return v;
        }
        deadline.check("the reload was not rejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces `path` by a symlink to `target`, atomically (as a deploy would).
fn point_at(path: &Path, target: &Path) {
    let tmp = path.with_extension("link.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_and_dev_zero_configs_leave_traffic_flowing_and_sigterm_works() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let dir = run::temp_dir("lb-hostile");
    let path = dir.join("lb.toml");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let head = format!("admin = \"{admin}\"\nshutdown_grace = \"2s\"\n[health]\nkind = \"tcp\"");
    std::fs::write(&path, config_toml(&head, &[(&a.address(), 1)])).unwrap();
    let (process, addr) = Process::start_listening(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    // 1. A FIFO nobody writes to: opening it for reading would block forever.
    let fifo = dir.join("config.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    point_at(&path, &fifo);
    let v = rejected(admin, 1).await;
    let why = v["last_reload_error"].as_str().unwrap();
    assert!(why.contains("FIFO"), "{why}");
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    // 2. /dev/zero: reading it to the end would never end and eat memory.
    point_at(&path, Path::new("/dev/zero"));
    let v = rejected(admin, 2).await;
    let why = v["last_reload_error"].as_str().unwrap();
    assert!(why.contains("character device"), "{why}");
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    // 3. SIGHUP on top, while it still points there.
    process.signal("HUP");
    rejected(admin, 3).await;
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    let asked = Instant::now();
    process.signal("TERM");
    let (exit, _) = process.wait_timeout_async(WAIT).await;
    assert!(exit.expect("no exit after SIGTERM").success());
    assert!(asked.elapsed() < Duration::from_secs(2) + Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_shows_line_and_key_never_the_secret() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let path = run::temp_dir("lb-secret").join("lb.toml");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let head = format!("admin = \"{admin}\"\n[health]\nkind = \"tcp\"");
    let good = config_toml(&head, &[(&a.address(), 1)]);
    std::fs::write(&path, &good).unwrap();
    let (process, addr) = Process::start_listening(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped()),
    );
    // The line, as line 2.
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nsecret_token = \"hunter2\"\n{}",
            &good["listen = \"127.0.0.1:0\"\n".len()..]
        ),
    )
    .unwrap();
    let v = rejected(admin, 1).await;
    let why = v["last_reload_error"].as_str().unwrap();
    assert!(
        why.contains("line 2") && why.contains("secret_token"),
        "{why}"
    );
    assert!(!v.to_string().contains("hunter2"), "{v}");
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    process.signal("TERM");
    let (exit, mut process) = process.wait_timeout_async(WAIT).await;
    assert!(exit.expect("no exit after SIGTERM").success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut process.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("secret_token"), "{err}");
    assert!(!err.contains("hunter2"), "the log echoed the secret: {err}");
}
