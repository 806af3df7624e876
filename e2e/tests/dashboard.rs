//! The Grafana dashboard in config/ queries only metrics that exist: every
//! `chatserver_*` and `balancer_*` name in its PromQL (panel targets and
//! template queries) is in a live `/metrics` of the real chatserver binary
//! (cluster mode, so the cluster metrics are there) or of the balancer.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::lb_toml;
use testkit::backend::http_get;
use testkit::bin::{path, Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::lb::Lb;
use testkit::prelude::*;
use testkit::run::{fresh_mariadb_url, redis_prefix, redis_url, temp_dir};

const DASHBOARD: &str = "../config/grafana-chatchat.json";

/// Every string under a `expr` or `query`/`definition` key of the dashboard.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(text)) => {
                        out.push(text.clone())
                    }
                    ("query", serde_json::Value::String(text)) if text.contains('(') => {
                        out.push(text.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Identifiers starting with `chatserver_` or `balancer_` in PromQL text.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = promql.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let word = &promql[start..i];
            // Skip label values ("...") and label names (followed by =, !=, =~).
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if !quoted && (word.starts_with("chatserver_") || word.starts_with("balancer_")) {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The sample names a Prometheus server would store from `text`: each
/// sample line's name, plus every family's names by its `# TYPE` (so a
/// labelled family with no sample yet still counts).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

async fn scrape(admin: SocketAddr) -> String {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("reading the dashboard"))
            .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));
    let mut texts = Vec::new();
    queries(&dashboard, &mut texts);
    let wanted: BTreeSet<String> = texts.iter().flat_map(|t| metric_names(t)).collect();
    assert!(
        wanted.iter().any(|n| n.starts_with("chatserver_"))
            && wanted.iter().any(|n| n.starts_with("balancer_")),
        "{wanted:?}"
    );

    // The real chatserver, in cluster mode, with its admin server.
    let dir = temp_dir("dashboard");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(path("chatserver"));
    command
        .args(["127.0.0.1", "0"])
        .args(CHEAP_HASHING)
        .args(GENEROUS_LIMITS)
        .args(["--database-url", &fresh_mariadb_url()])
        .args([
            "--redis-url",
            &redis_url(),
            "--redis-prefix",
            &redis_prefix(),
        ])
        .args(["--admin", &admin.to_string()])
        .current_dir(&dir)
        .env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_CONFIG")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let (_server, chat_addr) = Process::start_listening(&mut command);
    let lb = Lb::start(&lb_toml(&[chat_addr]), true).await;
    // A little traffic through the balancer, so labelled families have samples.
    assert!(wait_until(WAIT, || lb.backend_up(&chat_addr.to_string()) == Some(true)).await);
    let (mut alice, _) = {
        let mut client = Client::connect(lb.addr).await;
        let id = client.register("dash-alice", "pw").await;
        client.login(id, "pw").await;
        (client, id)
    };
    let mut bob = Client::connect(lb.addr).await;
    let bob_id = bob.register("dash-bob", "pw").await;
    bob.login(bob_id, "pw").await;
    alice.chat(bob_id, "hi").await;
    bob.recv_chat().await;

    let mut live = exposed(&scrape(admin).await);
    live.extend(exposed(&scrape(lb.admin.expect("admin")).await));
    let missing: Vec<&String> = wanted.iter().filter(|n| !live.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no binary exposes: {missing:?}"
    );
    println!("{} metric names checked", wanted.len());
    lb.shutdown().await;
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, op) (rate(chatserver_db_call_seconds_bucket{instance=~"$i",op!="balancer_x"}[5m]))) / balancer_backend_up"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["balancer_backend_up", "chatserver_db_call_seconds_bucket"]
    );
    let text = "# TYPE chatserver_logins counter\n# TYPE chatserver_x histogram\nchatserver_up 1\n";
    let names = exposed(text);
    for name in [
        "chatserver_logins_total",
        "chatserver_x_bucket",
        "chatserver_x_count",
        "chatserver_up",
    ] {
        assert!(names.contains(name), "{name}");
    }
}
