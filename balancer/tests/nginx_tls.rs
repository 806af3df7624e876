//! The `ssl` server block of config/nginx.conf, switched on as its comment
//! says: a TLS client through a real Nginx to a two-server cluster, the
//! same setup the balancer's `[tls]` gives.

use std::net::SocketAddr;

use testkit::backend::{Mode, TestBackend};
use testkit::certs::{connector_with_versions, framed, ping, TestCert};
use testkit::nginx::{render_conf, template, with_tls, Nginx};
use testkit::{free_port, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_ssl_stream_block_terminates_tls_for_a_two_server_cluster() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let dir = run::temp_dir("nginx-tls-certs");
    let pair = TestCert::new();
    let (cert, key) = pair.install(&dir);

    let (plain_port, tls_port) = (free_port(), free_port());
    let rendered = render_conf(&template(), plain_port, &[a.addr, b.addr]);
    let conf = with_tls(
        &rendered,
        tls_port,
        &cert.display().to_string(),
        &key.display().to_string(),
    );
    let _nginx = Nginx::start_conf(&conf, tls_port).await;

    let tls = connector_with_versions(
        &[&pair],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    // Each Nginx worker (`worker_processes auto`: one per core) keeps its
    // own round-robin, alternating between the two servers; with more
    // connections than workers, some worker serves two in a row.
    let workers = std::thread::available_parallelism().map_or(8, |n| n.get());
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..=workers * 2 {
        served.insert(ping(&mut framed(addr, &tls).await).await);
    }
    assert_eq!(
        served.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "both servers of the cluster serve TLS clients"
    );
}
