//! Cluster mode against the real MariaDB and Redis: several servers behave
//! like one. Each test uses its own database and its own Redis key prefix;
//! the Redis-outage test runs its own redis-server on a free port.

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::bin::{Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;
use testkit::redis::RedisServer;
use testkit::server::{stop_all, ChatServer, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_chat_as_one() {
    let servers = Cluster::new().start(2).await;
    let (mut alice, alice_id) = servers[0].user("alice").await;
    let (mut bob, bob_id) = servers[1].user("bob").await;

    // 1:1 both ways across servers.
    let mid = alice.chat(bob_id, "hi bob").await;
    let push = bob.recv_chat().await;
    assert_eq!(push.msg, "hi bob");
    assert_eq!(push.name, "alice");
    assert_eq!(push.mid, mid);
    let bob_seen = push.seq.expect("v2 pushes carry seq");
    bob.chat(alice_id, "hi alice").await;
    assert_eq!(alice.recv_chat().await.msg, "hi alice");

    // Presence is cluster-wide: a friend on the other server shows online.
    alice.add_friend(bob_id).await;
    alice.logout().await;
    let ack = alice.login(alice_id, "pw").await;
    let friends: Vec<_> = ack
        .friends
        .iter()
        .map(|f| (f.id, f.name.as_str(), f.state))
        .collect();
    assert_eq!(friends, [(bob_id, "bob", Presence::Online)]);

    // No double login anywhere in the cluster.
    let mut intruder = servers[0].client().await;
    let refused = intruder.call(&req::login(bob_id, "pw")).await;
    assert_eq!(refused.errno(), Errno::AlreadyLoggedIn);

    // Offline for a user logged in nowhere, delivered at login on either
    // server (after what bob confirmed).
    bob.delivered(bob_seen).await;
    bob.logout().await;
    alice.chat(bob_id, "while away").await;
    // Log in on the server where bob was not before.
    let mut bob_on_a = servers[0].client().await;
    let ack = bob_on_a.login(bob_id, "pw").await;
    assert_eq!(ack.offline[0].msg, "while away");
    alice.chat(bob_id, "same server now").await;
    assert_eq!(bob_on_a.recv_chat().await.msg, "same server now");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_chat_over_three_servers() {
    let servers = Cluster::new().start(3).await;
    let (mut owner, owner_id) = servers[0].user("owner").await;
    let (mut m1, _) = servers[1].user("m1").await;
    let (mut m2, _) = servers[2].user("m2").await;
    let (mut m3, _) = servers[2].user("m3").await;
    let mut away = servers[1].client().await;
    let away_id = away.register("away", "pw").await;
    let group = owner.create_group("spread", "").await;
    // The owner's server cached the membership; joins elsewhere must reach it.
    owner.group_chat(group, "alone").await;
    for member in [&mut m1, &mut m2, &mut m3] {
        member.join_group(group).await;
    }
    away.login(away_id, "pw").await;
    away.join_group(group).await;
    away.logout().await;

    let mid = owner.group_chat(group, "hello all").await;
    for member in [&mut m1, &mut m2, &mut m3] {
        let push = member.recv_chat().await;
        assert_eq!(push.msg, "hello all");
        assert_eq!(push.from, owner_id);
        assert_eq!(push.mid, mid);
    }
    m2.group_chat(group, "from m2").await;
    assert_eq!(owner.recv_chat().await.msg, "from m2");
    assert_eq!(m1.recv_chat().await.msg, "from m2");
    assert_eq!(m3.recv_chat().await.msg, "from m2");
    owner.expect_silence(Duration::from_millis(200)).await;
    let ack = away.login(away_id, "pw").await;
    let texts: Vec<&str> = ack.offline.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(texts, ["hello all", "from m2"]);
    stop_all(servers).await;
}

/// Many logins for one account at the same instant on three servers:
/// exactly one wins, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_logins_across_servers_have_one_winner() {
    let servers = Cluster::new().start(3).await;
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
            let errno = client.call(&req::login(id, "pw")).await.errno();
            (errno, client)
        });
        let results = futures::future::join_all(attempts).await;
        let errnos: Vec<Errno> = results.iter().map(|r| r.0).collect();
        let winners = errnos.iter().filter(|e| **e == Errno::Ok).count();
        let refused = errnos
            .iter()
            .filter(|e| **e == Errno::AlreadyLoggedIn)
            .count();
        assert_eq!(winners, 1, "account {id}: {errnos:?}");
        assert_eq!(refused, 8);
    }
    stop_all(servers).await;
}

