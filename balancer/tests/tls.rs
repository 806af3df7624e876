//! TLS termination: a TLS client through the balancer to a plain backend,
//! failed handshakes counted and kept out of the warn log, and certificate
//! rotation under 100 open TLS connections with none dropped. Certificates
//! are made with rcgen (ECDSA P-256).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::get_with;
use futures::{SinkExt, StreamExt};
use protocol::{parse_server_frame, FrameCodec, Reply, Request, ServerFrame, Version};
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::backend::{Mode, TestBackend};
use testkit::bin::Process;
use testkit::lb::{config_toml, Lb};
use testkit::{free_port, run, wait_until, Deadline, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn new_pair() -> Pair {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.key_pair.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

/// Writes `pair` into `dir` as cert.pem and key.pem, each by rename.
fn install(dir: &Path, pair: &Pair) {
    for (name, text) in [("key.pem", &pair.key_pem), ("cert.pem", &pair.cert_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn connector(
    trusted: &[&Pair],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for p in trusted {
        roots.add(p.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

type Conn = Framed<TlsStream<TcpStream>, FrameCodec>;

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> Conn {
    let go = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tls.connect(name, tcp).await.expect("TLS handshake");
        Framed::new(stream, FrameCodec::default())
    };
    tokio::time::timeout(WAIT, go)
        .await
        .expect("TLS connect timed out")
}

/// PING over `conn`; the PONG's server name.
async fn ping(conn: &mut Conn) -> String {
    let go = async {
        let mut frame = Request::Ping.encode(Version::V1, None);
        frame.pop(); // the codec adds the terminator
        conn.send(&frame[..]).await.unwrap();
        while let Some(frame) = conn.next().await {
            if let Ok(incoming) = parse_server_frame(&frame.unwrap()) {
                if let ServerFrame::Reply(Reply::Pong(p)) = incoming.frame {
                    return p.server;
                }
            }
        }
        panic!("closed before PONG");
    };
    tokio::time::timeout(WAIT, go)
        .await
        .expect("no PONG in time")
}

/// The certificate the balancer presents to a new connection.
fn presented(conn: &Conn) -> CertificateDer<'static> {
    conn.get_ref().get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_and_failed_handshakes_are_counted_not_logged() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let dir = run::temp_dir("lb-tls");
    let pair = new_pair();
    install(&dir, &pair);
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
        let mut conn = connect(addr, &connector(&[&pair], versions)).await;
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
    let (old, new) = (new_pair(), new_pair());
    install(&dir, &old);
    let head = format!(
        "[health]\nkind = \"tcp\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let lb = Lb::start(&config_toml(&head, &[(&a.address(), 1)]), false).await;
    let both = connector(
        &[&old, &new],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );

    let mut open = Vec::new();
    for _ in 0..100 {
        let mut conn = connect(lb.addr, &both).await;
        assert_eq!(presented(&conn), old.der);
        assert_eq!(ping(&mut conn).await, "a");
        open.push(conn);
    }

    install(&dir, &new);
    let deadline = Deadline::after(WAIT);
    loop {
        let conn = connect(lb.addr, &both).await;
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
    let mut fresh = connect(lb.addr, &connector(&[&new], &[&rustls::version::TLS13])).await;
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
    let pair = new_pair();
    install(&dir, &pair);
    let head = format!(
        "[health]\nkind = \"tcp\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let lb = Lb::start(&config_toml(&head, &[(&address, 1)]), false).await;
    let tls = connector(&[&pair], &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(lb.addr).await.unwrap();
    let mut stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
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
