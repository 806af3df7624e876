//! Hot reload under continuous traffic: add, remove, reweight, a broken
//! file; nothing dropped, no failed connect. Plus drain timeout and slow start.

use std::time::Duration;

use testkit::backend::{Mode, TestBackend, Traffic};
use testkit::lb::{config_toml, Lb};
use testkit::{wait_until, who_serves, Client, WAIT};

fn in_snapshot(lb: &Lb, address: &str) -> Option<u32> {
    lb.handle
        .snapshot()
        .members
        .iter()
        .find(|m| m.state.address == address)
        .map(|m| m.weight)
}

const HEAD: &str = "[health]\nkind = \"tcp\"\ninterval = \"100ms\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_traffic_drops_nothing() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let c = TestBackend::start("c", Mode::Chat).await;
    let (aa, ba, ca) = (a.address(), b.address(), c.address());
    let lb = Lb::start(&config_toml(HEAD, &[(&aa, 1), (&ba, 1)]), false).await;

    // Long-lived connections, spread over a and b, kept through every reload.
    let mut long_lived = Vec::new();
    for _ in 0..6 {
        let mut client = Client::connect(lb.addr).await;
        let server = client.served_by().await;
        long_lived.push((client, server));
    }
    assert!(long_lived.iter().any(|(_, s)| s == "a"));
    assert!(long_lived.iter().any(|(_, s)| s == "b"));

    let traffic = Traffic::start(lb.addr, 3, Duration::ZERO);
    traffic.wait_for_more(30).await;

    // 1. Add c, replacing the file by rename as editors do.
    lb.write_config_by_rename(&config_toml(HEAD, &[(&aa, 1), (&ba, 1), (&ca, 1)]));
    assert!(
        wait_until(WAIT, || in_snapshot(&lb, &ca).is_some()).await,
        "c not added"
    );
    assert!(
        wait_until(WAIT, || lb
            .status()
            .backends
            .iter()
            .any(|s| s.address == ca && s.total > 0))
        .await,
        "c takes no connections"
    );
    traffic.wait_for_more(30).await;

    // 2. Remove a, rewriting the file in place.
    lb.write_config_in_place(&config_toml(HEAD, &[(&ba, 1), (&ca, 1)]));
    assert!(
        wait_until(WAIT, || in_snapshot(&lb, &aa).is_none()).await,
        "a not removed"
    );
    traffic.wait_for_more(30).await;
    for _ in 0..10 {
        assert_ne!(
            who_serves(lb.addr).await.unwrap(),
            "a",
            "a still takes new connections"
        );
    }
    let draining = lb
        .status()
        .backends
        .into_iter()
        .find(|s| s.address == aa)
        .expect("a listed while its connections drain");
    assert!(!draining.in_config);
    assert!(draining.active > 0);

    // 3. Change weights, and ask for the reload as SIGHUP does.
    lb.write_config_by_rename(&config_toml(HEAD, &[(&ba, 3), (&ca, 1)]));
    lb.handle.request_reload();
    assert!(
        wait_until(WAIT, || in_snapshot(&lb, &ba) == Some(3)).await,
        "weight not applied"
    );
    traffic.wait_for_more(30).await;

    // 4. A broken file is rejected and the running config kept.
    let generation = lb.status().config_generation;
    lb.write_config_in_place(
        "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"x:1\"\nweigth = 2\n",
    );
    assert!(
        wait_until(WAIT, || lb.status().reloads_failed >= 1).await,
        "broken file not noticed"
    );
    let status = lb.status();
    assert_eq!(status.config_generation, generation);
    let error = status.last_reload_error.expect("error kept for /status");
    assert!(
        error.contains("line 4") && error.contains("weigth"),
        "{error}"
    );
    assert_eq!(in_snapshot(&lb, &ba), Some(3));
    traffic.wait_for_more(30).await;

    let (ok, failures) = traffic.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(ok >= 150, "only {ok} connections");

    // New connections follow the new weights: 3:1 over full cycles, ±1 for
    // wherever the running scores stood when the traffic stopped.
    let mut b_count = 0;
    for _ in 0..8 {
        if who_serves(lb.addr).await.unwrap() == "b" {
            b_count += 1;
        }
    }
    assert!((5..=7).contains(&b_count), "b served {b_count} of 8");

    // Every long-lived connection survived, still on its original backend.
    for (client, server) in &mut long_lived {
        assert_eq!(&client.served_by().await, server);
    }
    let status = lb.status();
    let connect_failures: u64 = status.backends.iter().map(|b| b.connect_failures).sum();
    assert_eq!(connect_failures, 0);
    assert_eq!(status.clients_rejected, 0);
    drop(long_lived);
    // Once a's last connection closes it leaves the status.
    assert!(
        wait_until(WAIT, || lb
            .status()
            .backends
            .iter()
            .all(|s| s.address != aa))
        .await
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_connections_of_a_removed_backend() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let (aa, ba) = (a.address(), b.address());
    let head = format!("drain_timeout = \"300ms\"\n{HEAD}");
    let lb = Lb::start(&config_toml(&head, &[(&aa, 1), (&ba, 1)]), false).await;
    let mut on_a = Client::connect(lb.addr).await;
    assert_eq!(on_a.served_by().await, "a");
    let mut on_b = Client::connect(lb.addr).await;
    assert_eq!(on_b.served_by().await, "b");

    lb.write_config_by_rename(&config_toml(&head, &[(&ba, 1)]));
    assert!(wait_until(WAIT, || in_snapshot(&lb, &aa).is_none()).await);
    // Still usable right after the removal…
    assert_eq!(on_a.served_by().await, "a");
    // …and closed once the drain timeout is over.
    assert!(on_a.closed_within(WAIT).await);
    assert_eq!(on_b.served_by().await, "b");
    drop(on_b);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_backend_ramps_up_under_slow_start() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let (aa, ba) = (a.address(), b.address());
    let head = format!("slow_start = \"1h\"\n{HEAD}");
    let lb = Lb::start(&config_toml(&head, &[(&aa, 10)]), false).await;
    // Present at start-up: full weight at once.
    assert_eq!(lb.status().backends[0].effective_weight, 10);

    lb.write_config_by_rename(&config_toml(&head, &[(&aa, 10), (&ba, 10)]));
    assert!(wait_until(WAIT, || in_snapshot(&lb, &ba).is_some()).await);
    let status = lb.status();
    let added = status.backends.iter().find(|s| s.address == ba).unwrap();
    assert_eq!((added.weight, added.effective_weight), (10, 1));
    // At the start of the ramp b gets 1 of every 11 new connections.
    let mut served = Vec::new();
    for _ in 0..11 {
        served.push(who_serves(lb.addr).await.unwrap());
    }
    assert_eq!(served.iter().filter(|s| *s == "b").count(), 1, "{served:?}");
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_change_needs_a_restart() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let aa = a.address();
    let lb = Lb::start(&config_toml(HEAD, &[(&aa, 1)]), false).await;
    let text = config_toml(HEAD, &[(&aa, 2)]).replace("127.0.0.1:0", "127.0.0.1:1");
    lb.write_config_by_rename(&text);
    assert!(wait_until(WAIT, || in_snapshot(&lb, &aa) == Some(2)).await);
    // The rest applied, the address kept.
    assert_eq!(lb.handle.snapshot().config.listen, "127.0.0.1:0");
    assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    lb.shutdown().await;
}
