//! The admin server: `/metrics` in Prometheus text, `/status` in JSON, a
//! bearer token, and bounds on what a slow or hostile peer can hold.

mod common;

use testkit::backend::{http_get, Mode, TestBackend};
use testkit::lb::{config_toml, Lb};
use testkit::{wait_until, who_serves, Client, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_respond() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let aa = a.address();
    let lb = Lb::start(&config_toml("[health]\nkind = \"tcp\"", &[(&aa, 3)]), true).await;
    let admin = lb.admin.unwrap();

    assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    let mut held = Client::connect(lb.addr).await;
    held.served_by().await;
    assert!(
        wait_until(WAIT, || {
            let s = lb.status();
            s.backends[0].total == 2 && s.backends[0].active == 1
        })
        .await
    );

    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        format!("balancer_backend_up{{backend=\"{aa}\"}} 1"),
        format!("balancer_backend_weight{{backend=\"{aa}\"}} 3"),
        format!("balancer_backend_active_connections{{backend=\"{aa}\"}} 1"),
        format!("balancer_backend_connections_total{{backend=\"{aa}\"}} 2"),
        format!("balancer_backend_connect_failures_total{{backend=\"{aa}\"}} 0"),
        "balancer_client_connections_total 2".to_string(),
        "balancer_reload_failures_total 0".to_string(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    // Two PINGs of 13 bytes went each way's way; PONGs came back.
    let bytes = |name: &str| -> u64 {
        let prefix = format!("{name}{{backend=\"{aa}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    };
    assert_eq!(bytes("balancer_backend_bytes_to_backend_total"), 26);
    assert!(bytes("balancer_backend_bytes_to_client_total") > 26);
    assert!(body.trim_end().ends_with("# EOF"));

    let (code, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["listen"], lb.addr.to_string());
    let backend = &v["backends"][0];
    assert_eq!(backend["address"], aa);
    assert_eq!(backend["up"], true);
    assert_eq!(backend["weight"], 3);
    assert_eq!(backend["total"], 2);
    assert_eq!(backend["active"], 1);
    assert_eq!(v["clients_total"], 2);

    let (code, _) = http_get(admin, "/nope").await;
    assert_eq!(code, 404);
    drop(held);
    lb.shutdown().await;
}

/// Slowloris: 100 connections that never finish their headers. At most
/// `MAX_CONNECTIONS` are held, each for at most `HEADER_TIMEOUT`; the rest
/// are closed at once, and `/status` answers once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_capped_and_timed_out() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = TestBackend::start("a", Mode::Chat).await;
    let lb = Lb::start(
        &config_toml("[health]\nkind = \"tcp\"", &[(&a.address(), 1)]),
        true,
    )
    .await;
    let admin = lb.admin.unwrap();
    let started = Instant::now();
    let mut waiting = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").await;
        waiting.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            // Closed (EOF or reset) is all we wait for.
            let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
            started.elapsed()
        }));
    }
    let mut closed_at = Vec::new();
    for w in waiting {
        closed_at.push(w.await.unwrap());
    }
    let limit = balancer::admin::HEADER_TIMEOUT + Duration::from_secs(2);
    assert!(
        closed_at.iter().all(|&t| t < limit),
        "a half-sent request was held too long: {closed_at:?}"
    );
    let quick = closed_at
        .iter()
        .filter(|&&t| t < Duration::from_secs(2))
        .count();
    assert!(
        quick >= 100 - balancer::admin::MAX_CONNECTIONS,
        "only {quick} refused at once"
    );
    let (code, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["admin_refused"].as_u64().unwrap() >= 100 - balancer::admin::MAX_CONNECTIONS as u64);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_and_never_shown() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let token = "s3cr3t-admin-token-0123456789";
    let toml = config_toml(
        &format!("admin_token = \"{token}\"\n[health]\nkind = \"tcp\""),
        &[(&a.address(), 1)],
    );
    let lb = Lb::start(&toml, true).await;
    let admin = lb.admin.unwrap();
    for path in ["/status", "/metrics"] {
        let (code, _) = common::get_with(admin, path, "").await;
        assert_eq!(code, 401, "{path} without a token");
        let (code, _) = common::get_with(
            admin,
            path,
            "Authorization: Bearer s3cr3t-admin-token-012345678X\r\n",
        )
        .await;
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) =
            common::get_with(admin, path, &format!("Authorization: Bearer {token}\r\n")).await;
        assert_eq!(code, 200, "{path} with the token");
        assert!(!body.contains(token), "{body}");
    }
    assert_eq!(lb.status().admin_unauthorized, 4);
    lb.shutdown().await;
}
