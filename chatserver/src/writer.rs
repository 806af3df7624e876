//! The tasks that write messages and inbox cursors, with group commit:
//! whatever requests queue while a transaction runs go into the next one,
//! so durability costs a commit per batch, not per message. One task on
//! SQLite (one writer at a time anyway), a few on MySQL.
//!
//! Queue policy: bounded; a full queue makes senders wait (each sender is
//! waiting for its ACK anyway), so a slow disk slows senders instead of
//! growing memory.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{Confirmation, Counters, InboxRow, NewMessage, NewToken, Store, WriteTx};

/// Requests waiting for the writer at most.
const QUEUE: usize = 4096;
/// Requests per transaction at most.
const MAX_BATCH: usize = 512;
/// Attempts of one batch (a MySQL deadlock, a SQLite busy snapshot or a
/// `cid` race resolve on a retry).
const ATTEMPTS: u32 = 3;
/// How long confirmations and presence changes alone wait for other work
/// to share their transaction. Nobody waits for either, and each usually
/// has company coming: a client confirms a push and often answers it at
/// once, and a login records its presence just before it stores its
/// token. Written apart, each took a transaction of its own, and commits
/// are what a shared MariaDB runs out of first (55 servers logging users
/// in had 196 threads waiting in COMMIT). A late confirmation only means
/// messages offered again after a crash, which seq lets the client drop;
/// a session's end flushes both before the user may log in again.
const COMPANY_DELAY: Duration = Duration::from_millis(20);

/// The per-receiver bound on undelivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub messages: i64,
    pub bytes: i64,
}

/// A chat message to store, with who receives it.
#[derive(Debug)]
pub struct SendJob {
    pub message: NewMessage,
    pub receivers: Vec<i64>,
    /// 1:1 chats refuse the message when the receiver's inbox is full; group
    /// chats store it for the members with room and skip the others.
    pub refuse_when_full: bool,
}

#[derive(Debug, PartialEq)]
pub enum SendOutcome {
    /// Committed: each receiver's seq, and members skipped for a full inbox.
    Stored {
        deliveries: Vec<(i64, i64)>,
        skipped_full: Vec<i64>,
    },
    /// The sender's `cid` was stored before, as this message.
    Duplicate { mid: i64, body: String },
    /// The receiver's inbox is full; nothing was stored.
    InboxFull,
}

enum Job {
    Send(SendJob, oneshot::Sender<Result<SendOutcome, StoreError>>),
    /// The receiver holds its inbox up to `upto`.
    Confirm {
        user: i64,
        upto: i64,
    },
    /// The `users.state` column (kept for operators; presence itself lives
    /// in memory and Redis).
    Presence {
        user: i64,
        online: bool,
    },
    /// A login token, answered once committed. Through the writer rather
    /// than a pooled connection: on SQLite a second writing connection
    /// contends for the one write lock, and the loser sleeps in SQLite's
    /// busy handler (1, 2, 5, 10 ms ...). A storm of 1,000 logins raised
    /// the chat p99 6.8 × that way; 1.6 × with the tokens written here.
    Token(NewToken, oneshot::Sender<Result<(), StoreError>>),
    /// Answered once every job queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The handle commands use; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// One queue per writer task. A sender's messages always go to the same
    /// task, so they are stored (and numbered) in the order they were sent.
    shards: Vec<mpsc::Sender<Job>>,
}

impl Writer {
    /// Starts the writer tasks; they end when every handle is dropped.
    pub fn spawn(store: Store, limits: InboxLimits) -> Writer {
        let shards = (0..store.writer_shards())
            .map(|_| {
                let (jobs, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(store.clone(), limits, rx));
                jobs
            })
            .collect();
        Writer { shards }
    }

    fn shard(&self, user: i64) -> &mpsc::Sender<Job> {
        &self.shards[user.unsigned_abs() as usize % self.shards.len()]
    }

