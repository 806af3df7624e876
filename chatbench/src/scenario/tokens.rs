//! Token logins: each user logs in once with its password to get a token
//! (and disconnects without LOGOUT, which would revoke it); then workers
//! log in again and again with the tokens, one new connection per login:
//! the rate of logins that cost no password hashing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::conn::{BenchError, Conn};
use crate::stats::{Errors, Latency, RunReport};
use crate::Bench;

pub async fn run(bench: &Bench, users: usize, workers: usize) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(
        users >= 2 * workers,
        "--users must be at least twice --workers (a user is logged in while a worker holds it)"
    );
    let users = bench.users(users, "tok").await?;
    let limit = bench.common.timeout;
    let tokens =
        futures::future::join_all(users.chunks(users.len().div_ceil(workers)).enumerate().map(
            |(w, chunk)| async move {
                let mut tokens = Vec::with_capacity(chunk.len());
                for user in chunk {
                    let mut conn =
                        Conn::connect(bench.server(w), bench.source(w), bench.version()).await?;
                    let ack = conn.login(user.id, &bench.common.password, limit).await?;
                    let token = ack.token.ok_or(BenchError::Unexpected(2))?;
                    tokens.push((user.id, token));
                }
                Ok::<_, BenchError>(tokens)
            },
        ))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    let tokens = Arc::new(tokens);

    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let start = bench.sample();
        let started = Instant::now();
        let tasks = (0..workers).map(|w| {
            let (tokens, next, stop) = (tokens.clone(), next.clone(), stop.clone());
            async move {
                let mut latency = Latency::default();
                let mut errors = Errors::default();
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (id, token) = &tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()];
                    let began = Instant::now();
                    let result = async {
                        let mut conn =
                            Conn::connect(bench.server(w), bench.source(w), bench.version())
                                .await?;
                        conn.login_with_token(*id, token, limit).await
                    }
                    .await;
                    match result {
                        Ok(_) => {
                            latency.record(began.elapsed());
                            ok += 1;
                        }
                        Err(e) => errors.add(e.kind()),
                    }
                }
                (ok, latency, errors)
            }
        });
        let timer = async {
            tokio::time::sleep(bench.common.duration).await;
            stop.store(true, Ordering::Relaxed);
        };
        let (done, ()) = tokio::join!(futures::future::join_all(tasks), timer);
        let cpu = bench.used_since(&start);
        let mut latency = Latency::default();
        let mut errors = Errors::default();
        let mut logins = 0;
        for (ok, l, e) in &done {
            logins += ok;
            latency.add(l);
            errors.merge(e);
        }
        let mut extra = serde_json::Map::new();
        extra.insert("wall_s".into(), json!(started.elapsed().as_secs_f64()));
        let report = RunReport {
            scenario: "tokens".into(),
            params: bench.params(&[("users", json!(tokens.len())), ("workers", json!(workers))]),
            run,
            runs: bench.common.runs,
            deliveries: logins,
            unit: "token logins",
            cpu,
            latency: latency.summary(),
            errors,
            extra,
        };
        bench.print(&report);
        reports.push(report);
    }
    Ok(reports)
}
