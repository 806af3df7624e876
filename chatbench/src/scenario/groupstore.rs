//! Group messages to offline members: the M-1 other members of a group
//! joined it and logged out; the sender sends N messages of S bytes to the
//! group, each stored for every member before its ACK. Reports the time per
//! group message; the database's growth, measured around the run (see
//! docs/BENCHMARKS.md), gives the bytes stored per message.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use protocol::{AddGroup, ChatTarget, Request, SendChat};
use serde_json::json;

use crate::conn::Conn;
use crate::scenario::fanout::create_group;
use crate::stats::{Errors, Latency, RunReport};
use crate::Bench;

pub async fn run(
    bench: &Bench,
    members: usize,
    messages: usize,
    size: usize,
) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(members >= 2, "--members must be at least 2");
    let limit = bench.common.timeout.max(Duration::from_secs(60));
    let users = bench.users(members, "gs").await?;
    let group = create_group(bench, &users).await?;
    // Members join concurrently, each on its own connection that leaves
    // right after (holding 5,000 idle connections while the others join
    // would outlast the server's v2 idle timeout).
    let joined: Vec<anyhow::Result<()>> = stream::iter(&users[1..])
        .map(|user| async move {
            let mut conn = Conn::connect(bench.server(0), bench.source(0), bench.version()).await?;
            conn.login(user.id, &bench.common.password, limit).await?;
            conn.send(&Request::AddGroup(AddGroup {
                id: Some(user.id),
                group,
            }))
            .await?;
            conn.logout(user.id, limit).await?;
            Ok(())
        })
        .buffer_unordered(bench.common.setup_concurrency.max(1))
        .collect()
        .await;
    joined.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let mut sender = bench
        .login_all(&users[..1], |_| bench.server(0), "log in sender")
        .await?
        .remove(0);
    let padding = "g".repeat(size);
    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let start = bench.sample();
        let began = Instant::now();
        let mut latency = Latency::default();
        let mut errors = Errors::default();
        let mut stored = 0;
        for i in 0..messages {
            let chat = Request::Chat(SendChat {
                id: None,
                target: ChatTarget::Group(group),
                msg: format!("{i} {padding}"),
                time: None,
                cid: None,
            });
            let sent = Instant::now();
            sender.send(&chat).await?;
            match sender.expect_ack(limit).await {
                Ok(_) => {
                    latency.record(sent.elapsed());
                    stored += (members - 1) as u64;
                }
                Err(e) => errors.add(e.kind()),
            }
        }
        let cpu = bench.used_since(&start);
        let mut extra = serde_json::Map::new();
        extra.insert(
            "ms_per_message".into(),
            json!(began.elapsed().as_secs_f64() * 1e3 / messages as f64),
        );
        let report = RunReport {
            scenario: "groupstore".into(),
            params: bench.params(&[
                ("members", json!(members)),
                ("messages", json!(messages)),
                ("size", json!(size)),
            ]),
            run,
            runs: bench.common.runs,
            deliveries: stored,
            unit: "stored deliveries",
            cpu,
            latency: latency.summary(),
            errors,
            extra,
        };
        bench.print(&report);
        reports.push(report);
    }
    let _ = Conn::logout(&mut sender, users[0].id, limit).await;
    Ok(reports)
}
