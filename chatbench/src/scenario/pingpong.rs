//! 1:1 ping-pong between K pairs, closed loop: A sends `seq N` to B, B
//! answers `seq N+1` to A as soon as it has it, and so on; one message in
//! flight per pair. Every one-way delivery is timed (send to receive) and
//! counted. With several servers, `cross` puts the two users of each pair
//! on different servers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use protocol::{Request, ServerFrame};

use crate::conn::{chat_seq, parse, BenchChat, BenchError, ChatTarget, Conn, User};
use crate::stats::RunReport;
use crate::{lock, Bench, Phase, SharedSlot, Slot, MEASURE, STOP};

pub async fn run(bench: &Bench, pairs: usize, cross: bool) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(pairs >= 1, "--pairs must be at least 1");
    let users = bench.users(pairs * 2, "pp").await?;
    let phase = Arc::new(Phase::default());
    let (slots, tasks) = start_pairs(bench, &users, cross, &phase).await?;
    let name = if cross { "cross" } else { "pingpong" };
    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let (cpu, latency, errors) = bench.window(&phase, &slots, name).await;
        let report = RunReport {
            scenario: name.into(),
            params: bench.params(&[
                ("pairs", json!(pairs)),
                ("threads", json!(bench.common.threads)),
            ]),
            run,
            runs: bench.common.runs,
            deliveries: latency.count(),
            unit: "deliveries",
            cpu,
            latency: latency.summary(),
            errors,
            extra: Default::default(),
        };
        bench.print(&report);
        reports.push(report);
    }
    stop(&phase, tasks, bench.common.timeout).await;
    Ok(reports)
}

/// Logs in the users (pair k = users 2k and 2k+1) and starts one task per
/// pair; the tasks record into their slot while the phase is MEASURE.
pub async fn start_pairs(
    bench: &Bench,
    users: &[User],
    cross: bool,
    phase: &Arc<Phase>,
) -> anyhow::Result<(Vec<SharedSlot>, Vec<JoinHandle<()>>)> {
    let server_of = |i: usize| {
        let pair = i / 2;
        if i % 2 == 1 && cross {
            bench.server(pair + 1)
        } else {
            bench.server(pair)
        }
    };
    let conns = bench.login_all(users, server_of, "log in pairs").await?;
    let mut conns = conns.into_iter();
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    for pair in users.chunks(2) {
        let (Some(a), Some(b)) = (conns.next(), conns.next()) else {
            break;
        };
        let slot = SharedSlot::default();
        slots.push(slot.clone());
        let version = bench.version();
        let task = PairTask {
            ends: [
                (
                    a,
                    BenchChat::new(&pair[0], ChatTarget::User(pair[1].id), version),
                ),
                (
                    b,
                    BenchChat::new(&pair[1], ChatTarget::User(pair[0].id), version),
                ),
            ],
            phase: phase.clone(),
            slot,
            timeout: bench.common.timeout,
            confirm: bench.common.delivered && version == protocol::Version::V2,
        };
        tasks.push(tokio::spawn(task.run()));
    }
    Ok((slots, tasks))
}

/// Stops the tasks and waits for them (each ends within one timeout).
pub async fn stop(phase: &Phase, tasks: Vec<JoinHandle<()>>, timeout: Duration) {
    phase.set(STOP);
    let all = futures::future::join_all(tasks);
    let _ = tokio::time::timeout(timeout + Duration::from_secs(1), all).await;
}

struct PairTask {
    /// Each user's connection and the chat it sends to the other.
    ends: [(Conn, BenchChat); 2],
    phase: Arc<Phase>,
    slot: SharedSlot,
    timeout: Duration,
    /// Receivers answer each push with DELIVERED.
    confirm: bool,
}

impl PairTask {
    async fn run(mut self) {
        let mut seq = 0u64;
        let mut from = 0;
        while self.phase.get() != STOP {
            seq += 1;
            let [a, b] = &mut self.ends;
            let ((sender, chat), (receiver, _)) = if from == 0 { (a, b) } else { (b, a) };
            let started = Instant::now();
            let result = match sender.send(chat.seq(seq)).await {
                Ok(()) => wait_for(receiver, seq, started + self.timeout, &self.slot).await,
                Err(e) => Err(e),
            };
            let result = match result {
                Ok(Some(inbox_seq)) if self.confirm => receiver
                    .send(&Request::Delivered(protocol::Delivered { seq: inbox_seq }))
                    .await
                    .map(|()| None),
                other => other,
            };
            match result {
                Ok(_) => {
                    if self.phase.get() == MEASURE {
                        lock(&self.slot).latency.record(started.elapsed());
                    }
                }
                Err(e) => {
                    let fatal = e.is_fatal();
                    lock(&self.slot).errors.add(e.kind());
                    if fatal {
                        return;
                    }
                }
            }
            from = 1 - from;
        }
    }
}

/// Reads until the chat with sequence number `seq` arrives and returns
/// its inbox `seq` (v2). Older ones (after a timeout) are counted as
/// `late`; error replies and other frames are counted; v2 ACKs without
/// error are skipped.
pub async fn wait_for(
    conn: &mut Conn,
    seq: u64,
    deadline: Instant,
    slot: &SharedSlot,
) -> Result<Option<i64>, BenchError> {
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.recv())
            .await
            .unwrap_or(Err(BenchError::Timeout))?;
        match chat_seq(&frame) {
            Ok(Some(s)) if s == seq => {
                return Ok(match parse(&frame) {
                    Ok(ServerFrame::Chat(chat)) => chat.seq,
                    _ => None,
                })
            }
            Ok(Some(s)) if s < seq => lock(slot).errors.add("late"),
            Ok(Some(_)) => return Err(BenchError::Sequence),
            Ok(None) => {}
            Err(e) => record(slot, &e),
        }
    }
}

fn record(slot: &SharedSlot, error: &BenchError) {
    lock(slot).errors.add(error.kind());
}

/// A slot with nothing recorded, for callers that need a sink.
pub fn empty_slot() -> SharedSlot {
    Arc::new(std::sync::Mutex::new(Slot::default()))
}
