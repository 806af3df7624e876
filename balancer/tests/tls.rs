//! TLS termination: a TLS client through the balancer to a plain backend,
//! failed handshakes counted and kept out of the warn log, and certificate
//! rotation under 100 open TLS connections with none dropped. Certificates
//! are made with rcgen (ECDSA P-256).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::get_with;
use testkit::backend::{Mode, TestBackend};
use testkit::bin::Process;
use testkit::certs::{connect, connector_with_versions, framed, ping, presented, TestCert};
use testkit::lb::{config_toml, Lb};
use testkit::{free_port, run, wait_until, Deadline, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_and_failed_handshakes_are_counted_not_logged() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let dir = run::temp_dir("lb-tls");
    let pair = TestCert::new();
    pair.install(&dir);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let head = format!(
        "admin = \"{admin}\"\n[health]\nkind = \"tcp\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let path = dir.join("lb.toml");
    std::fs::write(&path, config_toml(&head, &[(&a.address(), 1)])).unwrap();
    let (process, addr) = Process::start_listening(
        Command::new(env!("CARGO_BIN_EXE_balancer"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped()),
    );
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let mut conn = framed(addr, &connector_with_versions(&[&pair], versions)).await;
        assert_eq!(ping(&mut conn).await, "a");
    }
    // Plaintext and garbage: 20 failed handshakes.
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(b"{\"msgid\":12}\0 not TLS at all\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    }
    let deadline = Deadline::after(WAIT);
    loop {
        let (_, body) = get_with(admin, "/status", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["tls"]["handshake_failures"] == 20 {
            assert_eq!(v["tls"]["handshakes"], 2, "{v}");
            break;
        }
        deadline.check("handshake failures not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = get_with(admin, "/metrics", "").await;
    assert!(
        metrics.contains("balancer_tls_handshake_failures_total 20"),
        "{metrics}"
    );

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
async fn certificate_rotation_under_100_open_connections_drops_none() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let dir = run::temp_dir("lb-tls-rotate");
    let (old, new) = (TestCert::new(), TestCert::new());
    old.install(&dir);
    let head = format!(
        "[health]\nkind = \"tcp\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let lb = Lb::start(&config_toml(&head, &[(&a.address(), 1)]), false).await;
    let both = connector_with_versions(
        &[&old, &new],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );

    let mut open = Vec::new();
    for _ in 0..100 {
        let mut conn = framed(lb.addr, &both).await;
        assert_eq!(presented(&conn), old.der);
        assert_eq!(ping(&mut conn).await, "a");
        open.push(conn);
    }

    new.install(&dir);
    let deadline = Deadline::after(WAIT);
    loop {
        let conn = framed(lb.addr, &both).await;
        if presented(&conn) == new.der {
            break;
        }
        deadline.check("the new certificate was never presented");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every connection made before the rotation still works.
    for conn in &mut open {
        assert_eq!(ping(conn).await, "a");
    }
    assert!(wait_until(WAIT, || lb.status().tls.unwrap().reloads >= 1).await);
    assert_eq!(lb.status().backends[0].active, 100);
    // Only the new certificate is trusted: new clients need it.
    let mut fresh = framed(
        lb.addr,
        &connector_with_versions(&[&new], &[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(ping(&mut fresh).await, "a");
    drop((open, fresh));
    lb.shutdown().await;
}

/// Over TLS too, a client's half-close reaches the backend, which still
/// answers, and large payloads arrive whole in both directions (the TLS
/// side is flushed, not left in rustls's buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_half_close_and_large_payloads() {
    use tokio::io::AsyncReadExt;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                let sum: u64 = got.iter().map(|&b| u64::from(b)).sum();
                let reply = format!("got {} sum {sum};", got.len()).repeat(20_000);
                s.write_all(reply.as_bytes()).await.unwrap();
            });
        }
    });
    let dir = run::temp_dir("lb-tls-half");
    let pair = TestCert::new();
    pair.install(&dir);
    let head = format!(
        "[health]\nkind = \"tcp\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let lb = Lb::start(&config_toml(&head, &[(&address, 1)]), false).await;
    let tls = connector_with_versions(&[&pair], &[&rustls::version::TLS13]);
    let mut stream = connect(lb.addr, &tls).await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    stream.write_all(&payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the answer and the close reach the TLS client")
        .unwrap();
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("got 300000 sum {sum};").repeat(20_000)
    );
    lb.shutdown().await;
}
