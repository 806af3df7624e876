//! PROXY protocol v2 towards backends: a backend that parses the header
//! (with `ppp`) sees each client's real source address; health checks send
//! LOCAL; a backend with `proxy_protocol = false` gets the plain bytes.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{PpBackend, Seen};
use futures::StreamExt;
use protocol::{parse_server_frame, FrameCodec, Reply, Request, ServerFrame, Version};
use testkit::backend::{Mode, TestBackend};
use testkit::lb::Lb;
use testkit::{wait_until, who_serves, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio_util::codec::FramedRead;

/// Connects from `source` (port picked by the kernel), sends PING and
/// returns (the PONG's server, the client's own address).
async fn ping_from(lb: SocketAddr, source: IpAddr) -> (String, SocketAddr) {
    let go = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut stream = socket.connect(lb).await.unwrap();
        let me = stream.local_addr().unwrap();
        stream
            .write_all(&Request::Ping.encode(Version::V1, None))
            .await
            .unwrap();
        let mut frames = FramedRead::new(stream, FrameCodec::default());
        while let Some(frame) = frames.next().await {
            if let Ok(incoming) = parse_server_frame(&frame.unwrap()) {
                if let ServerFrame::Reply(Reply::Pong(p)) = incoming.frame {
                    return (p.server, me);
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
async fn backends_see_the_clients_real_address_and_checks_send_local() {
    let p = PpBackend::start("p").await;
    let plain = TestBackend::start("plain", Mode::Chat).await;
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         [health]\nkind = \"chat\"\ninterval = \"100ms\"\nfall = 1\n\
         [[backend]]\naddress = \"{}\"\n\
         [[backend]]\naddress = \"{}\"\nproxy_protocol = false\n",
        p.address(),
        plain.address()
    );
    let lb = Lb::start(&toml, false).await;
    // The checks pass through the header: LOCAL, then PING → PONG.
    assert!(
        wait_until(WAIT, || p.seen().contains(&Seen::Local)).await,
        "no LOCAL check: {:?}",
        p.seen()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lb.backend_up(&p.address()), Some(true), "{:?}", lb.status());
    assert_eq!(lb.backend_up(&plain.address()), Some(true));

    let mut seen_clients = Vec::new();
    for last in 2..=5u8 {
        let source = IpAddr::from([127, 0, 0, last]);
        let (server, me) = ping_from(lb.addr, source).await;
        assert_eq!(me.ip(), source);
        if server == "p" {
            seen_clients.push(me);
        } else {
            assert_eq!(server, "plain", "the plain backend answers as usual");
        }
    }
    assert_eq!(seen_clients.len(), 2, "round-robin over two backends");
    let proxied: Vec<Seen> = p
        .seen()
        .into_iter()
        .filter(|s| !matches!(s, Seen::Local))
        .collect();
    let expected: Vec<Seen> = seen_clients
        .iter()
        .map(|&source| Seen::Proxy {
            source,
            destination: lb.addr,
        })
        .collect();
    assert_eq!(proxied, expected);
    // Plain short connections keep working through both.
    for _ in 0..4 {
        who_serves(lb.addr).await.unwrap();
    }
    lb.shutdown().await;
}
