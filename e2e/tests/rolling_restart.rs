//! A rolling restart under steady traffic: three chat servers (MariaDB,
//! Redis) behind our balancer, each stopped in turn with a drain (GOAWAY
//! spread over the drain period) and started again on its port, while v2
//! clients that resume by token and `since` chat in pairs. Every message
//! acknowledged arrives exactly once, in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::lb_toml;
use testkit::lb::Lb;
use testkit::prelude::*;
use testkit::resume::ResumingClient;
use testkit::server::{ChatServer, Cluster};

/// Sender/receiver pairs.
const PAIRS: usize = 20;
const DRAIN: Duration = Duration::from_secs(2);
/// Pause between two messages of one sender.
const PACE: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing_and_shows_nothing_twice() {
    let cluster = Cluster::new();
    let mut config = cluster.config();
    config.drain_period = DRAIN;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Some(ChatServer::start_with(config.clone()).await));
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let lb = Lb::start(&lb_toml(&addrs), false).await;

    let mut ids = Vec::new();
    for i in 0..PAIRS * 2 {
        let mut client = Client::connect(lb.addr).await;
        ids.push(client.register(&format!("roll{i}"), "pw").await);
    }
    let sending = Arc::new(AtomicBool::new(true));
    let receiving = Arc::new(AtomicBool::new(true));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for pair in 0..PAIRS {
        let (from, to) = (ids[2 * pair], ids[2 * pair + 1]);
        let mut receiver = ResumingClient::new(lb.addr, to, "pw");
        let flag = receiving.clone();
        receivers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match receiver.next_chat(Duration::from_millis(300)).await {
                    Some(chat) => {
                        got.push(chat.msg);
                        receiver.confirm().await;
                    }
                    None if !flag.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            (got, receiver.repeated, receiver.logins)
        }));
        let mut sender = ResumingClient::new(lb.addr, from, "pw");
        let flag = sending.clone();
        senders.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while flag.load(Ordering::Relaxed) {
                sender.send(ChatTarget::User(to), &sent.to_string()).await;
                sent += 1;
                tokio::time::sleep(PACE).await;
            }
            (sent, sender.logins)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    for (i, addr) in addrs.iter().enumerate() {
        let node = nodes[i].take().unwrap();
        node.stop().await;
        nodes[i] = Some(ChatServer::start_on(*addr, config.clone()).await);
        let name = addr.to_string();
        assert!(
            wait_until(WAIT, || lb.backend_up(&name) == Some(true)).await,
            "{name} back in rotation"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    sending.store(false, Ordering::Relaxed);
    let mut sent = Vec::new();
    let mut sender_logins = 0;
    for task in senders {
        let (n, logins) = task.await.expect("sender");
        sent.push(n);
        sender_logins += logins;
    }
    // Receivers stop once a quiet period follows the last message.
    receiving.store(false, Ordering::Relaxed);
    let mut receiver_logins = 0;
    for (pair, task) in receivers.into_iter().enumerate() {
        let (got, repeated, logins) = task.await.expect("receiver");
        let expected: Vec<String> = (0..sent[pair]).map(|n| n.to_string()).collect();
        assert_eq!(got, expected, "pair {pair}: every message once, in order");
        assert_eq!(repeated, 0, "pair {pair}: no push repeated");
        receiver_logins += logins;
    }
    assert!(sent.iter().all(|&n| n > 20), "steady traffic: {sent:?}");
    // Clients on each restarted server came back (by token, after the first login).
    assert!(
        sender_logins + receiver_logins > (PAIRS * 2) as u32,
        "clients reconnected: {sender_logins} + {receiver_logins}"
    );
    lb.shutdown().await;
    for node in nodes.into_iter().flatten() {
        node.stop().await;
    }
}
