//! PROXY protocol v2 end to end: our balancer with `proxy_protocol = true`
//! in front of a chat server started with `--proxy-protocol-from`
//! (MariaDB, Redis). Clients bound to 127.0.0.2 and 127.0.0.3 connect
//! through the balancer; the chat server's limits see their own addresses,
//! not the balancer's, and the balancer's chat health checks (LOCAL
//! headers) keep the server up.

mod common;

use common::{guesses_from_one_address, lb_toml, other_addresses_are_served, GUESSER_IP};
use testkit::lb::Lb;
use testkit::prelude::*;
use testkit::server::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_passes_client_addresses_to_the_limits() {
    let cluster = Cluster::new();
    let server = cluster.start_node_behind_proxy(3).await;
    let toml = format!("proxy_protocol = true\n{}", lb_toml(&[server.addr]));
    let lb = Lb::start(&toml, false).await;
    let accounts = guesses_from_one_address(lb.addr, "pp").await;
    // 127.0.0.2 is locked out even with the right password...
    let mut guesser = Client::connect_from(lb.addr, GUESSER_IP.into()).await;
    assert_eq!(
        guesser.call(&req::login(accounts[0], "pw")).await.errno(),
        Errno::RateLimited
    );
    drop(guesser);
    // ...while 127.0.0.3's users log in, and connections count per client
    // address, however many the balancer carries.
    other_addresses_are_served(lb.addr, &accounts).await;
    // The chat health checks (a LOCAL header, then PING, every second)
    // pass: a check without a header would be refused by the server.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let status = lb.status();
    assert!(status.backends[0].up, "{:?}", status.backends);
    assert_eq!(
        status.backends[0].check_failures, 0,
        "{:?}",
        status.backends
    );
    lb.shutdown().await;
    server.stop().await;
}
