//! Offline delivery: M messages sent back to back to a user who is not
//! logged in, then that user logs in; the messages in its LOGIN_ACK (v1)
//! and those pushed right after it (v2: all of them) are counted and their
//! order checked.

use std::time::Duration;

use protocol::{LoginAck, Reply, Request, ServerFrame};
use serde_json::json;
use tokio::time::Instant;

use crate::conn::{chat_seq, parse, parse_seq, BenchChat, BenchError, ChatTarget, Conn};
use crate::stats::{Errors, Latency, RunReport};
use crate::Bench;

/// How long to keep reading after the LOGIN_ACK for messages pushed later.
const AFTER_LOGIN: Duration = Duration::from_millis(300);

pub async fn run(bench: &Bench, messages: usize) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(messages >= 1, "--messages must be at least 1");
    let users = bench.users(2, "off").await?;
    let (sender_user, receiver_user) = (&users[0], &users[1]);
    let limit = bench.common.timeout.max(Duration::from_secs(30));
    let mut sender = bench
        .login_all(
            std::slice::from_ref(sender_user),
            |_| bench.server(0),
            "log in sender",
        )
        .await?
        .remove(0);
    let mut reports = Vec::new();
    let mut chat = BenchChat::new(
        sender_user,
        ChatTarget::User(receiver_user.id),
        bench.version(),
    );
    for run in 1..=bench.common.runs {
        let base = ((run - 1) * messages) as u64;
        let mut errors = Errors::default();
        let start = bench.sample();
        let sending = Instant::now();
        for i in 1..=messages as u64 {
            sender.send(chat.seq(base + i)).await?;
        }
        // The PONG comes after every chat was handled (and, in v2, ACKed).
        sender.send(&Request::Ping).await?;
        loop {
            match parse(&sender.recv_timeout(limit).await?)? {
                ServerFrame::Reply(Reply::Pong(_)) => break,
                ServerFrame::Reply(Reply::Error(failure)) => {
                    errors.add(BenchError::refused(&failure).kind());
                }
                _ => {}
            }
        }
        let stored_in = sending.elapsed();

        let logging_in = Instant::now();
        let mut receiver = Conn::connect(bench.server(0), bench.source(1), bench.version()).await?;
        let ack = receiver
            .login(receiver_user.id, &bench.common.password, limit)
            .await?;
        let login_time = logging_in.elapsed();
        let cpu = bench.used_since(&start);
        let mut seqs: Vec<u64> = offline_seqs(&ack, &mut errors);
        let in_ack = seqs.len();
        // v2: the inbox follows the LOGIN_ACK as pushes; confirmed at the end.
        let mut inbox_seq = 0;
        loop {
            match receiver.recv_timeout(AFTER_LOGIN).await {
                Ok(frame) => {
                    if let Ok(ServerFrame::Chat(chat)) = parse(&frame) {
                        inbox_seq = inbox_seq.max(chat.seq.unwrap_or(0));
                    }
                    match chat_seq(&frame) {
                        Ok(seq) => seqs.extend(seq),
                        Err(e) => errors.add(e.kind()),
                    }
                }
                Err(BenchError::Timeout) => break,
                Err(e) => {
                    errors.add(e.kind());
                    break;
                }
            }
        }
        if inbox_seq > 0 {
            receiver
                .send(&Request::Delivered(protocol::Delivered { seq: inbox_seq }))
                .await?;
        }
        receiver.logout(receiver_user.id, limit).await?;
        drop(receiver);

        let check = check_order(&seqs, base + 1, messages as u64);
        if check.missing > 0 {
            errors.add("missing");
        }
        if !check.in_order {
            errors.add("out_of_order");
        }
        let mut latency = Latency::default();
        latency.record(login_time);
        let mut extra = serde_json::Map::new();
        extra.insert("sent".into(), json!(messages));
        extra.insert("delivered".into(), json!(check.delivered));
        extra.insert("in_login_ack".into(), json!(in_ack));
        extra.insert("missing".into(), json!(check.missing));
        extra.insert("duplicates".into(), json!(check.duplicates));
        extra.insert("in_order".into(), json!(u8::from(check.in_order)));
        extra.insert("store_ms".into(), json!(ms(stored_in)));
        extra.insert("login_ms".into(), json!(ms(login_time)));
        let report = RunReport {
            scenario: "offline".into(),
            params: bench.params(&[("messages", json!(messages))]),
            run,
            runs: bench.common.runs,
            deliveries: check.delivered as u64,
            unit: "deliveries",
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Sequence numbers of the messages in a LOGIN_ACK's offline list. Entries
/// the reader skipped count as bad messages (benchmark users have no friends
/// or groups, whose bad entries would count too), as do texts without one.
pub fn offline_seqs(ack: &LoginAck, errors: &mut Errors) -> Vec<u64> {
    for _ in 0..ack.skipped {
        errors.add("bad_offline_message");
    }
    let mut seqs = Vec::with_capacity(ack.offline.len());
    for chat in &ack.offline {
        match parse_seq(&chat.msg) {
            Some(seq) => seqs.push(seq),
            None => errors.add("bad_offline_message"),
        }
    }
    seqs
}

#[derive(Debug, PartialEq, Eq)]
pub struct OrderCheck {
    pub delivered: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub in_order: bool,
}

/// Compares the received sequence numbers with `first..first+count`.
pub fn check_order(seqs: &[u64], first: u64, count: u64) -> OrderCheck {
    let mut seen = std::collections::HashSet::new();
    let duplicates = seqs.iter().filter(|s| !seen.insert(**s)).count();
    let missing = (first..first + count).filter(|s| !seen.contains(s)).count();
    OrderCheck {
        delivered: seqs.len(),
        missing,
        duplicates,
        in_order: seqs.windows(2).all(|w| w[0] < w[1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_check() {
        let ok = check_order(&[1, 2, 3], 1, 3);
        assert_eq!(
            ok,
            OrderCheck {
                delivered: 3,
                missing: 0,
                duplicates: 0,
                in_order: true
            }
        );
        let bad = check_order(&[3, 1, 1], 1, 3);
        assert_eq!(
            bad,
            OrderCheck {
                delivered: 3,
                missing: 1,
                duplicates: 1,
                in_order: false
            }
        );
    }

    fn login_ack(frame: serde_json::Value) -> LoginAck {
        match parse(frame.to_string().as_bytes()).unwrap() {
            ServerFrame::Reply(Reply::LoginOk(ack)) => *ack,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offline_messages_and_bad_ones() {
        let mut errors = Errors::default();
        let ack = login_ack(json!({"msgid": 2, "errno": 0, "id": 2, "offlinemsg": [
            r#"{"msgid":6,"id":1,"name":"a","toid":2,"msg":"seq 1","time":"t"}"#,
            {"msgid": 6, "id": 1, "toid": 2, "msg": "seq 2"},
            {"msgid": 6, "id": 1, "toid": 2, "msg": "no number"},
            "not json",
        ]}));
        assert_eq!(offline_seqs(&ack, &mut errors), vec![1, 2]);
        assert_eq!(errors.get("bad_offline_message"), 2);
        let ack = login_ack(json!({"msgid": 2, "errno": 0, "id": 2}));
        assert!(offline_seqs(&ack, &mut errors).is_empty());
    }
}
