//! Nothing acknowledged is lost, whatever happens to the servers or to
//! Redis: real binaries killed and paused, Redis killed and restarted
//! empty, and clients that resume by `seq` with their token. Cluster mode
//! on the real MariaDB and Redis.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::bin::{Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;
use testkit::redis::RedisServer;
use testkit::resume::ResumingClient;
use testkit::server::{ChatServer, Cluster, Storage};

/// The chatserver binary of `cluster` on 127.0.0.1:`port`.
async fn start_binary(cluster: &Cluster, port: u16, lease: &str) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatserver"));
    command
        .args(["127.0.0.1", &port.to_string()])
        .args(["--database-url", &cluster.database_url])
        .args(["--redis-url", &cluster.redis_url])
        .args(["--redis-prefix", &cluster.prefix])
        .args(["--presence-lease", lease])
        .args(CHEAP_HASHING)
        .args(GENEROUS_LIMITS)
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || Process::start_listening(&mut command))
        .await
        .expect("starter thread")
}

/// Registers `name` (password `pw`) and returns its id; the connection is closed.
async fn register(addr: SocketAddr, name: &str) -> i64 {
    let mut client = Client::connect(addr).await;
    client.register(name, "pw").await
}

/// SIGKILL the sender's server, then the receiver's, in the middle of 5,000
/// messages; each is restarted on its port. The sender re-sends what was
/// not acknowledged (same `cid`), the receiver resumes with token and
/// `since`: every message arrives exactly once, in seq order, and is stored
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_killed_mid_traffic_lose_no_acknowledged_message() {
    const MESSAGES: u32 = 5_000;
    let cluster = Cluster::new();
    let (port_a, port_b) = (free_port(), free_port());
    let (mut a, addr_a) = start_binary(&cluster, port_a, "2s").await;
    let (mut b, addr_b) = start_binary(&cluster, port_b, "2s").await;
    let sender_id = register(addr_a, "sender").await;
    let receiver_id = register(addr_b, "receiver").await;

    let acked = Arc::new(AtomicU32::new(0));
    let sending = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut sender = ResumingClient::new(addr_a, sender_id, "pw");
            for i in 0..MESSAGES {
                sender
                    .send(ChatTarget::User(receiver_id), &i.to_string())
                    .await;
                acked.store(i + 1, Ordering::Relaxed);
            }
            sender.logins
        })
    };
    let receiving = tokio::spawn(async move {
        let mut receiver = ResumingClient::new(addr_b, receiver_id, "pw");
        let mut tally = Tally::new();
        while tally.distinct() < MESSAGES {
            match receiver.next_chat(Duration::from_secs(30)).await {
                Some(chat) => tally.add(&chat),
                None => panic!("nothing for 30 s; missing {:?}", tally.missing(MESSAGES)),
            }
            if tally.distinct().is_multiple_of(200) {
                receiver.confirm().await;
            }
        }
        (tally, receiver.repeated, receiver.logins)
    });

    let deadline = Deadline::after(Duration::from_secs(120));
    for (threshold, which) in [(1_500, "sender's"), (3_500, "receiver's")] {
        while acked.load(Ordering::Relaxed) < threshold {
            deadline.check("sending stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (victim, port) = if which == "sender's" {
            (&mut a, port_a)
        } else {
            (&mut b, port_b)
        };
        victim.kill();
        println!("killed the {which} server at {threshold} acknowledged messages");
        *victim = start_binary(&cluster, port, "2s").await.0;
    }
    let sender_logins = tokio::time::timeout(Duration::from_secs(120), sending)
        .await
        .expect("all sent within 120 s")
        .expect("sender");
    let (tally, repeated, receiver_logins) =
        tokio::time::timeout(Duration::from_secs(120), receiving)
            .await
            .expect("all received within 120 s")
            .expect("receiver");
    tally.assert_each_once(MESSAGES);
    assert_eq!(
        repeated, 0,
        "a resumed login sends nothing at or below since"
    );
    assert!(
        sender_logins >= 2 && receiver_logins >= 2,
        "both reconnected"
    );
    let server = ChatServerProbe(cluster.database_url.clone());
    assert_eq!(
        server.count("SELECT COUNT(*) FROM messages").await,
        i64::from(MESSAGES),
        "re-sent messages (same cid) are stored once"
    );
}

/// Counts rows of a cluster's database.
struct ChatServerProbe(String);

impl ChatServerProbe {
    async fn count(&self, sql: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.0).await.expect("database");
        let count: i64 = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        count
    }
}

