//! TLS end to end with the real `chatclient --tls`: through our balancer
//! (`[tls]`, terminating TLS) and through Nginx (the `ssl` server block of
//! config/nginx.conf) to two chat servers clustered over MariaDB and
//! Redis. The certificate is made at test time (ECDSA P-256).

use std::path::Path;

use testkit::bin::{code, LineProcess};
use testkit::certs::TestCert;
use testkit::cli::{logged_in, start};
use testkit::lb::Lb;
use testkit::nginx::{render_conf, template, with_tls, Nginx};
use testkit::run::temp_dir;
use testkit::server::Cluster;
use testkit::{free_port, wait_until, WAIT};

mod common;

/// `chatclient --tls` options trusting `ca`.
fn tls_args(ca: &Path) -> Vec<String> {
    [
        "--tls",
        "--ca",
        &ca.display().to_string(),
        "--server-name",
        "localhost",
    ]
    .map(String::from)
    .to_vec()
}

/// Registers `name` through the menu over TLS; the new id.
async fn register(port: u16, name: &str, tls: &[&str]) -> i64 {
    let mut client = start(port, tls);
    client.send(&format!("2\n{name}\npw\n")).await;
    let line = client.expect_out("registered: id ").await;
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    line["registered: id ".len()..].trim().parse().unwrap()
}

/// alice and bob register and log in over TLS through `port`, then chat
/// both ways; returns their running clients.
async fn chat_over_tls(port: u16, tls: &[&str], tag: &str) -> (LineProcess, LineProcess) {
    let alice_id = register(port, &format!("alice-{tag}"), tls).await;
    let bob_id = register(port, &format!("bob-{tag}"), tls).await;
    let mut alice = logged_in(port, alice_id, "pw", tls).await;
    let mut bob = logged_in(port, bob_id, "pw", tls).await;
    alice
        .send(&format!("chat:{bob_id}:hi bob, 你好 over TLS\n"))
        .await;
    bob.expect_out("hi bob, 你好 over TLS").await;
    bob.send(&format!("chat:{alice_id}:hi alice\n")).await;
    alice.expect_out("hi alice").await;
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatclient_tls_through_the_balancer_to_a_two_server_cluster() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let dir = temp_dir("e2e-lb-tls");
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.install(&dir);
    let toml = common::lb_toml(&[a.addr, b.addr]).replacen(
        "[health]",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[health]",
            cert_path.display(),
            key_path.display()
        ),
        1,
    );
    let lb = Lb::start(&toml, false).await;
    let tls = tls_args(&cert_path);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    let (alice, bob) = chat_over_tls(lb.addr.port(), &tls, "lb-tls").await;
    // Smooth round robin put the two logins on different servers: the
    // chat crossed the cluster (Redis), TLS ended at the balancer.
    assert!(
        wait_until(WAIT, || lb
            .status()
            .backends
            .iter()
            .all(|backend| backend.active == 1))
        .await,
        "{:?}",
        lb.status().backends
    );
    let tls_status = lb.status().tls.unwrap();
    assert_eq!(tls_status.handshake_failures, 0);
    assert!(tls_status.handshakes >= 4, "{tls_status:?}");
    for client in [alice, bob] {
        let (status, _, err) = client.finish().await;
        assert_eq!(code(status), 0, "{err:#?}");
    }
    lb.shutdown().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatclient_tls_through_nginx_to_a_two_server_cluster() {
    let cluster = Cluster::new();
    let a = cluster.start_node_behind_proxy(100_000).await;
    let b = cluster.start_node_behind_proxy(100_000).await;
    let dir = temp_dir("e2e-nginx-tls");
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.install(&dir);
    let (plain_port, tls_port) = (free_port(), free_port());
    let conf = with_tls(
        &render_conf(&template(), plain_port, &[a.addr, b.addr]),
        tls_port,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    );
    let nginx = Nginx::start_conf(&conf, tls_port).await;
    let tls = tls_args(&cert_path);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    let (alice, bob) = chat_over_tls(tls_port, &tls, "nginx-tls").await;
    for client in [alice, bob] {
        let (status, _, err) = client.finish().await;
        assert_eq!(code(status), 0, "{err:#?}");
    }
    drop(nginx);
    a.stop().await;
    b.stop().await;
}
