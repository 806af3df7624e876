//! Cluster mode against the real MariaDB and Redis: several servers behave
//! like one. Each test uses its own database and its own Redis key prefix;
//! the Redis-outage test runs its own redis-server on a free port.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatserver::Config;
use common::{fresh_database_url, test_config, Backend, Client, TestServer};
use serde_json::{json, Value};

fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings shared by every server of one test cluster.
fn cluster_config(database_url: &str, redis_url: &str, prefix: &str) -> Config {
    let mut config = test_config(Backend::MariaDb);
    config.database_url = database_url.to_owned();
    config.redis_url = Some(redis_url.to_owned());
    config.redis_prefix = prefix.to_owned();
    config.presence_lease = Duration::from_secs(2);
    config.name = None;
    config
}

fn fresh_prefix() -> String {
    format!("test:{:08x}:", rand::random::<u32>())
}

async fn start_cluster(count: usize) -> Vec<TestServer> {
    let database = fresh_database_url(Backend::MariaDb);
    let prefix = fresh_prefix();
    let mut servers = Vec::new();
    for _ in 0..count {
        servers
            .push(TestServer::start_with(cluster_config(&database, &redis_url(), &prefix)).await);
    }
    servers
}

async fn stop_all(servers: Vec<TestServer>) {
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_chat_as_one() {
    let servers = start_cluster(2).await;
    let (mut alice, alice_id) = Client::user(&servers[0], "alice").await;
    let (mut bob, bob_id) = Client::user(&servers[1], "bob").await;

    // 1:1 both ways across servers.
    let ack = alice
        .call(json!({"msgid": 6, "toid": bob_id, "msg": "hi bob"}))
        .await;
    assert_eq!(ack["errno"], 0);
    let push = bob.recv().await;
    assert_eq!(push["msg"], "hi bob");
    assert_eq!(push["name"], "alice");
    assert_eq!(push["mid"], ack["mid"]);
    bob.call(json!({"msgid": 6, "toid": alice_id, "msg": "hi alice"}))
        .await;
    assert_eq!(alice.recv().await["msg"], "hi alice");

    // Presence is cluster-wide: a friend on the other server shows online.
    alice.call(json!({"msgid": 7, "friendid": bob_id})).await;
    alice.call(json!({"msgid": 3})).await;
    let ack = alice.login(alice_id, "pw").await;
    assert_eq!(
        ack["friends"],
        json!([{"id": bob_id, "name": "bob", "state": "online"}])
    );

    // No double login anywhere in the cluster.
    let mut intruder = servers[0].client().await;
    let refused = intruder
        .call(json!({"msgid": 1, "id": bob_id, "password": "pw"}))
        .await;
    assert_eq!(refused["errno"], 2);

    // Offline for a user logged in nowhere, delivered at login on either server.
    bob.call(json!({"msgid": 3})).await;
    alice
        .call(json!({"msgid": 6, "toid": bob_id, "msg": "while away"}))
        .await;
    // Log in on the server where bob was not before.
    let mut bob_on_a = servers[0].client().await;
    let ack = bob_on_a.login(bob_id, "pw").await;
    assert_eq!(ack["offlinemsg"][0]["msg"], "while away");
    alice
        .call(json!({"msgid": 6, "toid": bob_id, "msg": "same server now"}))
        .await;
    assert_eq!(bob_on_a.recv().await["msg"], "same server now");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_over_three_servers() {
    let servers = start_cluster(3).await;
    let (mut owner, owner_id) = Client::user(&servers[0], "owner").await;
    let (mut m1, _) = Client::user(&servers[1], "m1").await;
    let (mut m2, _) = Client::user(&servers[2], "m2").await;
    let (mut m3, _) = Client::user(&servers[2], "m3").await;
    let mut away = servers[1].client().await;
    let away_id = away.register("away", "pw").await;
    let group = owner.call(json!({"msgid": 8, "groupname": "spread"})).await["groupid"]
        .as_i64()
        .unwrap();
    // The owner's server cached the membership; joins elsewhere must reach it.
    owner
        .call(json!({"msgid": 10, "groupid": group, "msg": "alone"}))
        .await;
    for member in [&mut m1, &mut m2, &mut m3] {
        assert_eq!(
            member.call(json!({"msgid": 9, "groupid": group})).await["errno"],
            0
        );
    }
    away.login(away_id, "pw").await;
    away.call(json!({"msgid": 9, "groupid": group})).await;
    away.call(json!({"msgid": 3})).await;

    let sent = owner
        .call(json!({"msgid": 10, "groupid": group, "msg": "hello all"}))
        .await;
    assert_eq!(sent["errno"], 0);
    for member in [&mut m1, &mut m2, &mut m3] {
        let push = member.recv().await;
        assert_eq!(push["msg"], "hello all");
        assert_eq!(push["id"], owner_id);
        assert_eq!(push["mid"], sent["mid"]);
    }
    m2.call(json!({"msgid": 10, "groupid": group, "msg": "from m2"}))
        .await;
    assert_eq!(owner.recv().await["msg"], "from m2");
    assert_eq!(m1.recv().await["msg"], "from m2");
    assert_eq!(m3.recv().await["msg"], "from m2");
    owner.expect_silence(Duration::from_millis(200)).await;
    let ack = away.login(away_id, "pw").await;
    let texts: Vec<&str> = ack["offlinemsg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello all", "from m2"]);
    stop_all(servers).await;
}

/// Many logins for one account at the same instant on three servers:
/// exactly one wins, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_across_servers_have_one_winner() {
    let servers = start_cluster(3).await;
    let mut setup = servers[0].client().await;
    let mut accounts = Vec::new();
    for i in 0..15 {
        accounts.push(setup.register(&format!("racer{i}"), "pw").await);
    }
    for id in accounts {
        let mut clients = Vec::new();
        for i in 0..9 {
            clients.push(servers[i % 3].client().await);
        }
        let attempts = clients.into_iter().map(|mut client| async move {
            let ack = client
                .call(json!({"msgid": 1, "id": id, "password": "pw"}))
                .await;
            (ack["errno"].as_i64().unwrap(), client)
        });
        let results = futures::future::join_all(attempts).await;
        let winners = results.iter().filter(|(errno, _)| *errno == 0).count();
        let refused = results.iter().filter(|(errno, _)| *errno == 2).count();
        assert_eq!(
            winners,
            1,
            "account {id}: {:?}",
            results.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        assert_eq!(refused, 8);
    }
    stop_all(servers).await;
}

/// A receiver leaving while messages to it cross servers: every message is
/// pushed before the LOGOUT reply or stored for the next login, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_leaving_during_cross_server_traffic_loses_nothing() {
    const MESSAGES: u32 = 400;
    let servers = start_cluster(2).await;
    let (mut sender, _) = Client::user(&servers[0], "sender").await;
    let (mut receiver, receiver_id) = Client::user(&servers[1], "receiver").await;
    let sending = async {
        for i in 0..MESSAGES {
            sender
                .send(json!({"msgid": 6, "toid": receiver_id, "msg": i.to_string()}))
                .await;
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sender.call(json!({"msgid": 12})).await;
    };
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    let receiving = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        receiver
            .send(json!({"msgid": 3, "v": 2, "rid": "bye"}))
            .await;
        loop {
            let frame = receiver.recv().await;
            if frame["rid"] == "bye" {
                break;
            }
            *counts
                .entry(frame["msg"].as_str().unwrap().parse().unwrap())
                .or_default() += 1;
        }
        // Abruptly gone, too.
        drop(receiver);
    };
    tokio::join!(sending, receiving);
    let mut back = servers[0].client().await;
    let ack = back.login(receiver_id, "pw").await;
    for message in ack["offlinemsg"].as_array().unwrap() {
        *counts
            .entry(message["msg"].as_str().unwrap().parse().unwrap())
            .or_default() += 1;
    }
    // What the other server was still storing when the LOGIN_ACK was built
    // comes right after it, pushed (an offline sweep).
    while (counts.len() as u32) < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(5), back.next_frame()).await {
            Ok(Some(frame)) => {
                *counts
                    .entry(frame["msg"].as_str().unwrap().parse().unwrap())
                    .or_default() += 1;
            }
            _ => break,
        }
    }
    back.expect_silence(Duration::from_millis(300)).await;
    let missing: Vec<u32> = (0..MESSAGES).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(counts.values().all(|n| *n == 1), "duplicates");
    stop_all(servers).await;
}

