//! WebSockets through our layer-4 balancer to the chat servers' web
//! listeners: plain `ws://`, and `wss://` with the balancer terminating TLS
//! (the chat servers speak plain HTTP behind it). A WebSocket user and a
//! TCP user, each through a balancer, chat both ways across two servers.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::lb::{config_toml, Lb};
use testkit::prelude::*;
use testkit::server::Cluster;
use testkit::ws::tungstenite::Message;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = testkit::run::temp_dir("wss");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let lb = Lb::start(&web_lb_toml(&[a.web], &tls), false).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ck.cert.der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(lb.addr).await.unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the balancer");
    let mut request = format!("wss://localhost:{}/ws", lb.addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "origin",
        format!("https://localhost:{}", lb.addr.port())
            .parse()
            .unwrap(),
    );
    let (mut socket, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("handshake in time")
            .expect("wss handshake");

    let browser_id = {
        let mut setup = a.client().await;
        setup.register("secure", "pw").await
    };
    socket
        .send(Message::text(format!(
            r#"{{"msgid":1,"id":{browser_id},"password":"pw","rid":1}}"#
        )))
        .await
        .unwrap();
    socket
        .send(Message::text(format!(
            r#"{{"msgid":6,"toid":{terminal_id},"msg":"over wss","rid":2}}"#
        )))
        .await
        .unwrap();
    assert_eq!(terminal.recv_chat().await.msg, "over wss");
    terminal.chat(browser_id, "back over wss").await;
    let mut got = None;
    while got.is_none() {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a message");
        if let Message::Text(text) = message {
            let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["msgid"] == 6 {
                got = Some(frame["msg"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(got.as_deref(), Some("back over wss"));
    lb.shutdown().await;
    a.stop().await;
}
