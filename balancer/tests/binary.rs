//! The `balancer` binary itself: the `listening on ADDR` line, SIGHUP reload,
//! a config error naming its line, a clean exit on SIGTERM, and plain logs
//! when stderr is not a terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_address_reloads_on_sighup_and_stops_on_sigterm() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let head = "admin = \"127.0.0.1:0\"\n[health]\nkind = \"chat\"";
    std::fs::write(&path, config_toml(head, &[(&a.address(), 1)])).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    let addr: std::net::SocketAddr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end()
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0, "must print the bound port");
    assert_eq!(who_serves(addr).await.unwrap(), "a");

    // Only b in the file; SIGHUP applies it (the watcher may beat it to it).
    std::fs::write(&path, config_toml(head, &[(&b.address(), 1)])).unwrap();
    signal(child.id(), "HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        if who_serves(addr).await.unwrap() == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    signal(child.id(), "TERM");
    let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("no exit after SIGTERM")
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn binary_refuses_a_bad_config_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:1\"\nwieght = 2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .arg("--config")
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout before listening");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("wieght"), "{err}");
}

#[test]
fn binary_logs_without_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config_toml("", &[("127.0.0.1:1", 1)])).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watching the config file"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}