// ---- tests with processes: a killed server, a Redis restarted ----

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Counts every copy of every numbered message a receiver saw.
fn tally(counts: &mut BTreeMap<u32, u32>, frames: &[Value]) {
    for frame in frames {
        *counts
            .entry(frame["msg"].as_str().unwrap().parse().unwrap())
            .or_default() += 1;
    }
}

/// Redis dies and comes back during cross-server traffic: local traffic
/// never stops, logins get errno 10 meanwhile, nothing is lost, and
/// cross-server delivery resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_traffic_loses_nothing() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let database = fresh_database_url(Backend::MariaDb);
    let prefix = fresh_prefix();
    let a = TestServer::start_with(cluster_config(&database, &redis.url(), &prefix)).await;
    let b = TestServer::start_with(cluster_config(&database, &redis.url(), &prefix)).await;
    let (mut sender, _) = Client::user(&a, "sender").await;
    let (mut local, local_id) = Client::user(&a, "local").await;
    let (mut remote, remote_id) = Client::user(&b, "remote").await;
    let mut spare = b.client().await;
    let spare_id = spare.register("spare", "pw").await;

    let mut seq = 0u32;
    let mut received = BTreeMap::new();
    // Phase 1: Redis up.
    for _ in 0..50 {
        sender
            .call(json!({"msgid": 6, "toid": remote_id, "msg": seq.to_string()}))
            .await;
        seq += 1;
    }
    // Phase 2: Redis gone. Local delivery goes on; logins are refused with errno 10.
    redis.kill();
    for _ in 0..50 {
        let ack = sender
            .call(json!({"msgid": 6, "toid": remote_id, "msg": seq.to_string()}))
            .await;
        assert_eq!(ack["errno"], 0, "the message is stored even without Redis");
        seq += 1;
    }
    sender
        .call(json!({"msgid": 6, "toid": local_id, "msg": "local still works"}))
        .await;
    assert_eq!(local.recv().await["msg"], "local still works");
    let refused = spare
        .call(json!({"msgid": 1, "id": spare_id, "password": "pw"}))
        .await;
    assert_eq!(refused["errno"], 10);
    // Phase 3: Redis back (empty, as after a crash); delivery resumes by itself.
    let restarted = Instant::now();
    let _redis = Redis::start(port);
    let resumed = loop {
        sender
            .call(json!({"msgid": 6, "toid": remote_id, "msg": seq.to_string()}))
            .await;
        seq += 1;
        let frame = tokio::time::timeout(Duration::from_millis(100), remote.next_frame()).await;
        if let Ok(Some(frame)) = frame {
            tally(&mut received, &[frame]);
            // Pushed live again: pushes for the first messages count too.
            if received.keys().any(|n| *n >= 100) {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "delivery did not resume"
        );
    };
    println!("cross-server delivery resumed {resumed:?} after Redis restarted");
    assert_eq!(
        spare.login(spare_id, "pw").await["errno"],
        0,
        "logins work again"
    );
    sender.call(json!({"msgid": 12})).await;
    // Collect the rest: pushes still in flight, then the stored ones.
    remote.send(json!({"msgid": 3, "v": 2, "rid": "bye"})).await;
    loop {
        let frame = remote.recv().await;
        if frame["rid"] == "bye" {
            break;
        }
        tally(&mut received, &[frame]);
    }
    let ack = remote.login(remote_id, "pw").await;
    tally(&mut received, ack["offlinemsg"].as_array().unwrap());
    let missing: Vec<u32> = (0..seq).filter(|i| !received.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(received.values().all(|n| *n == 1), "duplicates");
    println!("{seq} messages sent across a Redis restart, all delivered once");
    a.stop().await;
    b.stop().await;
}

fn start_binary(config: &Config) -> (Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatserver"))
        .args([
            "127.0.0.1",
            "0",
            "--database-url",
            &config.database_url,
            "--redis-url",
            config.redis_url.as_deref().unwrap(),
            "--redis-prefix",
            &config.redis_prefix,
            "--presence-lease",
            "2s",
            "--hash-memory-kib",
            "64",
            "--hash-iterations",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("ready line")
        .parse()
        .unwrap();
    (child, addr)
}

/// A server killed with SIGKILL does not lock its users out: they log in
/// elsewhere within the lease, and friends see them offline by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_killed_server_log_in_elsewhere_within_the_lease() {
    let database = fresh_database_url(Backend::MariaDb);
    let config = cluster_config(&database, &redis_url(), &fresh_prefix());
    let survivor = TestServer::start_with(config.clone()).await;
    let (mut doomed, doomed_addr) = start_binary(&config);
    let mut victim = Client::connect(doomed_addr).await;
    let victim_id = victim.register("victim", "pw").await;
    victim.login(victim_id, "pw").await;
    let (mut friend, friend_id) = Client::user(&survivor, "friend").await;
    friend
        .call(json!({"msgid": 7, "friendid": victim_id}))
        .await;

    let mut elsewhere = survivor.client().await;
    let refused = elsewhere
        .call(json!({"msgid": 1, "id": victim_id, "password": "pw"}))
        .await;
    assert_eq!(refused["errno"], 2, "still logged in on the doomed server");

    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let killed = Instant::now();
    let relogin = loop {
        let ack = elsewhere
            .call(json!({"msgid": 1, "id": victim_id, "password": "pw"}))
            .await;
        if ack["errno"] == 0 {
            break killed.elapsed();
        }
        assert_eq!(ack["errno"], 2);
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "still locked out after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("re-login elsewhere {relogin:?} after SIGKILL (lease 2 s)");
    assert!(relogin <= Duration::from_millis(2_500), "{relogin:?}");
    // Messages to the victim meanwhile reach it on its new server.
    friend
        .call(json!({"msgid": 6, "toid": victim_id, "msg": "welcome back"}))
        .await;
    assert_eq!(elsewhere.recv().await["msg"], "welcome back");
    elsewhere.call(json!({"msgid": 3})).await;
    friend.call(json!({"msgid": 3})).await;
    let ack = friend.login(friend_id, "pw").await;
    assert_eq!(ack["friends"][0]["state"], "offline");
    survivor.stop().await;
}
