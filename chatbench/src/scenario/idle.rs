//! Idle connections: N logged-in connections held open; the server's RSS
//! (VmRSS of --server-pid) before and after gives memory per connection.

use std::time::Duration;

use anyhow::Context as _;
use protocol::Version;
use serde_json::json;
use tokio::time::Instant;

use crate::conn::{Conn, Link};
use crate::procfs::rss_kib;
use crate::stats::{Errors, Latency, RunReport};
use crate::Bench;

pub async fn run(
    bench: &Bench,
    connections: usize,
    hold: Duration,
) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(connections >= 1, "--connections must be at least 1");
    let limit = raise_fd_limit(connections as u64 + 1024)?;
    if !bench.common.json {
        println!("file descriptor limit of chatbench: {limit}");
    }
    let users = bench.users(connections, "idle").await?;
    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        wait_until_load(bench, 0, Duration::from_secs(30)).await?;
        let rss_before = server_rss(bench);
        let start = bench.sample();
        let logging_in = Instant::now();
        // Keep only the sockets: the bench's own buffers are not the point.
        let streams = bench
            .login_all_keeping(&users, |i| bench.server(i), "connect and log in", hold_only)
            .await?;
        let login_s = logging_in.elapsed().as_secs_f64();
        let cpu = bench.used_since(&start);
        tokio::time::sleep(hold).await;
        let rss_after = server_rss(bench);
        let load = server_load(bench).await.ok();
        drop(streams);

        let mut extra = serde_json::Map::new();
        extra.insert("connections".into(), json!(connections));
        extra.insert("login_s".into(), json!((login_s * 1000.0).round() / 1000.0));
        if let Some(load) = load {
            extra.insert("server_load".into(), json!(load));
        }
        if let (Some(before), Some(after)) = (rss_before, rss_after) {
            extra.insert("rss_before_kib".into(), json!(before));
            extra.insert("rss_after_kib".into(), json!(after));
            let per = after.saturating_sub(before) as f64 / connections as f64;
            extra.insert(
                "rss_per_conn_kib".into(),
                json!((per * 100.0).round() / 100.0),
            );
        }
        let report = RunReport {
            scenario: "idle".into(),
            params: bench.params(&[("connections", json!(connections))]),
            run,
            runs: bench.common.runs,
            deliveries: connections as u64,
            unit: "logins",
            cpu,
            latency: Latency::default().summary(),
            errors: Errors::default(),
            extra,
        };
        bench.print(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// A logged-in connection held open and never read again.
enum Held {
    /// Out of the runtime (no registration with its reactor), so that a
    /// load generator holding 19,000 of them costs little more than the
    /// descriptors.
    Tcp(#[allow(dead_code)] std::net::TcpStream),
    Ws(#[allow(dead_code)] Link),
}

fn hold_only(conn: Conn) -> Held {
    match conn.into_stream() {
        // Fails only if epoll refuses to forget a descriptor it holds.
        Link::Tcp(stream) => Held::Tcp(
            stream
                .into_std()
                .expect("deregistering a held socket from the runtime"),
        ),
        link => Held::Ws(link),
    }
}

fn server_rss(bench: &Bench) -> Option<u64> {
    if bench.common.server_pids.is_empty() {
        return None;
    }
    bench.common.server_pids.iter().map(|&p| rss_kib(p)).sum()
}

/// Raises this process's open-file limit to at least `want` (the hard limit
/// too, which needs privileges) and returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .context("reading RLIMIT_NOFILE")?;
    if soft >= want {
        return Ok(soft);
    }
    if hard >= want {
        rlimit::Resource::NOFILE
            .set(want, hard)
            .context("raising RLIMIT_NOFILE")?;
    } else if rlimit::Resource::NOFILE.set(want, want).is_err() {
        // Unprivileged: go as far as the hard limit allows.
        rlimit::Resource::NOFILE
            .set(hard, hard)
            .context("raising RLIMIT_NOFILE")?;
    }
    Ok(rlimit::Resource::NOFILE.get()?.0)
}

/// Logged-in users on the first server, from a PONG's `load` field (0
/// from a server that sends none).
async fn server_load(bench: &Bench) -> anyhow::Result<u64> {
    let mut conn = Conn::connect(bench.server(0), None, Version::V2).await?;
    Ok(conn.ping(bench.common.timeout).await?.load)
}

/// Waits until the server counts at most `load` logged-in users (the
/// previous run's connections released).
async fn wait_until_load(bench: &Bench, load: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match server_load(bench).await {
            Ok(n) if n <= load => return Ok(()),
            Err(_) => return Ok(()), // no PONG: nothing to wait for
            Ok(n) if Instant::now() >= deadline => {
                anyhow::bail!("server still has {n} users logged in after {limit:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
