//! WebSockets through our layer-4 balancer to the chat servers' web
//! listeners: plain `ws://`, and `wss://` with the balancer terminating TLS
//! (the chat servers speak plain HTTP behind it). A WebSocket user and a
//! TCP user, each through a balancer, chat both ways across two servers.

use std::net::SocketAddr;

use testkit::certs::{connector, TestCert};
use testkit::lb::{config_toml, Lb};
use testkit::prelude::*;
use testkit::server::Cluster;

/// A balancer in front of the web listeners: health checks connect only
/// (a chat PING means nothing to an HTTP port). `tls`: extra config lines.
fn web_lb_toml(backends: &[SocketAddr], tls: &str) -> String {
    let head = format!(
        "connect_timeout = \"1s\"\nretries = 2\nshutdown_grace = \"1s\"\n\
         [health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 3\n{tls}"
    );
    let addresses: Vec<String> = backends.iter().map(ToString::to_string).collect();
    let weighted: Vec<(&str, u32)> = addresses.iter().map(|a| (a.as_str(), 1)).collect();
    config_toml(&head, &weighted)
}

fn chat_lb_toml(backends: &[SocketAddr]) -> String {
    let head = "connect_timeout = \"1s\"\nretries = 2\nshutdown_grace = \"1s\"\n\
                [health]\nkind = \"chat\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 3";
    let addresses: Vec<String> = backends.iter().map(ToString::to_string).collect();
    let weighted: Vec<(&str, u32)> = addresses.iter().map(|a| (a.as_str(), 1)).collect();
    config_toml(head, &weighted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_through_the_balancer_chat_with_tcp_users() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let web_lb = Lb::start(&web_lb_toml(&[a.web, b.web], ""), false).await;
    let chat_lb = Lb::start(&chat_lb_toml(&[a.addr, b.addr]), false).await;

    let (status, body) = testkit::backend::http_get(web_lb.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");

    let mut terminal = Client::connect(chat_lb.addr).await;
    let terminal_id = terminal.register("terminal", "pw").await;
    terminal.login(terminal_id, "pw").await;
    let mut servers = std::collections::HashSet::new();
    for i in 0..4 {
        let (mut browser, id) = testkit::ws::user(web_lb.addr, &format!("browser{i}")).await;
        servers.insert(browser.served_by().await);
        browser.chat(terminal_id, "through the balancer").await;
        assert_eq!(terminal.recv_chat().await.msg, "through the balancer");
        terminal.chat(id, "and back").await;
        assert_eq!(browser.recv_chat().await.msg, "and back");
    }
    assert_eq!(servers.len(), 2, "one server only: {servers:?}");
    web_lb.shutdown().await;
    chat_lb.shutdown().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_the_balancer_terminating_tls() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let (mut terminal, terminal_id) = a.user("terminal").await;

    let cert = TestCert::new();
    let dir = testkit::run::temp_dir("wss");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = cert.install(&dir);
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let lb = Lb::start(&web_lb_toml(&[a.web], &tls), false).await;

    let (mut browser, _closed) = testkit::ws::connect_tls(lb.addr, &connector(&[&cert])).await;
    let browser_id = browser.register("secure", "pw").await;
    browser.login(browser_id, "pw").await;
    browser.chat(terminal_id, "over wss").await;
    assert_eq!(terminal.recv_chat().await.msg, "over wss");
    terminal.chat(browser_id, "back over wss").await;
    assert_eq!(browser.recv_chat().await.msg, "back over wss");
    lb.shutdown().await;
    a.stop().await;
}