    /// Queues the job `make` builds around a reply channel on `user`'s
    /// shard, and waits for the reply (sent once the batch committed).
    async fn ask<T>(
        &self,
        user: i64,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shard(user)
            .send(make(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stores a message; the outcome says what was committed.
    pub async fn send(&self, job: SendJob) -> Result<SendOutcome, StoreError> {
        self.ask(job.message.sender_id, |reply| Job::Send(job, reply))
            .await
    }

    /// Moves a receiver's cursor (not waited for: a confirmation lost in a
    /// crash only means the messages are offered again, and seq lets the
    /// client drop them).
    pub async fn confirm(&self, user: i64, upto: i64) {
        let _ = self.shard(user).send(Job::Confirm { user, upto }).await;
    }

    /// Stores a login token with the next batch.
    pub async fn insert_token(&self, token: NewToken) -> Result<(), StoreError> {
        self.ask(token.user_id, |reply| Job::Token(token, reply))
            .await
    }

    /// Records a user online or offline, in the next batch.
    pub async fn presence(&self, user: i64, online: bool) {
        let _ = self.shard(user).send(Job::Presence { user, online }).await;
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        for shard in &self.shards {
            let (done, wait) = oneshot::channel();
            if shard.send(Job::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

impl Job {
    /// Nobody waits for it: it may wait for company (`COMPANY_DELAY`).
    fn can_wait(&self) -> bool {
        matches!(self, Job::Confirm { .. } | Job::Presence { .. })
    }
}

async fn run(store: Store, limits: InboxLimits, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deadline = tokio::time::Instant::now() + COMPANY_DELAY;
        while batch.len() < MAX_BATCH && batch.iter().all(Job::can_wait) {
            let room = MAX_BATCH - batch.len();
            let more = rx.recv_many(&mut batch, room);
            match tokio::time::timeout_at(deadline, more).await {
                Ok(0) | Err(_) => break, // closed, or waited long enough
                Ok(_) => {}
            }
        }
        let mut sends = Vec::new();
        let mut replies = Vec::new();
        let mut confirms: BTreeMap<i64, i64> = BTreeMap::new();
        let mut presence: BTreeMap<i64, bool> = BTreeMap::new();
        let mut flushes = Vec::new();
        let mut tokens = Vec::new();
        let mut token_replies = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Send(send, reply) => {
                    sends.push(send);
                    replies.push(reply);
                }
                Job::Confirm { user, upto } => {
                    let entry = confirms.entry(user).or_default();
                    *entry = (*entry).max(upto);
                }
                Job::Presence { user, online } => {
                    presence.insert(user, online);
                }
                Job::Token(token, reply) => {
                    tokens.push(token);
                    token_replies.push(reply);
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        let started = std::time::Instant::now();
        let mut result = Err(StoreError::WriterStopped);
        for attempt in 1..=ATTEMPTS {
            let writes = Writes {
                sends: &sends,
                confirms: &confirms,
                presence: &presence,
                tokens: &tokens,
            };
            result = write_batch(&store, limits, writes).await;
            match &result {
                Ok(_) => break,
                Err(error) if attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "message batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        messages = sends.len(),
                        tokens = tokens.len(),
                        "message batch failed; senders and logins get errno 10"
                    )
                }
            }
        }
        tracing::debug!(
            sends = sends.len(),
            confirms = confirms.len(),
            tokens = tokens.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "batch written"
        );
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                for reply in token_replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) => {
                let message = error.to_string();
                let failed = || StoreError::BatchFailed(message.clone());
                for reply in replies {
                    let _ = reply.send(Err(failed()));
                }
                for reply in token_replies {
                    let _ = reply.send(Err(failed()));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// What one batch writes.
#[derive(Clone, Copy)]
struct Writes<'a> {
    sends: &'a [SendJob],
    confirms: &'a BTreeMap<i64, i64>,
    presence: &'a BTreeMap<i64, bool>,
    tokens: &'a [NewToken],
}

impl Writes<'_> {
    fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.confirms.is_empty()
            && self.presence.is_empty()
            && self.tokens.is_empty()
    }
}

/// One transaction: presence, tokens and confirmations first (the
/// confirmations make room), then the sends.
async fn write_batch(
    store: &Store,
    limits: InboxLimits,
    writes: Writes<'_>,
) -> Result<Vec<SendOutcome>, StoreError> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_writes().await?;
    match fill_batch(&mut tx, limits, writes).await {
        Ok(outcomes) => {
            tx.commit().await?;
            Ok(outcomes)
        }
        Err(error) => {
            // Keeps the connection (and SQLite's warm page cache) when the
            // ROLLBACK goes through; closes it otherwise.
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// The statements of [`write_batch`]'s transaction, up to its COMMIT.
async fn fill_batch(
    tx: &mut WriteTx,
    limits: InboxLimits,
    writes: Writes<'_>,
) -> Result<Vec<SendOutcome>, StoreError> {
    let Writes {
        sends,
        confirms,
        presence,
        tokens,
    } = writes;
    let (online, offline): (Vec<i64>, Vec<i64>) = presence.keys().partition(|user| presence[user]);
    for (users, state) in [(online, true), (offline, false)] {
        if !users.is_empty() {
            tx.set_online(&users, state).await?;
        }
    }
    if !tokens.is_empty() {
        tx.insert_tokens(tokens).await?;
    }
    let cids: Vec<(i64, &str)> = sends
        .iter()
        .filter_map(|s| Some((s.message.sender_id, s.message.cid.as_deref()?)))
        .collect();
    let stored_cids = if cids.is_empty() {
        HashMap::new()
    } else {
        tx.find_cids(&cids).await?
    };
    let mut users: Vec<i64> = sends
        .iter()
        .flat_map(|s| s.receivers.iter().copied())
        .chain(confirms.keys().copied())
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut counters = tx.lock_inboxes(&users).await?;
    let mut changed: BTreeMap<i64, ()> = BTreeMap::new();
    let ranges: Vec<Confirmation> = confirms
        .iter()
        .filter_map(|(&user, &upto)| {
            let c = counters.get(&user)?;
            let upto = upto.min(c.last_seq);
            (upto > c.delivered_seq).then_some(Confirmation {
                user_id: user,
                after: c.delivered_seq,
                upto,
            })
        })
        .collect();
    let removed = if ranges.is_empty() {
        HashMap::new()
    } else {
        tx.confirm(&ranges).await?
    };
    for range in &ranges {
        let Some(c) = counters.get_mut(&range.user_id) else {
            continue;
        };
        let (count, bytes) = removed.get(&range.user_id).copied().unwrap_or_default();
        c.delivered_seq = range.upto;
        c.pending_count = (c.pending_count - count).max(0);
        c.pending_bytes = (c.pending_bytes - bytes).max(0);
        changed.insert(range.user_id, ());
    }
    let plan = plan_sends(sends, &stored_cids, &mut counters, limits);
    for user in &plan.touched {
        changed.insert(*user, ());
    }
    if !tx.insert_messages(&plan.messages).await? {
        return Err(StoreError::CidRace);
    }
    tx.insert_inbox(&plan.rows).await?;
    let changed: Vec<(i64, Counters)> = changed
        .into_keys()
        .filter_map(|user| Some((user, *counters.get(&user)?)))
        .collect();
    tx.save_counters(&changed).await?;
    Ok(plan.outcomes)
}

struct Plan {
    messages: Vec<NewMessage>,
    rows: Vec<InboxRow>,
    touched: Vec<i64>,
    outcomes: Vec<SendOutcome>,
}

/// Decides, in memory, what each send stores: seqs, limits, repeated cids.
fn plan_sends(
    sends: &[SendJob],
    stored_cids: &HashMap<(i64, String), (i64, String)>,
    counters: &mut HashMap<i64, Counters>,
    limits: InboxLimits,
) -> Plan {
    let mut plan = Plan {
        messages: Vec::new(),
        rows: Vec::new(),
        touched: Vec::new(),
        outcomes: Vec::with_capacity(sends.len()),
    };
    let mut batch_cids: HashMap<(i64, &str), usize> = HashMap::new();
    for send in sends {
        let message = &send.message;
        if let Some(cid) = message.cid.as_deref() {
            if let Some((mid, body)) = stored_cids.get(&(message.sender_id, cid.to_owned())) {
                plan.outcomes.push(SendOutcome::Duplicate {
                    mid: *mid,
                    body: body.clone(),
                });
                continue;
            }
            if let Some(&first) = batch_cids.get(&(message.sender_id, cid)) {
                let first: &NewMessage = &plan.messages[first];
                plan.outcomes.push(SendOutcome::Duplicate {
                    mid: first.mid,
                    body: first.body.to_string(),
                });
                continue;
            }
        }
        let size = message.body.len() as i64;
        let full = |c: &Counters| {
            c.pending_count + 1 > limits.messages || c.pending_bytes + size > limits.bytes
        };
        if send.refuse_when_full
            && send
                .receivers
                .iter()
                .any(|r| counters.get(r).is_some_and(full))
        {
            plan.outcomes.push(SendOutcome::InboxFull);
            continue;
        }
        let mut deliveries = Vec::with_capacity(send.receivers.len());
        let mut skipped_full = Vec::new();
        for &receiver in &send.receivers {
            let Some(c) = counters.get_mut(&receiver) else {
                continue;
            };
            if full(c) {
                skipped_full.push(receiver);
                continue;
            }
            c.last_seq += 1;
            c.pending_count += 1;
            c.pending_bytes += size;
            plan.rows.push(InboxRow {
                user_id: receiver,
                seq: c.last_seq,
                mid: message.mid,
                size,
            });
            plan.touched.push(receiver);
            deliveries.push((receiver, c.last_seq));
        }
        if let Some(cid) = message.cid.as_deref() {
            batch_cids.insert((message.sender_id, cid), plan.messages.len());
        }
        plan.messages.push(message.clone());
        plan.outcomes.push(SendOutcome::Stored {
            deliveries,
            skipped_full,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(mid: i64, cid: Option<&str>, body: &str) -> NewMessage {
        NewMessage {
            mid,
            sender_id: 1,
            conversation: "u:1:2".into(),
            cid: cid.map(Into::into),
            body: body.into(),
        }
    }

    fn send(mid: i64, cid: Option<&str>, receivers: &[i64], refuse: bool) -> SendJob {
        SendJob {
            message: message(mid, cid, "12345"),
            receivers: receivers.to_vec(),
            refuse_when_full: refuse,
        }
    }

    const ROOMY: InboxLimits = InboxLimits {
        messages: 100,
        bytes: 1000,
    };

    #[test]
    fn seqs_follow_each_receivers_counter_and_repeated_cids_store_once() {
        let mut counters = HashMap::from([
            (2, Counters::default()),
            (
                3,
                Counters {
                    last_seq: 7,
                    delivered_seq: 7,
                    ..Counters::default()
                },
            ),
        ]);
        let sends = [
            send(10, Some("a"), &[2, 3], false),
            send(11, Some("a"), &[2, 3], false),
            send(12, None, &[2], true),
        ];
        let plan = plan_sends(&sends, &HashMap::new(), &mut counters, ROOMY);
        assert_eq!(
            plan.outcomes,
            vec![
                SendOutcome::Stored {
                    deliveries: vec![(2, 1), (3, 8)],
                    skipped_full: vec![]
                },
                SendOutcome::Duplicate {
                    mid: 10,
                    body: "12345".into()
                },
                SendOutcome::Stored {
                    deliveries: vec![(2, 2)],
                    skipped_full: vec![]
                },
            ]
        );
        assert_eq!(plan.messages.len(), 2);
        assert_eq!(plan.rows.len(), 3);
        assert_eq!(counters[&2].pending_bytes, 10);
        assert_eq!(counters[&2].pending_count, 2);
    }

    #[test]
    fn a_full_inbox_refuses_a_direct_message_and_skips_a_group_member() {
        let full = Counters {
            last_seq: 3,
            pending_count: 3,
            pending_bytes: 15,
            ..Counters::default()
        };
        let mut counters = HashMap::from([(2, full), (3, Counters::default())]);
        let limits = InboxLimits {
            messages: 3,
            bytes: 1000,
        };
        let sends = [send(10, None, &[2], true), send(11, None, &[2, 3], false)];
        let plan = plan_sends(&sends, &HashMap::new(), &mut counters, limits);
        assert_eq!(plan.outcomes[0], SendOutcome::InboxFull);
        assert_eq!(
            plan.outcomes[1],
            SendOutcome::Stored {
                deliveries: vec![(3, 1)],
                skipped_full: vec![2]
            }
        );
        assert_eq!(counters[&2], full, "nothing stored for the full inbox");
        let bytes = InboxLimits {
            messages: 100,
            bytes: 19,
        };
        let plan = plan_sends(
            &[send(12, None, &[2], true)],
            &HashMap::new(),
            &mut counters,
            bytes,
        );
        assert_eq!(plan.outcomes[0], SendOutcome::InboxFull, "bytes bound too");
    }

    #[test]
    fn a_cid_stored_by_an_earlier_batch_answers_with_its_first_mid() {
        let stored = HashMap::from([((1, "a".to_owned()), (5, "first".to_owned()))]);
        let mut counters = HashMap::from([(2, Counters::default())]);
        let plan = plan_sends(
            &[send(10, Some("a"), &[2], true)],
            &stored,
            &mut counters,
            ROOMY,
        );
        assert_eq!(
            plan.outcomes[0],
            SendOutcome::Duplicate {
                mid: 5,
                body: "first".into()
            }
        );
        assert!(plan.messages.is_empty() && plan.rows.is_empty());
    }
}
