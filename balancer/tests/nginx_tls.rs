//! The `ssl` server block of config/nginx.conf, switched on as its comment
//! says: a TLS client through a real Nginx to a two-server cluster, the
//! same setup the balancer's `[tls]` gives.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use protocol::{parse_server_frame, FrameCodec, Reply, Request, ServerFrame, Version};
use rustls::pki_types::ServerName;
use testkit::backend::{Mode, TestBackend};
use testkit::nginx::{render_conf, template, with_tls, Nginx};
use testkit::{free_port, run, WAIT};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

async fn ping_over_tls(addr: SocketAddr, tls: &TlsConnector) -> String {
    let go = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with nginx");
        let mut conn = Framed::new(stream, FrameCodec::default());
        let mut frame = Request::Ping.encode(Version::V1, None);
        frame.pop();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ssl_stream_block_terminates_tls_for_a_two_server_cluster() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let dir = run::temp_dir("nginx-tls-certs");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();

    let (plain_port, tls_port) = (free_port(), free_port());
    let rendered = render_conf(&template(), plain_port, &[a.addr, b.addr]);
    let conf = with_tls(
        &rendered,
        tls_port,
        &cert.display().to_string(),
        &key.display().to_string(),
    );
    let _nginx = Nginx::start_conf(&conf, tls_port).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config));
    let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    // Each Nginx worker (`worker_processes auto`: one per core) keeps its
    // own round-robin, alternating between the two servers; with more
    // connections than workers, some worker serves two in a row.
    let workers = std::thread::available_parallelism().map_or(8, |n| n.get());
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..=workers * 2 {
        served.insert(ping_over_tls(addr, &tls).await);
    }
    assert_eq!(
        served.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "both servers of the cluster serve TLS clients"
    );
}
