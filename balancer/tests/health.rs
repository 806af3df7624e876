//! Health that tells the truth: a wedged backend (accepts, never answers)
//! leaves rotation while clients keep connecting to it; passive
//! `response_timeout` catches it without active checks; and the balancer's
//! own descriptor exhaustion never takes a healthy backend out.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get_with, WedgeBackend};
use testkit::backend::{Mode, TestBackend};
use testkit::bin::Process;
use testkit::lb::{config_toml, Lb};
use testkit::{free_port, run, wait_until, who_serves, Client, WAIT};

/// A client that got no PONG within this counts as hung.
const HANG: Duration = Duration::from_secs(2);

/// The scenario: 10 connects/s keep landing on a backend that
/// stopped answering; it must still leave rotation within fall × interval
/// (+1 s), and fewer than 5 % of clients may hang on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wedged_backend_leaves_rotation_while_clients_keep_connecting() {
    let (interval, fall) = (Duration::from_millis(100), 3u32);
    let a = WedgeBackend::start("a").await;
    let w = WedgeBackend::start("w").await;
    let wa = w.address();
    let toml = config_toml(
        &format!(
            "[health]\nkind = \"chat\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = {fall}"
        ),
        &[(&a.address(), 1), (&wa, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    let addr = lb.addr;

    let (ok, hung, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut wedged_at = None;
    let mut out_after = None;
    // 8 s at 10 connects/s; w wedges after 1 s.
    for i in 0..80u32 {
        tokio::time::sleep_until((started + Duration::from_millis(100) * i).into()).await;
        if i == 10 {
            w.wedge(true);
            wedged_at = Some(Instant::now());
        }
        if let (Some(at), None) = (wedged_at, out_after) {
            if lb.backend_up(&wa) == Some(false) {
                out_after = Some(at.elapsed());
            }
        }
        let (ok, hung, failed) = (ok.clone(), hung.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            match tokio::time::timeout(HANG, who_serves(addr)).await {
                Ok(Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                Ok(Err(_)) => failed.fetch_add(1, Ordering::Relaxed),
                Err(_) => hung.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let out_after = out_after.expect("the wedged backend never left rotation");
    assert!(
        out_after <= interval * fall + Duration::from_secs(1),
        "left rotation only after {out_after:?}"
    );
    let (ok, hung, failed) = (
        ok.load(Ordering::Relaxed),
        hung.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert_eq!(ok + hung + failed, 80);
    assert!(
        hung * 100 < 80 * 5,
        "{hung} of 80 clients hung ({ok} ok, {failed} failed)"
    );
    assert_eq!(failed, 0);

    // Only passing checks bring it back: clients connecting do not.
    w.wedge(false);
    assert!(wait_until(WAIT, || lb.backend_up(&wa) == Some(true)).await);
    lb.shutdown().await;
}

/// With `tcp` checks (which a wedged server passes), `response_timeout`
/// alone takes it out: clients sent PING and got nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_takes_out_a_backend_that_accepts_but_never_answers() {
    let a = WedgeBackend::start("a").await;
    let w = WedgeBackend::start("w").await;
    w.wedge(true);
    let (aa, wa) = (a.address(), w.address());
    let toml = config_toml(
        "response_timeout = \"300ms\"\n[health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfall = 2",
        &[(&aa, 1), (&wa, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    let mut held = Vec::new();
    // Round-robin: every other client lands on w and waits in vain.
    for _ in 0..4 {
        let mut c = Client::connect(lb.addr).await;
        c.send_raw(&protocol::Request::Ping.encode(protocol::Version::V1, None))
            .await;
        held.push(c);
    }
    assert!(
        wait_until(WAIT, || lb.backend_up(&wa) == Some(false)).await,
        "response timeouts did not take w out: {:?}",
        lb.status()
    );
    let status = lb.status();
    let by = |addr: &str| {
        status
            .backends
            .iter()
            .find(|b| b.address == addr)
            .unwrap()
            .clone()
    };
    assert!(by(&wa).response_timeouts >= 2);
    assert_eq!(by(&aa).response_timeouts, 0, "a answered every PING");
    assert!(by(&aa).up);
    for _ in 0..5 {
        assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    }
    // The tcp check passes on w, so it comes back: passive detection
    // complements the checks, it does not replace them.
    drop(held);
    lb.shutdown().await;
}

/// The balancer at its own descriptor limit: accepts back off, connects fail
/// with EMFILE, checks cannot open sockets, yet no backend is blamed, and
/// the established connections keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_marks_no_backend_down() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let path = run::temp_dir("lb-emfile").join("lb.toml");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let head = format!("admin = \"{admin}\"\n[health]\nkind = \"chat\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2");
    std::fs::write(&path, config_toml(&head, &[(&a.address(), 1)])).unwrap();
    let (process, addr) = Process::start_listening(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 128 && exec \"$0\" --config \"$1\"")
            .arg(env!("CARGO_BIN_EXE_balancer"))
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let mut first = Client::connect(addr).await;
    assert_eq!(first.served_by().await, "a");

    // 200 clients against 128 descriptors: most cannot be served.
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
        {
            flood.push(s);
        }
    }
    // Hold the flood for many fall × interval periods.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            first.served_by().await,
            "a",
            "an established connection stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(who_serves(addr).await.unwrap(), "a");
    let (code, body) = get_with(admin, "/status", "").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let b = &v["backends"][0];
    assert_eq!(b["up"], true, "{v}");
    assert_eq!(b["connect_failures"], 0, "{v}");
    assert_eq!(b["check_failures"], 0, "{v}");
    let local = b["local_errors"].as_u64().unwrap() + v["accept_errors"].as_u64().unwrap();
    assert!(local > 0, "the flood did not reach the limit: {v}");
    drop(first);
    process.signal("TERM");
    let (status, _) = process.wait_timeout_async(WAIT).await;
    assert!(status.expect("no exit after SIGTERM").success());
}
