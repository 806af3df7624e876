//! A chat server that loses its database leaves the balancer's rotation:
//! its PONG says `"ready":false`, the balancer's chat health check counts
//! that as a failure, and once the database is back the server returns.
//! The database is cut through a TCP relay the test controls.

mod common;

use std::time::{Duration, Instant};

use common::lb_toml;
use testkit::lb::Lb;
use testkit::prelude::*;
use testkit::relay::mariadb_relay;
use testkit::server::{config_on, fresh_database_url, ChatServer, Storage};

/// `lb_toml`'s health settings.
const INTERVAL: Duration = Duration::from_secs(1);
const FALL: u32 = 3;
const RISE: u32 = 2;
/// The server probes its readiness every second; the check's own timeout.
const SLACK: Duration = Duration::from_millis(1_500);

/// Waits (at most `limit`) until the balancer reports `backend` as `up`;
/// returns how long it took.
async fn until_up(lb: &Lb, backend: &str, up: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        wait_until(limit, || lb.backend_up(backend) == Some(up)).await,
        "{backend} never went {} within {limit:?}",
        if up { "up" } else { "down" }
    );
    started.elapsed()
}

/// PINGs `server` directly until its PONG says `ready` is `want`.
async fn until_pong_ready(server: &ChatServer, want: bool) {
    let deadline = Deadline::after(WAIT);
    loop {
        let mut client = server.client().await;
        if client.ping().await.ready == want {
            return;
        }
        assert!(!deadline.passed(), "PONG never said ready={want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_its_database_leaves_rotation_and_comes_back() {
    let (relay, url) = mariadb_relay().await;
    let cut_off = ChatServer::start_with(config_on(url)).await;
    let healthy = ChatServer::start_with(config_on(fresh_database_url(Storage::MariaDb))).await;
    let lb = Lb::start(&lb_toml(&[cut_off.addr, healthy.addr]), false).await;
    let (cut_name, healthy_name) = (cut_off.addr.to_string(), healthy.addr.to_string());
    until_up(&lb, &cut_name, true, WAIT).await;
    until_up(&lb, &healthy_name, true, WAIT).await;
    assert!(cut_off.client().await.ping().await.ready);

    relay.cut();
    let out = until_up(&lb, &cut_name, false, WAIT).await;
    println!("out of rotation {out:?} after the database was cut");
    assert!(
        out <= INTERVAL * FALL + SLACK,
        "out of rotation after {out:?}, more than fall × interval (+ the readiness probe)"
    );
    until_pong_ready(&cut_off, false).await;
    assert_eq!(lb.backend_up(&healthy_name), Some(true));
    // New clients all land on the healthy server meanwhile.
    for i in 0..6 {
        let mut client = Client::connect(lb.addr).await;
        let pong = client.ping().await;
        assert!(pong.ready, "connection {i} landed on a server not ready");
    }

    relay.restore();
    let back = until_up(&lb, &cut_name, true, WAIT).await;
    println!("back in rotation {back:?} after the database returned");
    assert!(back <= INTERVAL * (RISE + 1) + SLACK, "back after {back:?}");
    until_pong_ready(&cut_off, true).await;
    lb.shutdown().await;
    cut_off.stop().await;
    healthy.stop().await;
}
