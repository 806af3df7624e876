//! Group fan-out: one sender, G-1 online receivers in one group. The sender
//! sends `seq N` to the group and sends N+1 once every receiver has N. Each
//! delivery is timed from the send to its arrival at that receiver.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use protocol::{AddGroup, CreateGroup, Request, Version};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{chat_seq, BenchChat, BenchError, ChatTarget, Conn, User};
use crate::stats::RunReport;
use crate::{lock, Bench, Phase, SharedSlot, MEASURE, STOP};

struct Round {
    base: Instant,
    seq: AtomicU64,
    sent_at_ns: AtomicU64,
    remaining: AtomicUsize,
    all_in: Notify,
    phase: Phase,
    rounds: AtomicU64,
}

pub async fn run(bench: &Bench, members: usize) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(
        members >= 2,
        "--members must be at least 2 (sender and a receiver)"
    );
    let users = bench.users(members, "fo").await?;
    let group = create_group(bench, &users).await?;
    let conns = bench
        .login_all(&users, |_| bench.server(0), "log in members")
        .await?;
    let mut conns = conns.into_iter();
    let sender = conns.next().context("no sender connection")?;
    let mut receivers = Vec::new();
    for (mut conn, user) in conns.zip(&users[1..]) {
        let join = AddGroup {
            id: Some(user.id),
            group,
        };
        conn.send(&Request::AddGroup(join))
            .await
            .and(conn.barrier(bench.common.timeout).await)
            .map_err(|e| anyhow::anyhow!("ADD_GROUP for {}: {e}", user.name))?;
        receivers.push(conn);
    }
    let round = Arc::new(Round {
        base: Instant::now(),
        seq: AtomicU64::new(0),
        sent_at_ns: AtomicU64::new(0),
        remaining: AtomicUsize::new(0),
        all_in: Notify::new(),
        phase: Phase::default(),
        rounds: AtomicU64::new(0),
    });
    let cancel = CancellationToken::new();
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    for conn in receivers {
        let slot = SharedSlot::default();
        slots.push(slot.clone());
        tasks.push(tokio::spawn(receive(
            conn,
            round.clone(),
            slot,
            cancel.clone(),
        )));
    }
    let sender_slot = SharedSlot::default();
    slots.push(sender_slot.clone());
    tasks.push(tokio::spawn(send(
        sender,
        users[0].clone(),
        group,
        members - 1,
        round.clone(),
        sender_slot,
        bench.common.timeout,
    )));

    let mut reports = Vec::new();
    for run in 1..=bench.common.runs {
        let rounds_before = round.rounds.load(Ordering::Relaxed);
        let (cpu, latency, errors) = bench.window(&round.phase, &slots, "fan-out").await;
        let rounds = round.rounds.load(Ordering::Relaxed) - rounds_before;
        let mut extra = serde_json::Map::new();
        extra.insert(
            "messages_per_s".into(),
            json!((rounds as f64 / cpu.wall_s.max(1e-9)).round()),
        );
        let report = RunReport {
            scenario: "fanout".into(),
            params: bench.params(&[
                ("members", json!(members)),
                ("threads", json!(bench.common.threads)),
            ]),
            run,
            runs: bench.common.runs,
            deliveries: latency.count(),
            unit: "deliveries",
            cpu,
            latency: latency.summary(),
            errors,
            extra,
        };
        bench.print(&report);
        reports.push(report);
    }
    round.phase.set(STOP);
    round.all_in.notify_one();
    cancel.cancel();
    let _ = tokio::time::timeout(
        bench.common.timeout + Duration::from_secs(1),
        futures::future::join_all(tasks),
    )
    .await;
    Ok(reports)
}

/// Creates the group over a v2 connection as its first member (v1 gives no
/// group id back) and logs out again.
pub(crate) async fn create_group(bench: &Bench, users: &[User]) -> anyhow::Result<i64> {
    let limit = bench.common.timeout.max(Duration::from_secs(30));
    let mut admin = Conn::connect(bench.server(0), bench.source(0), Version::V2).await?;
    admin
        .login(users[0].id, &bench.common.password, limit)
        .await?;
    let create = CreateGroup {
        id: None,
        name: format!("{}group", bench.name_prefix()),
        desc: "chatbench".into(),
    };
    admin.send(&Request::CreateGroup(create)).await?;
    let ack = admin.expect_ack(limit).await?;
    let group = ack.groupid.context("CREATE_GROUP ACK without groupid")?;
    admin.logout(users[0].id, limit).await?;
    Ok(group)
}

async fn send(
    mut conn: Conn,
    user: User,
    group: i64,
    receivers: usize,
    round: Arc<Round>,
    slot: SharedSlot,
    timeout: Duration,
) {
    let mut chat = BenchChat::new(&user, ChatTarget::Group(group), conn.version);
    let mut seq = 0;
    while round.phase.get() != STOP {
        seq += 1;
        round.remaining.store(receivers, Ordering::SeqCst);
        round.seq.store(seq, Ordering::SeqCst);
        round
            .sent_at_ns
            .store(round.base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        if let Err(e) = conn.send(chat.seq(seq)).await {
            lock(&slot).errors.add(e.kind());
            return;
        }
        if conn.version == Version::V2 {
            // v2 answers every GROUP_CHAT with an ACK.
            if let Err(e) = conn.expect_ack(timeout).await {
                let fatal = e.is_fatal();
                lock(&slot).errors.add(e.kind());
                if fatal {
                    return;
                }
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, round.all_in.notified()).await {
                Err(_) => {
                    lock(&slot).errors.add("timeout");
                    break;
                }
                Ok(()) if round.remaining.load(Ordering::SeqCst) == 0 => {
                    round.rounds.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(()) if round.phase.get() == STOP => return,
                Ok(()) => {} // a stale wake-up from an earlier, timed-out round
            }
        }
    }
}

async fn receive(mut conn: Conn, round: Arc<Round>, slot: SharedSlot, cancel: CancellationToken) {
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            frame = conn.recv() => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                lock(&slot).errors.add(e.kind());
                return;
            }
        };
        match chat_seq(&frame) {
            Ok(Some(seq)) => {
                let current = round.seq.load(Ordering::SeqCst);
                if seq == current {
                    if round.phase.get() == MEASURE {
                        let now = round.base.elapsed().as_nanos() as u64;
                        let sent = round.sent_at_ns.load(Ordering::SeqCst);
                        lock(&slot)
                            .latency
                            .record(Duration::from_nanos(now.saturating_sub(sent)));
                    }
                    if round.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                        round.all_in.notify_one();
                    }
                } else if seq < current {
                    lock(&slot).errors.add("late");
                } else {
                    lock(&slot).errors.add(BenchError::Sequence.kind());
                }
            }
            Ok(None) => {}
            Err(e) => lock(&slot).errors.add(e.kind()),
        }
    }
}
