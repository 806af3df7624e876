//! Chat clients through a real Nginx (its stream proxy, started from
//! `config/nginx.conf` on its own prefix and port) to two chat servers
//! clustered over MariaDB and Redis. Nginx missing is a failure, not a skip.

mod common;

use std::net::SocketAddr;

use common::{
    chat_scenario, guesses_from_one_address, other_addresses_are_served,
    stop_alices_server_and_carry_on,
};
use testkit::nginx::{render_conf, Nginx};
use testkit::prelude::*;
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
    for stale in [
        ":6000",
        ":6002",
        "listen 8000",
        ":7000",
        ":7002",
        "listen 8080",
    ] {
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
        "proxy_protocol on;",
    ] {
        assert!(conf.contains(kept), "{kept} lost: {conf}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_two_servers_chat_then_one_dies() {
    let cluster = Cluster::new();
    let a = cluster.start_node_behind_proxy(100_000).await;
    let b = cluster.start_node_behind_proxy(100_000).await;
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

/// Through Nginx with `proxy_protocol on`, the chat servers see each
/// client's own address (127.0.0.2, 127.0.0.3): a guesser at one address is
/// refused while a user at another logs in, and the per-address connection
/// limit counts clients, not Nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_client_addresses_to_the_limits() {
    let cluster = Cluster::new();
    let a = cluster.start_node_behind_proxy(3).await;
    let nginx = Nginx::start(&[a.addr]).await;
    let accounts = guesses_from_one_address(nginx.addr, "nginx").await;
    other_addresses_are_served(nginx.addr, &accounts).await;
    drop(nginx);
    a.stop().await;
}

/// The web block: the web client and a WebSocket session through Nginx's
/// stream proxy (PROXY header on) to the chat servers' web listeners; a
/// browser-side user and a terminal-side user, each through Nginx, chat
/// both ways across the two servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_carries_the_web_client_and_websockets() {
    let cluster = Cluster::new();
    let a = cluster.start_node_behind_proxy(100_000).await;
    let b = cluster.start_node_behind_proxy(100_000).await;
    let nginx = Nginx::start_web(&[a.addr, b.addr], &[a.web, b.web]).await;
    let web = nginx.web.expect("the web block");

    let (status, body) = testkit::backend::http_get(web, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");

    // Several WebSocket users land on both servers (weight 1 each).
    let mut browsers = Vec::new();
    for i in 0..4 {
        browsers.push(testkit::ws::user(web, &format!("browser{i}")).await);
    }
    let mut terminal = Client::connect(nginx.addr).await;
    let terminal_id = terminal.register("terminal", "pw").await;
    terminal.login(terminal_id, "pw").await;
    for (browser, id) in &mut browsers {
        browser.chat(terminal_id, "from the browser").await;
        assert_eq!(terminal.recv_chat().await.msg, "from the browser");
        terminal.chat(*id, "from the terminal").await;
        assert_eq!(browser.recv_chat().await.msg, "from the terminal");
    }
    let servers: std::collections::HashSet<String> = {
        let mut names = std::collections::HashSet::new();
        for (browser, _) in &mut browsers {
            names.insert(browser.served_by().await);
        }
        names
    };
    assert_eq!(
        servers.len(),
        2,
        "WebSockets went to one server only: {servers:?}"
    );
    drop(nginx);
    a.stop().await;
    b.stop().await;
}