/// The receiver's server paused (SIGSTOP) while 700 messages of 60 KB are
/// sent to its user: more than Redis buffers for a pub/sub subscriber (32
/// MB by default), so the subscription is cut. Once it runs again, the
/// receiver gets every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_loses_nothing_sent_to_its_users() {
    const MESSAGES: u32 = 700;
    let cluster = Cluster::new();
    let sender_server = cluster.start_node().await;
    // A long lease: the paused server still holds its user, as in a real
    // pause shorter than the lease.
    let (paused, addr) = start_binary(&cluster, free_port(), "60s").await;
    let receiver_id = register(addr, "receiver").await;
    let mut receiver = ResumingClient::new(addr, receiver_id, "pw");
    assert!(receiver
        .next_chat(Duration::from_millis(100))
        .await
        .is_none());
    let (mut sender, _) = sender_server.user("sender").await;

    paused.signal("STOP");
    let padding = "p".repeat(60_000);
    let started = Instant::now();
    for i in 0..MESSAGES {
        sender
            .call_ok(&req::chat_at(receiver_id, &i.to_string(), &padding))
            .await;
    }
    println!(
        "{MESSAGES} × 60 KB acknowledged in {:?} while the receiver's server was stopped",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    paused.signal("CONT");

    let mut tally = Tally::new();
    while tally.distinct() < MESSAGES {
        match receiver.next_chat(Duration::from_secs(20)).await {
            Some(chat) => tally.add(&chat),
            None => panic!("missing {:?}", tally.missing(MESSAGES)),
        }
    }
    tally.assert_each_once(MESSAGES);
    assert_eq!(receiver.repeated, 0);
    sender_server.stop().await;
}

/// Redis killed and restarted empty ten times while messages cross servers:
/// every message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_ten_times_loses_nothing() {
    const ROUNDS: u32 = 10;
    const PER_PHASE: u32 = 20;
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let cluster = Cluster::on_redis(&redis.url());
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let (mut sender, _) = a.user("sender").await;
    let receiver_id = register(b.addr, "receiver").await;
    let mut receiver = ResumingClient::new(b.addr, receiver_id, "pw");
    assert!(receiver
        .next_chat(Duration::from_millis(100))
        .await
        .is_none());

    let mut sent = 0u32;
    let mut tally = Tally::new();
    for _ in 0..ROUNDS {
        for _ in 0..PER_PHASE {
            sender.chat(receiver_id, &sent.to_string()).await;
            sent += 1;
        }
        redis.kill();
        for _ in 0..PER_PHASE {
            sender.chat(receiver_id, &sent.to_string()).await;
            sent += 1;
        }
        redis = RedisServer::start(port);
        // Read what has come so far, without waiting for stragglers.
        while let Some(chat) = receiver.next_chat(Duration::from_millis(50)).await {
            tally.add(&chat);
        }
    }
    let deadline = Deadline::after(Duration::from_secs(30));
    while tally.distinct() < sent {
        if let Some(chat) = receiver.next_chat(Duration::from_millis(500)).await {
            tally.add(&chat);
        }
        deadline.check(&format!("missing {:?}", tally.missing(sent)));
    }
    tally.assert_each_once(sent);
    assert_eq!(receiver.repeated, 0);
    println!("{sent} messages across {ROUNDS} Redis restarts, each delivered once");
    a.stop().await;
    b.stop().await;
}

/// 1,000 clients reconnecting at once with their tokens: all logged in, and
/// no password is checked (the hashes are made unusable first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_token_reconnects_need_no_password() {
    const USERS: usize = 1_000;
    let server = ChatServer::start(Storage::Sqlite).await;
    let addr = server.addr;
    let mut tokens = Vec::with_capacity(USERS);
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(50) {
        let logins = chunk.iter().map(|i| async move {
            let mut client = Client::connect(addr).await;
            let id = client.register(&format!("u{i}"), "pw").await;
            let ack = client.login(id, "pw").await;
            // Disconnected without LOGOUT: the token stays valid.
            (id, ack.token.expect("a v2 login gets a token"))
        });
        tokens.extend(futures::future::join_all(logins).await);
    }
    let pool = server.db().await;
    sqlx::query("UPDATE users SET password_hash = 'unusable'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let started = Instant::now();
    let logins = tokens.iter().map(|(id, token)| async move {
        let mut client = Client::connect(addr).await;
        let login = Request::Login(protocol::Login {
            id: *id,
            credential: protocol::Credential::Token(token.clone()),
            since: None,
        });
        let deadline = Deadline::after(WAIT);
        loop {
            match client.call(&login).await {
                Reply::LoginOk(ack) => {
                    assert_eq!(ack.id, *id);
                    assert_eq!(
                        ack.token.as_deref(),
                        Some(token.as_str()),
                        "the same token back"
                    );
                    break;
                }
                // The old connection's end not yet noticed by the server.
                Reply::Error(failure) if failure.errno == Errno::AlreadyLoggedIn => {
                    deadline.check("the old login never ended");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("token login of {id}: {other:?}"),
            }
        }
        client
    });
    let clients = futures::future::join_all(logins).await;
    let elapsed = started.elapsed();
    println!(
        "{USERS} parallel token logins in {elapsed:?} ({:.0}/s)",
        USERS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(clients.len(), USERS);
    drop(clients);
    server.stop().await;
}
