//! Chat clients through a real Nginx (its stream proxy, started from
//! `config/nginx.conf` on its own prefix and port) to two chat servers
//! clustered over MariaDB and Redis. Nginx missing is a failure, not a skip.

mod common;

use std::net::SocketAddr;

use common::{chat_scenario, stop_alices_server_and_carry_on};
use testkit::nginx::{render_conf, Nginx};
use testkit::server::Cluster;

#[test]
fn nginx_conf_renders_with_our_ports_only() {
    let template = include_str!("../../config/nginx.conf");
    let backends: Vec<SocketAddr> = vec![
        "127.0.0.1:41001".parse().unwrap(),
        "127.0.0.1:41002".parse().unwrap(),
    ];
    let conf = render_conf(template, 41000, &backends);
    assert!(conf.contains("listen 127.0.0.1:41000;"));
    assert!(conf.contains("server 127.0.0.1:41001 weight=1"));
    assert!(conf.contains("server 127.0.0.1:41002 weight=1"));
    let directives: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for stale in [":6000", ":6002", "listen 8000"] {
        assert!(
            !directives.iter().any(|l| l.contains(stale)),
            "{stale} left in {conf}"
        );
    }
    // What makes it the shipped config: module, retries, timeouts kept.
    for kept in [
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
        "proxy_next_upstream on;",
        "proxy_timeout 24h;",
        "pid nginx.pid;",
    ] {
        assert!(conf.contains(kept), "{kept} lost: {conf}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_two_servers_chat_then_one_dies() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let nginx = Nginx::start(&[a.addr, b.addr]).await;

    let users = chat_scenario(nginx.addr, "nginx").await;

    // Nginx has no active checks: it finds the dead server by failing to
    // connect to it and passes the client on (proxy_next_upstream).
    let (killed_name, survivor) =
        stop_alices_server_and_carry_on(nginx.addr, (a, b), users, "nginx").await;

    let log = nginx.error_log();
    assert!(
        log.contains(&killed_name),
        "nginx logged no failed connect to {killed_name}: {log}"
    );
    drop(nginx);
    survivor.stop().await;
}
