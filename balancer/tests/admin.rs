//! The admin server: `/metrics` in Prometheus text, `/status` in JSON.

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
