//! Operating the `chatserver` binary: the admin server (`/metrics`,
//! `/healthz`, `/readyz`, its token), the drain at SIGTERM, `--check`, and
//! the log line at each connection end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::backend::{http_get, scrape};
use testkit::bin::{run_to_exit, Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;
use testkit::relay::mariadb_relay;
use testkit::run::temp_dir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_chatserver");

fn chatserver(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["127.0.0.1", "0"])
        .args(CHEAP_HASHING)
        .args(GENEROUS_LIMITS)
        .args(args)
        .current_dir(dir)
        .env_remove("CHAT_DATABASE_URL")
        .env_remove("CHAT_CONFIG")
        .env("RUST_LOG", std::env::var("OP_LOG").unwrap_or("warn".into()));
    command
}

/// Starts with `--admin` on a free port; returns (process, chat address, admin address).
fn start_with_admin(dir: &Path, args: &[&str]) -> (Process, SocketAddr, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = chatserver(dir, args);
    command
        .args(["--admin", &admin.to_string()])
        .stderr(Stdio::inherit());
    let (process, addr) = Process::start_listening(&mut command);
    (process, addr, admin)
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let get = |m: &HashMap<String, f64>| m.get(key).copied().unwrap_or(0.0);
    assert!(after.contains_key(key), "{key} missing from /metrics");
    get(after) - get(before)
}

/// Every counter named in issue 13 moves by what a scripted session did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_session() {
    let dir = temp_dir("op-metrics");
    let (_child, addr, admin) = start_with_admin(&dir, &[]);
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let (code, body) = http_get(admin, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let before = scrape(admin).await;
    assert!(before.contains_key("chatserver_build_info{version=\"0.1.0\"}"));

    let (mut alice, alice_id) = Client::user(addr, "alice").await; // register + login
    let mut bob = Client::connect(addr).await;
    let bob_id = bob.register("bob", "pw").await;
    let ack = bob.login(bob_id, "pw").await;
    let token = ack.token.expect("v2 login gets a token");
    drop(bob);
    let mut wrong = Client::connect(addr).await;
    let refused = wrong.call(&req::login(alice_id, "nope")).await;
    assert!(matches!(refused, Reply::Error(ref f) if f.errno == Errno::BadCredentials));
    // A v1 client waiting, then bob back by token.
    // Registered on another connection: a v2 frame makes a connection v2.
    let carol_id = Client::connect(addr).await.register("carol", "pw").await;
    let mut carol = Client::connect(addr).await;
    carol.send_v1(&req::login(carol_id, "pw")).await;
    carol.recv().await;
    let mut bob = Client::connect(addr).await;
    bob.login_with_token(bob_id, &token, None).await;
    alice.chat(bob_id, "hi").await;
    bob.recv_chat().await;
    alice.chat(carol_id, "hi carol").await;
    // Two messages wait for dave, replayed right after his LOGIN_ACK.
    let dave_id = Client::connect(addr).await.register("dave", "pw").await;
    alice.chat(dave_id, "one").await;
    alice.chat(dave_id, "two").await;
    let mut dave = Client::connect(addr).await;
    let ack = dave.login(dave_id, "pw").await;
    assert_eq!(ack.offline.len(), 2, "the backlog, as testkit collects it");

    let after = scrape(admin).await;
    let m = |key: &str| moved(&before, &after, key);
    assert_eq!(m("chatserver_registrations_total"), 4.0);
    assert_eq!(m("chatserver_logins_total{errno=\"0\"}"), 5.0);
    assert_eq!(m("chatserver_logins_total{errno=\"1\"}"), 1.0);
    assert_eq!(m("chatserver_token_logins_total"), 1.0);
    assert_eq!(
        m("chatserver_requests_total{msgid=\"one_chat\",errno=\"0\"}"),
        4.0
    );
    assert_eq!(
        m("chatserver_requests_total{msgid=\"register\",errno=\"0\"}"),
        4.0
    );
    assert_eq!(m("chatserver_deliveries_total{path=\"stored\"}"), 4.0);
    assert_eq!(m("chatserver_deliveries_total{path=\"local\"}"), 2.0);
    assert_eq!(m("chatserver_deliveries_total{path=\"cluster\"}"), 0.0);
    assert_eq!(after["chatserver_connections{state=\"v2\"}"], 3.0);
    assert_eq!(after["chatserver_connections{state=\"v1\"}"], 1.0);
    assert_eq!(after["chatserver_connections{state=\"pre_login\"}"], 1.0);
    // 4 registrations and 5 password checks; the token login hashed nothing.
    assert_eq!(m("chatserver_hash_seconds_count"), 9.0);
    assert_eq!(m("chatserver_hash_wait_seconds_count"), 9.0);
    // Every login is followed by its inbox replay: dave's two messages.
    assert_eq!(m("chatserver_inbox_replay_messages_count"), 5.0);
    assert_eq!(m("chatserver_inbox_replay_messages_sum"), 2.0);
    assert!(m("chatserver_inbox_replay_bytes_sum") > 2.0 * "two".len() as f64);
    // Database calls by operation, timed in the store.
    assert_eq!(
        m("chatserver_db_call_seconds_count{op=\"create_user\"}"),
        4.0
    );
    assert_eq!(
        m("chatserver_db_call_errors_total{op=\"create_user\"}"),
        0.0
    );
    assert_eq!(
        m("chatserver_db_call_seconds_count{op=\"token_owner\"}"),
        1.0
    );
    assert_eq!(
        m("chatserver_db_call_seconds_count{op=\"credentials\"}"),
        5.0
    );
    assert_eq!(after["chatserver_cluster_breaker_open"], 0.0);
    assert_eq!(m("chatserver_mailbox_deferrals_total"), 0.0);
    assert!(after.contains_key("chatserver_hash_queue"));
    assert!(after.contains_key("chatserver_unavailable_errors_total{system=\"database\"}"));
    assert_eq!(
        m("chatserver_limit_refusals_total{kind=\"login_rate\"}"),
        0.0
    );
    // A limit hit is counted by kind.
    let mut big = Client::connect(addr).await;
    big.send_raw(&vec![b'x'; 70_000]).await;
    let _ = big.closed_within(WAIT).await;
    let last = scrape(admin).await;
    assert_eq!(
        moved(
            &after,
            &last,
            "chatserver_limit_refusals_total{kind=\"frame_too_large\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &after,
            &last,
            "chatserver_connection_closes_total{reason=\"frame_too_large\"}"
        ),
        1.0
    );
}