/// A receiver leaving while messages to it cross servers: every message is
/// pushed before the LOGOUT reply or, resuming by `seq`, after the next
/// login, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_leaving_during_cross_server_traffic_loses_nothing() {
    const MESSAGES: u32 = 400;
    let servers = Cluster::new().start(2).await;
    let (mut sender, _) = servers[0].user("sender").await;
    let (mut receiver, receiver_id) = servers[1].user("receiver").await;
    let sending = async {
        for i in 0..MESSAGES {
            sender
                .send_v2(&req::chat(receiver_id, &i.to_string()))
                .await;
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sender.ping().await;
    };
    let mut tally = Tally::new();
    let receiving = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        receiver.send_with_rid(&req::logout(), "bye").await;
        collect_until_reply(&mut receiver, "bye", &mut tally).await;
        // Abruptly gone, too.
        drop(receiver);
    };
    tokio::join!(sending, receiving);
    let mut back = servers[0].client().await;
    let ack = back.login_since(receiver_id, "pw", tally.last_seq()).await;
    tally.add_all(&ack.offline);
    // What the other server was still storing when the LOGIN_ACK was built
    // is pushed live after it.
    while tally.distinct() < MESSAGES {
        match back.recv_within(Duration::from_secs(5)).await {
            Ok(Incoming {
                frame: ServerFrame::Chat(chat),
                ..
            }) => tally.add(&chat),
            other => panic!("{other:?} while {:?} are missing", tally.missing(MESSAGES)),
        }
    }
    back.expect_silence(Duration::from_millis(300)).await;
    tally.assert_each_once(MESSAGES);
    stop_all(servers).await;
}

/// Counts pushed chats until the reply with `rid` arrives.
async fn collect_until_reply(client: &mut Client, rid: &str, tally: &mut Tally) {
    loop {
        let incoming = client.recv().await;
        if incoming.rid.as_ref().and_then(|r| r.as_str()) == Some(rid) {
            return;
        }
        match incoming.frame {
            ServerFrame::Chat(chat) => tally.add(&chat),
            other => panic!("unexpected {other:?}"),
        }
    }
}

// ---- tests with processes: a killed server, a Redis restarted ----

