//! PROXY protocol v2 end to end: our balancer with `proxy_protocol = true`
//! in front of a chat server started with `--proxy-protocol-from`
//! (MariaDB, Redis). Clients bound to 127.0.0.2 and 127.0.0.3 connect
//! through the balancer; the chat server's limits see their own addresses,
//! not the balancer's, and the balancer's chat health checks (LOCAL
//! headers) keep the server up.

mod common;

use common::lb_toml;
use testkit::lb::Lb;
use testkit::prelude::*;
use testkit::server::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_passes_client_addresses_to_the_limits() {
    let cluster = Cluster::new();
    let server = cluster.start_node_behind_proxy(3).await;
    let toml = format!("proxy_protocol = true\n{}", lb_toml(&[server.addr]));
    let lb = Lb::start(&toml, false).await;
    let guesser_ip = [127, 0, 0, 2].into();
    let user_ip = [127, 0, 0, 3].into();

    let mut setup = Client::connect_from(lb.addr, user_ip).await;
    let mut accounts = Vec::new();
    for i in 0..8 {
        accounts.push(setup.register(&format!("pp-user{i}"), "pw").await);
    }
    drop(setup);
    // 40 wrong guesses from 127.0.0.2 over 8 accounts, on fresh connections.
    let mut refused = 0;
    for round in 0..40 {
        let mut guesser = Client::connect_from(lb.addr, guesser_ip).await;
        match guesser
            .call(&req::login(accounts[round % accounts.len()], "guess"))
            .await
            .errno()
        {
            Errno::BadCredentials => {}
            Errno::RateLimited => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 10, "only {refused} of 40 guesses refused");
    // 127.0.0.2 is locked out even with the right password...
    let mut guesser = Client::connect_from(lb.addr, guesser_ip).await;
    assert_eq!(
        guesser.call(&req::login(accounts[0], "pw")).await.errno(),
        Errno::RateLimited
    );
    // ...while 127.0.0.3's users log in.
    for &account in &accounts[..3] {
        let mut user = Client::connect_from(lb.addr, user_ip).await;
        user.login(account, "pw").await;
        user.logout().await;
    }
    drop(guesser);
    // Three connections per client address, however many the balancer carries.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect_from(lb.addr, user_ip).await;
        c.ping().await;
        held.push(c);
    }
    let mut fourth = Client::connect_from(lb.addr, user_ip).await;
    let frames = fourth.expect_closed(WAIT).await;
    assert!(
        matches!(frames.first().map(|f| &f.frame), Some(ServerFrame::Reply(reply)) if reply.errno() == Errno::RateLimited),
        "{frames:?}"
    );
    let mut other = Client::connect_from(lb.addr, guesser_ip).await;
    other.ping().await;
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