/// A receiver that does not read: once its socket buffers are full, pushes
/// are deferred (counted) instead of queued, and all of them are still
/// stored and counted as local deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_pushes_are_counted() {
    const MESSAGES: usize = 250;
    let dir = temp_dir("op-defer");
    let (_child, addr, admin) = start_with_admin(
        &dir,
        &["--outbound-queue", "1", "--outbound-queue-bytes", "65536"],
    );
    let (_sleeper, sleeper_id) = Client::user(addr, "sleeper").await;
    let (mut sender, _) = Client::user(addr, "flood").await;
    let before = scrape(admin).await;
    let body = "s".repeat(60_000);
    for _ in 0..MESSAGES {
        sender.call_ok(&req::chat(sleeper_id, &body)).await;
    }
    let after = scrape(admin).await;
    let m = |key: &str| moved(&before, &after, key);
    assert_eq!(
        m("chatserver_deliveries_total{path=\"local\"}"),
        MESSAGES as f64
    );
    let deferred = m("chatserver_mailbox_deferrals_total");
    assert!(
        deferred > 0.0 && deferred < MESSAGES as f64,
        "{deferred} deferred"
    );
}

/// Sends `GET path` with an optional bearer token; returns the status code.
async fn get_status(admin: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    get_raw(admin, path, token)
        .await
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The body of `GET path` with the bearer `token`.
async fn get_body(admin: SocketAddr, path: &str, token: &str) -> String {
    let raw = get_raw(admin, path, Some(token)).await;
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

async fn get_raw(admin: SocketAddr, path: &str, token: Option<&str>) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .expect("admin answers")
        .unwrap();
    text
}

/// With a token, requests without it get 401; a non-loopback admin address
/// without a token is refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_and_public_addresses_need_one() {
    let dir = temp_dir("op-token");
    let (_child, _addr, admin) = start_with_admin(&dir, &["--admin-token", "s3cret"]);
    assert_eq!(get_status(admin, "/metrics", None).await, 401);
    assert_eq!(get_status(admin, "/readyz", Some("wrong")).await, 401);
    assert_eq!(get_status(admin, "/metrics", Some("s3cret")).await, 200);
    assert_eq!(get_status(admin, "/readyz", Some("s3cret")).await, 200);
    let text = get_body(admin, "/metrics", "s3cret").await;
    assert!(
        text.contains("chatserver_admin_unauthorized_total 2"),
        "{text}"
    );

    let exit = run_to_exit(
        chatserver(&dir, &["--admin", "0.0.0.0:0"]),
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    assert!(exit.stderr.contains("admin-token"), "{}", exit.stderr);
}

/// SIGTERM: new connections are refused, `/readyz` says 503, v2 sessions
/// get GOAWAY spread over the drain period, the v1 session closes last, and
/// the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_v2_sessions_with_goaway_then_closes_v1() {
    let dir = temp_dir("op-drain");
    let (child, addr, admin) = start_with_admin(&dir, &["--drain-period", "3s"]);
    let mut v2 = Vec::new();
    for i in 0..8 {
        v2.push(Client::user(addr, &format!("v2user{i}")).await.0);
    }
    let v1_id = Client::connect(addr).await.register("old", "pw").await;
    let mut v1 = Client::connect(addr).await;
    v1.send_v1(&req::login(v1_id, "pw")).await;
    v1.recv().await;

    let stopping = Instant::now();
    child.signal("TERM");
    let deadline = Deadline::after(WAIT);
    loop {
        let (code, body) = http_get(admin, "/readyz").await;
        if code == 503 && body.contains("shutting down") {
            break;
        }
        assert!(!deadline.passed(), "/readyz still {code} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Client::try_connect(addr).await.is_err(),
        "no longer accepting"
    );
    let mut goaway_times = Vec::new();
    for client in &mut v2 {
        let frames = client.expect_closed(Duration::from_secs(6)).await;
        assert!(
            matches!(&frames[..], [Incoming { frame: ServerFrame::GoAway(g), .. }] if g.reason == "shutdown"),
            "{frames:?}"
        );
        goaway_times.push(stopping.elapsed());
    }
    let v1_closed = {
        let _ = v1.expect_closed(Duration::from_secs(6)).await;
        stopping.elapsed()
    };
    let last_goaway = goaway_times.iter().max().unwrap();
    assert!(
        v1_closed >= Duration::from_millis(2900),
        "v1 closed at the end of the drain, not at {v1_closed:?}"
    );
    assert!(v1_closed >= *last_goaway, "v1 last");
    let (status, _) = child.wait_timeout_async(Duration::from_secs(5)).await;
    assert_eq!(status.expect("exits after the drain").code(), Some(0));
}

/// `--check` prints the effective config with secrets masked and exits 0;
/// an invalid one exits 1 naming the option. Nothing is bound or created.
#[test]
fn check_validates_and_masks_secrets() {
    let dir = temp_dir("op-check");
    let exit = run_to_exit(
        chatserver(
            &dir,
            &[
                "--check",
                "--database-url",
                "mysql://root:hunter2@127.0.0.1:3306/chat",
                "--admin",
                "127.0.0.1:9100",
                "--admin-token",
                "tok3n",
            ],
        ),
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stdout.contains("mysql://root:***@127.0.0.1:3306/chat"),
        "{}",
        exit.stdout
    );
    assert!(exit.stdout.contains("9100"), "{}", exit.stdout);
    assert!(exit.stdout.contains("drain_period"), "{}", exit.stdout);
    assert!(!exit.stdout.contains("hunter2") && !exit.stdout.contains("tok3n"));
    assert!(!dir.join("chat.db").exists());

    let exit = run_to_exit(
        chatserver(&dir, &["--check", "--drain-period", "soon"]),
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 1);
    assert!(exit.stderr.contains("drain-period"), "{}", exit.stderr);
}

/// Each connection end is one JSON line with user, address, duration,
/// bytes and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_end_is_one_json_line() {
    let dir = temp_dir("op-log");
    let mut command = chatserver(&dir, &["--log-format", "json"]);
    command.env("RUST_LOG", "info").stderr(Stdio::piped());
    let (child, addr) = Process::start_listening(&mut command);
    let (mut alice, id) = Client::user(addr, "alice").await;
    alice.ping().await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.signal("TERM");
    let (status, mut child) = child.wait_timeout_async(Duration::from_secs(15)).await;
    assert!(status.is_some());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let ends: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "connection closed")
        .collect();
    assert_eq!(ends.len(), 1, "{stderr}");
    let fields = &ends[0]["fields"];
    assert_eq!(fields["user"], id);
    assert_eq!(fields["address"], "127.0.0.1");
    assert_eq!(fields["reason"], "peer closed the connection");
    assert!(fields["duration_ms"].is_u64());
    assert!(fields["bytes_in"].as_u64().unwrap() > 0);
    assert!(fields["bytes_out"].as_u64().unwrap() > 0);
}

