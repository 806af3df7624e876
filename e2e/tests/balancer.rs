//! Chat clients through our balancer (in-process, chat-level health checks)
//! to two chat servers clustered over MariaDB and Redis.

mod common;

use common::{chat_scenario, lb_toml, stop_alices_server_and_carry_on};
use testkit::lb::Lb;
use testkit::server::Cluster;
use testkit::{wait_until, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_two_servers_chat_then_one_dies() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let lb = Lb::start(&lb_toml(&[a.addr, b.addr]), false).await;

    let users = chat_scenario(lb.addr, "lb").await;
    let status = lb.handle.status();
    for backend in &status.backends {
        assert!(backend.up, "{backend:?}");
        assert!(
            backend.bytes_to_client > 60 * 1024,
            "the 60 KB message went through {}: {backend:?}",
            backend.address
        );
    }

    // Kill the server alice is on; the other one carries on.
    let (killed_name, survivor) =
        stop_alices_server_and_carry_on(lb.addr, (a, b), users, "lb").await;
    let survivor_name = survivor.name();

    // Clients connected right after the kill went through the retry (the
    // dead server was still in rotation), and health checks took it out.
    let failures = lb
        .handle
        .status()
        .backends
        .iter()
        .find(|b| b.address == killed_name)
        .map(|b| b.connect_failures)
        .unwrap();
    assert!(
        failures >= 1,
        "no client connect hit the dead server: the retry was not exercised"
    );
    assert!(
        wait_until(WAIT, || lb.backend_up(&killed_name) == Some(false)).await,
        "the dead server is still marked up"
    );
    assert_eq!(lb.backend_up(&survivor_name), Some(true));

    lb.shutdown().await;
    survivor.stop().await;
}