/// Redis dies and comes back during cross-server traffic: local traffic
/// never stops, logins get errno 10 meanwhile, nothing is lost, and
/// cross-server delivery resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_traffic_loses_nothing() {
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let cluster = Cluster::on_redis(&redis.url());
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let (mut sender, _) = a.user("sender").await;
    let (mut local, local_id) = a.user("local").await;
    let (mut remote, remote_id) = b.user("remote").await;
    let mut spare = b.client().await;
    let spare_id = spare.register("spare", "pw").await;

    let mut seq = 0u32;
    let mut received = Tally::new();
    // Phase 1: Redis up.
    for _ in 0..50 {
        sender.chat(remote_id, &seq.to_string()).await;
        seq += 1;
    }
    // Phase 2: Redis gone. Local delivery goes on; logins are refused with errno 10.
    redis.kill();
    for _ in 0..50 {
        // The message is stored even without Redis.
        sender.chat(remote_id, &seq.to_string()).await;
        seq += 1;
    }
    sender.chat(local_id, "local still works").await;
    assert_eq!(local.recv_chat().await.msg, "local still works");
    let refused = spare.call(&req::login(spare_id, "pw")).await;
    assert_eq!(refused.errno(), Errno::ServerError);
    // Phase 3: Redis back (empty, as after a crash); delivery resumes by itself.
    let restarted = Instant::now();
    let _redis = RedisServer::start(port);
    let resumed = loop {
        sender.chat(remote_id, &seq.to_string()).await;
        seq += 1;
        if let Ok(incoming) = remote.recv_within(Duration::from_millis(100)).await {
            match incoming.frame {
                ServerFrame::Chat(chat) => received.add(&chat),
                other => panic!("unexpected {other:?}"),
            }
            // Pushed live again: pushes for the first messages count too.
            if received.reached(100) {
                break restarted.elapsed();
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "delivery did not resume"
        );
    };
    println!("cross-server delivery resumed {resumed:?} after Redis restarted");
    // Logins work again once the heartbeat has renewed presence.
    loop {
        match spare.call(&req::login(spare_id, "pw")).await {
            Reply::LoginOk(_) => break,
            Reply::Error(failure) if failure.errno == Errno::ServerError => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(30),
                    "logins never resumed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    }
    sender.ping().await;
    // Collect the rest: pushes still in flight, then the stored ones after
    // what was received (`since`).
    remote.send_with_rid(&req::logout(), "bye").await;
    collect_until_reply(&mut remote, "bye", &mut received).await;
    let ack = remote
        .login_since(remote_id, "pw", received.last_seq())
        .await;
    received.add_all(&ack.offline);
    received.assert_each_once(seq);
    println!("{seq} messages sent across a Redis restart, all delivered once");
    a.stop().await;
    b.stop().await;
}

/// The chatserver binary in `cluster`, on a free port.
fn start_binary(cluster: &Cluster) -> (Process, std::net::SocketAddr) {
    Process::start_listening(
        Command::new(env!("CARGO_BIN_EXE_chatserver"))
            .args(["127.0.0.1", "0", "--database-url", &cluster.database_url])
            .args(["--redis-url", &cluster.redis_url])
            .args(["--redis-prefix", &cluster.prefix])
            .args(["--presence-lease", "2s"])
            .args(CHEAP_HASHING)
            .args(GENEROUS_LIMITS)
            .env("RUST_LOG", "warn"),
    )
}

/// A server killed with SIGKILL does not lock its users out: they log in
/// elsewhere within the lease, and friends see them offline by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_killed_server_log_in_elsewhere_within_the_lease() {
    let cluster = Cluster::new();
    let survivor: ChatServer = cluster.start_node().await;
    let (mut doomed, doomed_addr) = start_binary(&cluster);
    let (_victim, victim_id) = Client::user(doomed_addr, "victim").await;
    let (mut friend, friend_id) = survivor.user("friend").await;
    friend.add_friend(victim_id).await;

    let mut elsewhere = survivor.client().await;
    let refused = elsewhere.call(&req::login(victim_id, "pw")).await;
    assert_eq!(
        refused.errno(),
        Errno::AlreadyLoggedIn,
        "still logged in on the doomed server"
    );

    doomed.kill();
    let killed = Instant::now();
    let relogin = loop {
        let reply = elsewhere.call(&req::login(victim_id, "pw")).await;
        if reply.errno() == Errno::Ok {
            break killed.elapsed();
        }
        assert_eq!(reply.errno(), Errno::AlreadyLoggedIn);
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "still locked out after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("re-login elsewhere {relogin:?} after SIGKILL (lease 2 s)");
    assert!(relogin <= Duration::from_millis(2_500), "{relogin:?}");
    // Messages to the victim meanwhile reach it on its new server.
    friend.chat(victim_id, "welcome back").await;
    assert_eq!(elsewhere.recv_chat().await.msg, "welcome back");
    elsewhere.logout().await;
    friend.logout().await;
    let ack = friend.login(friend_id, "pw").await;
    assert_eq!(ack.friends[0].state, Presence::Offline);
    survivor.stop().await;
}

/// A receiver who moves to another server while the sender's server still
/// has it in its location cache (5 s) gets the next message at once: the
/// server it left, which still hears its channel, passes the push on to
/// the one that holds the receiver now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_follows_a_receiver_who_moved_servers() {
    let cluster = Cluster::new();
    let a = cluster.start_node().await;
    let b = cluster.start_node().await;
    let c = cluster.start_node().await;
    let (mut sender, _) = a.user("sender").await;
    let (mut receiver, mover) = b.user("mover").await;
    // Server a learns that the mover is on b.
    sender.chat(mover, "first").await;
    assert_eq!(receiver.recv_chat().await.msg, "first");
    drop(receiver);
    let mut moved = c.client().await;
    let deadline = Deadline::after(WAIT);
    loop {
        match moved.call(&req::login(mover, "pw")).await {
            Reply::LoginOk(_) => break,
            reply if reply.errno() == Errno::AlreadyLoggedIn => {
                assert!(!deadline.passed(), "b never let the mover go");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("login on c: {other:?}"),
        }
    }
    // The replay of the unconfirmed "first", then the new message.
    assert_eq!(moved.recv_chat().await.msg, "first");
    sender.chat(mover, "second").await;
    assert_eq!(moved.recv_chat().await.msg, "second");
    stop_all(vec![a, b, c]).await;
}

/// A cluster may grow past 32 servers (the old limit of the server number
/// in message ids). The first 40 numbers are held here as 40 other live
/// servers would hold them; two more servers start, lease numbers above
/// them, and the messages each stores carry its own number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_past_the_thirty_second_lease_their_own_numbers() {
    const HELD: u64 = 40;
    let cluster = Cluster::new();
    let redis = redis::Client::open(cluster.redis_url.as_str()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable");
    for node in 0..HELD {
        let key = format!("{}node:{node}", cluster.prefix);
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(format!("another-server-{node}"))
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .expect("SET node key");
    }
    let servers = cluster.start(2).await;
    let (mut alice, alice_id) = servers[0].user("alice").await;
    let (mut bob, bob_id) = servers[1].user("bob").await;
    let to_bob = alice.chat(bob_id, "from the 41st").await;
    assert_eq!(bob.recv_chat().await.mid, to_bob);
    let to_alice = bob.chat(alice_id, "from the 42nd").await;
    assert_eq!(alice.recv_chat().await.mid, to_alice);

    // mid: milliseconds, then 7 bits of server number, then 6 of sequence.
    let number = |mid: i64| (mid >> 6) & 0x7f;
    let numbers = [to_bob, to_alice].map(|mid| number(mid.expect("v2 ACKs carry the mid")));
    println!("server numbers in the message ids: {numbers:?}");
    assert!(numbers.iter().all(|&n| n >= HELD as i64), "{numbers:?}");
    assert_ne!(numbers[0], numbers[1], "two servers, one number");
    stop_all(servers).await;
}
