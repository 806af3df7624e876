//! A full disk under the embedded database: the chat server's SQLite file
//! on a small tmpfs of the test's own, filled up while a user sends.
//! Nothing acknowledged may be lost, nothing refused may be half stored,
//! the server keeps answering, no failed transaction lingers on a pooled
//! connection to swallow later writes, and once space is free again the
//! refused messages go through when re-sent with their `cid`, each stored
//! once.
//!
//! The second test keeps a stream of messages going on a disk that a WAL
//! growing without bound would fill.
//!
//! Mounting needs root (CAP_SYS_ADMIN), which the test machines and CI
//! have; without it the test fails rather than skips.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::bin::{Process, CHEAP_HASHING, GENEROUS_LIMITS};
use testkit::prelude::*;
use testkit::run::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_chatserver");

/// A chat server on a SQLite file in `disk`, logging at `DISK_LOG`.
fn start_on(disk: &SmallDisk, dir: &Path) -> (Process, std::net::SocketAddr) {
    let url = format!("sqlite://{}/chat.db?mode=rwc", disk.path.display());
    let mut command = Command::new(BIN);
    command
        .args(["127.0.0.1", "0", "--database-url", &url])
        .args(CHEAP_HASHING)
        .args(GENEROUS_LIMITS)
        .current_dir(dir)
        .env_remove("CHAT_CONFIG")
        .env(
            "RUST_LOG",
            std::env::var("DISK_LOG").unwrap_or("error".into()),
        );
    Process::start_listening(&mut command)
}

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): {status}"
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system of `path` until a write fails with ENOSPC.
fn fill(path: &Path) {
    let mut filler = File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    loop {
        match filler.write_all(&chunk).and_then(|_| filler.sync_all()) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling the disk: {error}"),
        }
    }
}

/// Message `n` to `to`: its number first, then `body`; its cid names it.
fn numbered(to: i64, n: i64, body: &str) -> Request {
    req::chat_with_cid(to, &format!("{n} {body}"), &format!("m{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_loses_nothing_and_recovers() {
    let dir = temp_dir("full-disk");
    let disk = SmallDisk::mount(dir.join("disk"), "4m");
    let (mut server, addr) = start_on(&disk, &dir);

    let (mut alice, _) = Client::user(addr, "alice").await;
    let bob_id = Client::connect(addr).await.register("bob", "pw").await;
    let body = "x".repeat(3000);
    alice.call_ok(&numbered(bob_id, 0, &body)).await;

    fill(&disk.path.join("filler"));
    // Send until the disk refuses; what is acknowledged must be stored.
    let mut acked = vec![0];
    let mut refused = Vec::new();
    for n in 1..400 {
        let reply = alice.call(&numbered(bob_id, n, &body)).await;
        match reply.errno() {
            Errno::Ok => acked.push(n),
            Errno::ServerError => {
                refused.push(n);
                if refused.len() == 5 {
                    break;
                }
            }
            other => panic!("message {n}: unexpected {other:?}: {reply:?}"),
        }
    }
    assert_eq!(refused.len(), 5, "the full disk never refused a send");
    // A transaction on the shared pool fails too, and must not leave its
    // connection inside it for the requests that come after.
    for n in 0..3 {
        let reply = alice.call(&req::create_group(&format!("g{n}"), "")).await;
        assert_eq!(reply.errno(), Errno::ServerError, "{reply:?}");
    }
    // Still answering, to others too.
    let mut carol = Client::connect(addr).await;
    assert!(matches!(carol.call(&req::ping()).await, Reply::Pong(_)));
    assert!(server.is_running(), "the server died of the full disk");

    std::fs::remove_file(disk.path.join("filler")).unwrap();
    // The refused messages, sent again with their cids, now go through.
    let deadline = Deadline::after(WAIT);
    for &n in &refused {
        loop {
            let reply = alice.call(&numbered(bob_id, n, &body)).await;
            if reply.errno() == Errno::Ok {
                acked.push(n);
                break;
            }
            assert!(!deadline.passed(), "message {n} still refused: {reply:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Registrations after the failures are stored (every pooled connection
    // is met: there are 8), and so is a group.
    for n in 0..12 {
        let name = format!("after{n}");
        let id = Client::connect(addr).await.register(&name, "pw").await;
        Client::connect(addr).await.login(id, "pw").await;
    }
    alice.create_group("g0", "").await;

    let mut bob = Client::connect(addr).await;
    let ack = bob.login(bob_id, "pw").await;
    let got: Vec<i64> = ack
        .offline
        .iter()
        .map(|chat| chat.msg.split(' ').next().unwrap().parse().unwrap())
        .collect();
    // In the order they were acknowledged, each once.
    assert_eq!(got, acked);
    server.signal("TERM");
    let status = server.wait_timeout(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "a clean exit");
}

/// SQLite's WAL restarts only once a checkpoint has copied all of it, which
/// a background checkpoint never did while messages kept coming: it grew by
/// about 200 MB a second in the release build's ping-pong, until the disk
/// was full. Here 64 senders keep writing to 64 offline receivers on a
/// 256 MiB disk: every send is acknowledged, and the WAL stays near the
/// writer's checkpoint size (64 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_messages_keeps_the_wal_bounded() {
    const SENDERS: usize = 64;
    const MESSAGES: usize = 40_000;
    const WAL_BOUND: u64 = 96 << 20;
    let dir = temp_dir("wal-bound");
    let disk = SmallDisk::mount(dir.join("disk"), "256m");
    let (mut server, addr) = start_on(&disk, &dir);

    let mut senders = Vec::new();
    for n in 0..SENDERS {
        let (sender, _) = Client::user(addr, &format!("s{n}")).await;
        let receiver = Client::connect(addr)
            .await
            .register(&format!("r{n}"), "pw")
            .await;
        senders.push((sender, receiver));
    }
    let wal = disk.path.join("chat.db-wal");
    let largest = Arc::new(AtomicU64::new(0));
    let watch = {
        let largest = largest.clone();
        tokio::spawn(async move {
            loop {
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                largest.fetch_max(size, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let body = "w".repeat(200);
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(mut sender, receiver)| {
            let body = body.clone();
            tokio::spawn(async move {
                for n in 0..MESSAGES / SENDERS {
                    let reply = sender
                        .call(&req::chat(receiver, &format!("{n} {body}")))
                        .await;
                    assert_eq!(reply.errno(), Errno::Ok, "message {n}: {reply:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    watch.abort();
    let largest = largest.load(Ordering::Relaxed);
    println!("largest WAL: {} KiB", largest >> 10);
    assert!(
        largest < WAL_BOUND,
        "the WAL grew to {largest} bytes (bound {WAL_BOUND})"
    );
    server.signal("TERM");
    let status = server.wait_timeout(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "a clean exit");
}