/// `/readyz` answers 503 naming the database while MariaDB is cut off, and
/// 200 again once it is back; `/healthz` stays 200 throughout. The cut
/// closed every pooled connection: the first requests after it must get
/// new ones, not fail on the dead ones (the pool checks a connection that
/// has been idle before handing it out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database() {
    let dir = temp_dir("op-ready");
    let (relay, url) = mariadb_relay().await;
    let (_child, addr, admin) = start_with_admin(&dir, &["--database-url", &url]);
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (mut alice, alice_id) = Client::user(addr, "alice").await;
    relay.cut();
    wait_for_ready(admin, 503, "database").await;
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    relay.restore();
    wait_for_ready(admin, 200, "ready").await;
    let (mut bob, bob_id) = Client::user(addr, "bob").await;
    alice.chat(bob_id, "after the cut").await;
    assert_eq!(bob.recv_chat().await.msg, "after the cut");
    let mut carol = Client::connect(addr).await;
    let refused = carol.call(&req::login(alice_id, "wrong")).await;
    assert!(matches!(refused, Reply::Error(ref f) if f.errno == Errno::BadCredentials));
}

/// Polls `/readyz` (within 20 s) until it answers `code` with `needle` in the body.
async fn wait_for_ready(admin: SocketAddr, code: u16, needle: &str) {
    let deadline = Deadline::after(Duration::from_secs(20));
    loop {
        let (got, body) = http_get(admin, "/readyz").await;
        if got == code && body.contains(needle) {
            return;
        }
        assert!(!deadline.passed(), "/readyz still {got} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_metric(admin: SocketAddr, key: &str, value: f64) {
    let deadline = Deadline::after(WAIT);
    loop {
        let got = scrape(admin).await.get(key).copied();
        if got == Some(value) {
            return;
        }
        assert!(!deadline.passed(), "{key} is {got:?}, not {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server in cluster mode on `redis` (MariaDB, a 1.5 s presence lease:
/// heartbeats and subscription probes every 500 ms), ready and subscribed.
/// Ready needs the heartbeat only: a loss of Redis before the first
/// subscription would not count as a reset. Returns (process, admin address).
async fn start_in_cluster(
    dir: &Path,
    redis: &testkit::redis::RedisServer,
) -> (Process, SocketAddr) {
    let url = testkit::run::fresh_mariadb_url();
    let (child, _addr, admin) = start_with_admin(
        dir,
        &[
            "--database-url",
            &url,
            "--redis-url",
            &redis.url(),
            "--redis-prefix",
            &testkit::run::redis_prefix(),
            "--presence-lease",
            "1500ms",
        ],
    );
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    wait_for_metric(admin, "chatserver_cluster_subscribed", 1.0).await;
    (child, admin)
}

/// Waits until the subscription was re-established since `before`;
/// returns that scrape.
async fn wait_for_subscription_reset(
    admin: SocketAddr,
    before: &HashMap<String, f64>,
) -> HashMap<String, f64> {
    let deadline = Deadline::after(WAIT);
    loop {
        let back = scrape(admin).await;
        if moved(
            before,
            &back,
            "chatserver_cluster_subscription_resets_total",
        ) >= 1.0
        {
            return back;
        }
        assert!(
            !deadline.passed(),
            "the subscription was never re-established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In cluster mode `/readyz` also needs Redis: 503 naming it once the
/// heartbeat finds it gone, 200 again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_in_cluster_mode() {
    let dir = temp_dir("op-ready-redis");
    let port = free_port();
    let mut redis = testkit::redis::RedisServer::start(port);
    let (_child, admin) = start_in_cluster(&dir, &redis).await;
    let before = scrape(admin).await;
    assert_eq!(before["chatserver_cluster_breaker_open"], 0.0);
    assert!(before["chatserver_redis_call_seconds_count{op=\"beat\"}"] >= 1.0);
    redis.kill();
    wait_for_ready(admin, 503, "redis").await;
    let down = scrape(admin).await;
    assert_eq!(down["chatserver_cluster_breaker_open"], 1.0);
    let errors = |m: &HashMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("chatserver_redis_call_errors_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(errors(&down) > errors(&before), "redis errors counted");
    let _redis = testkit::redis::RedisServer::start(port);
    wait_for_ready(admin, 200, "ready").await;
    // The subscriber is cut off with Redis and comes back (more than once
    // when a first attempt meets Redis still starting: each counts).
    let back = wait_for_subscription_reset(admin, &before).await;
    assert_eq!(back["chatserver_cluster_breaker_open"], 0.0);
}

/// A Redis that goes silent without closing its connections (SIGSTOP, as a
/// frozen host or a cut network would) is noticed by the subscriber's
/// probe: once Redis answers again the server has subscribed anew, rather
/// than waiting on a connection that might never speak again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_makes_the_subscriber_subscribe_again() {
    let dir = temp_dir("op-silent-redis");
    let redis = testkit::redis::RedisServer::start(free_port());
    let (_child, admin) = start_in_cluster(&dir, &redis).await;
    let before = scrape(admin).await;
    redis.pause();
    // A probe period (500 ms) plus the 2 s call timeout.
    wait_for_metric(admin, "chatserver_cluster_subscribed", 0.0).await;
    redis.resume();
    wait_for_ready(admin, 200, "ready").await;
    wait_for_subscription_reset(admin, &before).await;
}

/// `--db-pool-size` bounds what one server holds of MariaDB's connections
/// (a cluster of many servers must stay under its max_connections): 30
/// clients registering and logging in at once are all served, by at most
/// the pool's 2 plus the writer's 1 (a quarter of the pool, at least 1),
/// the readiness probe's 1 and the inbox sweeper's 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_pool_size_bounds_the_connections_to_mariadb() {
    let dir = temp_dir("op-pool-size");
    let url = testkit::run::fresh_mariadb_url();
    let (_child, addr, _admin) =
        start_with_admin(&dir, &["--database-url", &url, "--db-pool-size", "2"]);
    let database = url.rsplit('/').next().unwrap().to_owned();
    sqlx::any::install_default_drivers();
    let watcher = sqlx::AnyPool::connect(&url).await.unwrap();
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampling = {
        let most = most.clone();
        tokio::spawn(async move {
            loop {
                let held: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE db = ?",
                )
                .bind(&database)
                .fetch_one(&watcher)
                .await
                .unwrap();
                // The watcher's own connection is one of them.
                most.fetch_max(held - 1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let clients: Vec<_> = (0..30)
        .map(|n| tokio::spawn(async move { Client::user(addr, &format!("u{n}")).await }))
        .collect();
    for client in clients {
        client.await.expect("every client served");
    }
    sampling.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=5).contains(&most), "{most} connections held");

    let exit = run_to_exit(
        chatserver(&dir, &["--check", "--db-pool-size", "0"]),
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 1, "{}", exit.stdout);
    assert!(exit.stderr.contains("db-pool-size"), "{}", exit.stderr);
}
