//! The data path against real sockets: distribution, health, retries,
//! limits, the all-down fallback, idle timeout and graceful shutdown.

use std::time::{Duration, Instant};

use balancer::config::HealthKind;
use balancer::health;
use testkit::backend::{Mode, TestBackend, Traffic};
use testkit::lb::{config_toml, Lb};
use testkit::{free_port, wait_until, who_serves, Client, Deadline, WAIT};

fn addrs(backends: &[&TestBackend]) -> Vec<String> {
    backends.iter().map(|b| b.address()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_distribution_is_exact_per_cycle() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let c = TestBackend::start("c", Mode::Chat).await;
    let [aa, ba, ca] = <[String; 3]>::try_from(addrs(&[&a, &b, &c])).unwrap();
    let toml = config_toml("[health]\nkind = \"tcp\"", &[(&aa, 5), (&ba, 1), (&ca, 1)]);
    let lb = Lb::start(&toml, false).await;

    let mut seq = String::new();
    for _ in 0..70 {
        seq += &who_serves(lb.addr).await.unwrap();
    }
    for cycle in seq.as_bytes().chunks(7) {
        assert_eq!(
            std::str::from_utf8(cycle).unwrap(),
            "aabacaa",
            "whole sequence: {seq}"
        );
    }
    let status = lb.status();
    let totals: Vec<u64> = status.backends.iter().map(|b| b.total).collect();
    assert_eq!(totals, vec![50, 10, 10]);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_leaves_rotation_and_revived_backend_returns() {
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(200);
    let (rise, fall) = (2u32, 3u32);
    let a = TestBackend::start("a", Mode::Chat).await;
    let mut b = TestBackend::start("b", Mode::Chat).await;
    let (aa, ba) = (a.address(), b.address());
    let toml = config_toml(
        &format!("[health]\nkind = \"chat\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = {rise}\nfall = {fall}"),
        &[(&aa, 1), (&ba, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    let traffic = Traffic::start(lb.addr, 1, Duration::from_millis(5));
    traffic.wait_for_more(20).await;

    b.kill().await;
    let killed_at = Instant::now();
    assert!(wait_until(WAIT, || lb.backend_up(&ba) == Some(false)).await);
    let took = killed_at.elapsed();
    // fall checks one interval apart, plus up to one interval until the first.
    assert!(
        took <= interval * fall + interval,
        "took {took:?} to leave rotation"
    );
    traffic.wait_for_more(20).await;
    for _ in 0..10 {
        assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    }

    b.revive().await;
    let revived_at = Instant::now();
    assert!(wait_until(WAIT, || lb.backend_up(&ba) == Some(true)).await);
    let took = revived_at.elapsed();
    assert!(
        took <= interval * rise + interval + timeout,
        "took {took:?} to come back"
    );
    traffic.wait_for_more(10).await;
    let (ok, failures) = traffic.stop().await;
    assert!(failures.is_empty(), "client failures: {failures:?}");
    assert!(ok >= 50);
    let served: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(who_serves(lb.addr).await.unwrap());
        }
        v
    };
    assert!(served.contains(&"b".to_string()), "{served:?}");
    let status = lb.status();
    assert_eq!(status.clients_rejected, 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_check_takes_out_a_backend_that_never_answers_pong() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let m = TestBackend::start("m", Mode::Mute).await;
    let (aa, ma) = (a.address(), m.address());
    let t = Duration::from_millis(200);
    // The checks themselves: TCP is fooled, the chat check is not.
    health::check(HealthKind::Chat, &aa, t).await.unwrap();
    health::check(HealthKind::Tcp, &ma, t).await.unwrap();
    let err = health::check(HealthKind::Chat, &ma, t).await.unwrap_err();
    assert!(matches!(err, health::CheckError::Timeout), "{err}");

    let toml = config_toml(
        "[health]\nkind = \"chat\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 2",
        &[(&aa, 1), (&ma, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    assert!(wait_until(WAIT, || lb.backend_up(&ma) == Some(false)).await);
    for _ in 0..10 {
        assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    }
    let status = lb.status();
    let mute = status.backends.iter().find(|b| b.address == ma).unwrap();
    assert!(mute.check_failures >= 2);
    assert_eq!(mute.connect_failures, 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_all_are_down_backends_are_still_tried_in_order() {
    // A port with nothing listening.
    let dead = format!("127.0.0.1:{}", free_port());
    // Echoes, so it never answers PING with PONG: chat checks mark it down.
    let mut e = TestBackend::start("e", Mode::Echo).await;
    let ea = e.address();
    let toml = config_toml(
        "retries = 0\n[health]\nkind = \"chat\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 1",
        &[(&dead, 1), (&ea, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    assert!(
        wait_until(WAIT, || lb.backend_up(&dead) == Some(false)
            && lb.backend_up(&ea) == Some(false))
        .await
    );
    // Everything looks down: the dead one is tried first, then the echo one
    // accepts, despite retries = 0.
    let mut c = Client::connect(lb.addr).await;
    c.send_raw(b"hello\n").await;
    assert_eq!(c.recv_raw().await, "hello");
    let status = lb.status();
    assert!(status.backends[0].connect_failures >= 1);
    assert_eq!(status.backends[1].total, 1);
    assert_eq!(status.clients_rejected, 0);

    // None accepts: only then is the client closed.
    e.kill().await;
    let mut c2 = Client::connect(lb.addr).await;
    let _ = c2.try_send_raw(b"hello\n").await;
    assert!(c2.recv_raw_within(WAIT).await.is_err());
    assert!(wait_until(WAIT, || lb.status().clients_rejected == 1).await);
    // The established connection was not affected.
    c.send_raw(b"still here\n").await;
    assert_eq!(c.recv_raw().await, "still here");
    drop(c);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backend_is_skipped_without_counting_a_failure() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let b = TestBackend::start("b", Mode::Chat).await;
    let (aa, ba) = (a.address(), b.address());
    let toml = format!(
        "listen = \"127.0.0.1:0\"\n[health]\nkind = \"tcp\"\n\
         [[backend]]\naddress = \"{aa}\"\nweight = 5\nmax_connections = 1\n\
         [[backend]]\naddress = \"{ba}\"\nweight = 1\n"
    );
    let lb = Lb::start(&toml, false).await;
    let mut held = Client::connect(lb.addr).await;
    assert_eq!(held.served_by().await, "a");
    for _ in 0..5 {
        assert_eq!(who_serves(lb.addr).await.unwrap(), "b");
    }
    drop(held);
    assert!(
        wait_until(WAIT, || lb.status().backends[0].active == 0).await,
        "slot not released"
    );
    assert_eq!(who_serves(lb.addr).await.unwrap(), "a");
    let status = lb.status();
    assert_eq!(status.backends[0].connect_failures, 0);
    assert!(status.backends[0].up);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_only_idle_connections() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let toml = config_toml(
        "idle_timeout = \"300ms\"\n[health]\nkind = \"tcp\"",
        &[(&a.address(), 1)],
    );
    let lb = Lb::start(&toml, false).await;
    let mut idle = Client::connect(lb.addr).await;
    idle.served_by().await;
    let mut busy = Client::connect(lb.addr).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        busy.try_ping_v1()
            .await
            .expect("a busy connection must stay open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(idle.closed_within(WAIT).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
    busy.served_by().await;
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_connections_finish() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let toml = config_toml(
        "shutdown_grace = \"20s\"\n[health]\nkind = \"tcp\"",
        &[(&a.address(), 1)],
    );
    let mut lb = Lb::start(&toml, false).await;
    let addr = lb.addr;
    let mut c = Client::connect(addr).await;
    c.served_by().await;
    let done = tokio::spawn(lb.begin_shutdown());
    // New connections are refused once the listener is gone.
    let deadline = Deadline::after(WAIT);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        deadline.check("still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The established connection still works during the grace period.
    assert_eq!(c.served_by().await, "a");
    assert!(!done.is_finished());
    drop(c);
    tokio::time::timeout(WAIT, done)
        .await
        .expect("run did not return after the last connection closed")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_period_is_bounded() {
    let a = TestBackend::start("a", Mode::Chat).await;
    let toml = config_toml(
        "shutdown_grace = \"200ms\"\n[health]\nkind = \"tcp\"",
        &[(&a.address(), 1)],
    );
    let mut lb = Lb::start(&toml, false).await;
    let mut c = Client::connect(lb.addr).await;
    c.served_by().await;
    let started = Instant::now();
    let done = tokio::spawn(lb.begin_shutdown());
    assert!(
        c.closed_within(WAIT).await,
        "lingering connection not closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    tokio::time::timeout(WAIT, done)
        .await
        .expect("run did not return")
        .unwrap()
        .unwrap();
}

/// A client's half-close reaches the backend, which still answers; the
/// answer and then the backend's close reach the client. Large enough to
/// go through the copy buffers several times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_passed_on_and_large_payloads_arrive_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = backend.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                let sum: u64 = got.iter().map(|&b| u64::from(b)).sum();
                let reply = format!("got {} sum {sum}", got.len()).repeat(5000);
                s.write_all(reply.as_bytes()).await.unwrap();
            });
        }
    });
    let toml = config_toml("[health]\nkind = \"tcp\"", &[(&address, 1)]);
    let lb = Lb::start(&toml, false).await;

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    let mut client = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    client.write_all(&payload).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
        .await
        .expect("the backend's answer and close reach the client")
        .unwrap();
    assert_eq!(answer, format!("got 300000 sum {sum}").repeat(5000));
    lb.shutdown().await;
}

/// A backend that reads until the client's EOF, reports what it got, then
/// answers: an answer that only a passed-on half-close lets through.
async fn answer_after_eof_backend() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap().to_string();
    let (got_tx, got_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = backend.accept().await else {
                return;
            };
            let got_tx = got_tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = got_tx.send(got);
                // May fail: without half-close the balancer has closed.
                let _ = s.write_all(b"late answer").await;
            });
        }
    });
    (address, got_rx)
}

/// Client: send `hello`, half-close, read until EOF.
async fn hello_then_half_close(lb: &Lb) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("the connection ends")
        .expect("an orderly close, not a reset");
    answer
}

/// `half_close = false` (Nginx's `proxy_half_close off`): the client's EOF
/// closes both sides. The backend reads the client's bytes and then EOF,
/// and the client gets EOF without the backend's late answer. With the
/// default (`true`) the same exchange passes the half-close on and the
/// answer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_half_close_the_first_eof_closes_both_sides() {
    let (address, mut got) = answer_after_eof_backend().await;

    let toml = config_toml("[health]\nkind = \"tcp\"", &[(&address, 1)]);
    let lb = Lb::start(&toml, false).await;
    assert_eq!(hello_then_half_close(&lb).await, b"late answer");
    assert_eq!(got.recv().await.unwrap(), b"hello");
    lb.shutdown().await;

    let toml = config_toml(
        "half_close = false\n[health]\nkind = \"tcp\"",
        &[(&address, 1)],
    );
    let lb = Lb::start(&toml, false).await;
    assert_eq!(
        hello_then_half_close(&lb).await,
        b"",
        "no answer after the EOF"
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), got.recv())
        .await
        .expect("the backend saw EOF: its side was closed too")
        .unwrap();
    assert_eq!(seen, b"hello");
    // Nothing was left open: the balancer holds no connection any more.
    assert!(
        wait_until(WAIT, || lb.status().backends[0].active == 0).await,
        "the balancer still holds the connection"
    );
    lb.shutdown().await;
}
