//! Login storm: N users log in at once. Before it, a few sequential logins
//! give the verify time of one password hash; chat pairs measure 1:1
//! latency without the storm and during it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::scenario::pingpong;
use crate::stats::{Errors, Latency, RunReport};
use crate::{lock, Bench, Phase, MEASURE, WARMUP};

const VERIFY_SAMPLES: usize = 5;

pub async fn run(
    bench: &Bench,
    users: usize,
    chat_pairs: usize,
    hash_threads: Option<usize>,
) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(users >= 1, "--users must be at least 1");
    let hash_threads =
        hash_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let all = bench.users(users + 2 * chat_pairs, "li").await?;
    let (storm_users, chat_users) = all.split_at(users);
    let limit = Duration::from_secs(120).max(bench.common.timeout);

    // Verify time: one login at a time, nothing else running.
    let mut verify = Latency::default();
    let mut conn = Conn::connect(bench.server(0), bench.source(0), bench.version()).await?;
    for _ in 0..VERIFY_SAMPLES {
        let started = Instant::now();
        conn.login(storm_users[0].id, &bench.common.password, limit)
            .await?;
        verify.record(started.elapsed());
        conn.logout(storm_users[0].id, limit).await?;
    }
    drop(conn);
    let verify_ms = verify.summary().p50_us / 1000.0;
    let ideal = hash_threads as f64 * 1000.0 / verify_ms;

    let phase = Arc::new(Phase::default());
    let (slots, tasks) = if chat_pairs > 0 {
        pingpong::start_pairs(bench, chat_users, false, &phase).await?
    } else {
        (Vec::new(), Vec::new())
    };

    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let (_, baseline, mut errors) = bench.window(&phase, &slots, "chat baseline").await;
        for slot in &slots {
            lock(slot).latency.reset();
        }
        let start = bench.sample();
        phase.set(MEASURE);
        let bar = bench.bar(users as u64, "login storm");
        let storming = Instant::now();
        let attempts = storm_users.iter().enumerate().map(|(i, user)| {
            let bar = bar.clone();
            async move {
                let started = Instant::now();
                let result = async {
                    let mut conn =
                        Conn::connect(bench.server(i), bench.source(i), bench.version()).await?;
                    conn.login(user.id, &bench.common.password, limit).await?;
                    Ok::<_, crate::conn::BenchError>(conn)
                }
                .await;
                bar.inc(1);
                (started.elapsed(), result)
            }
        });
        let results = futures::future::join_all(attempts).await;
        let storm_s = storming.elapsed().as_secs_f64();
        phase.set(WARMUP);
        let cpu = bench.used_since(&start);
        bar.finish_and_clear();
        let mut during = Latency::default();
        for slot in &slots {
            let mut s = lock(slot);
            during.add(&s.latency);
            errors.merge(&std::mem::take(&mut s.errors));
        }
        let mut logins = Latency::default();
        let mut conns = Vec::new();
        let mut storm_errors = Errors::default();
        for (elapsed, result) in results {
            match result {
                Ok(conn) => {
                    logins.record(elapsed);
                    conns.push(conn);
                }
                Err(e) => storm_errors.add(e.kind()),
            }
        }
        errors.merge(&storm_errors);
        let ok = conns.len();
        // Log out so the next run can log the same users in again.
        let logouts = conns
            .into_iter()
            .zip(storm_users)
            .map(|(mut conn, user)| async move { conn.logout(user.id, limit).await });
        for result in futures::future::join_all(logouts).await {
            if let Err(e) = result {
                errors.add(format!("logout_{}", e.kind()));
            }
        }

        let per_s = ok as f64 / storm_s.max(1e-9);
        let base = baseline.summary();
        let storm = during.summary();
        let mut extra = serde_json::Map::new();
        extra.insert("verify_ms".into(), json!(round2(verify_ms)));
        extra.insert("hash_threads".into(), json!(hash_threads));
        extra.insert("ideal_per_s".into(), json!(round2(ideal)));
        extra.insert("pct_of_ideal".into(), json!(round2(100.0 * per_s / ideal)));
        extra.insert("storm_s".into(), json!(round2(storm_s)));
        if chat_pairs > 0 {
            extra.insert("chat_p99_base_us".into(), json!(round2(base.p99_us)));
            extra.insert("chat_p99_storm_us".into(), json!(round2(storm.p99_us)));
            extra.insert(
                "chat_p99_ratio".into(),
                json!(round2(storm.p99_us / base.p99_us.max(1e-9))),
            );
            extra.insert(
                "chat_per_s_storm".into(),
                json!((storm.count as f64 / storm_s).round()),
            );
        }
        let report = RunReport {
            scenario: "login".into(),
            params: bench.params(&[("users", json!(users)), ("chat_pairs", json!(chat_pairs))]),
            run,
            runs: bench.common.runs,
            deliveries: ok as u64,
            unit: "logins",
            cpu,
            latency: logins.summary(),
            errors,
            extra,
        };
        bench.print(&report);
        reports.push(report);
    }
    pingpong::stop(&phase, tasks, bench.common.timeout).await;
    Ok(reports)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
