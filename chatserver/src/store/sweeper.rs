//! MySQL: deletes confirmed inbox rows after the writer's transaction has
//! moved the cursor past them, in statements of their own.
//!
//! Deleting them inside the writer's transaction made writers wait for
//! each other. On a small `inbox` (everyone confirming promptly, the usual
//! state) MariaDB's planner chose a full scan for a batch's many ranges,
//! and the scan waited for every row another writer had inserted and not
//! yet committed: 1,400 lock waits of 4.5 ms each in a 7 s ping-pong, and
//! a third of the box idle. On a large one each range still locked the row
//! past its end, the next user's newest (1-4 s waits on 55 servers). The
//! writer now only reads the rows' sizes (a plain read: no locks) and the
//! rows go here. Nothing reads them meanwhile: every inbox read starts
//! past the confirmed cursor.
//!
//! A clean stop sweeps what is queued (`Store::close`). Rows a crash leaves
//! behind stay unread and uncounted until retention removes them with the
//! messages of their age. Queue policy: bounded; when full, ranges are
//! left the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Any, AnyPool, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use super::health::StoreCalls;
use super::inbox::push_ranges;
use super::{Confirmation, INSERT_CHUNK};

/// Batches of ranges waiting for the sweeper at most.
const QUEUE: usize = 1024;
/// How long ranges gather before a sweep: one DELETE (and one commit) a
/// second at most per server. Every 200 ms, 55 servers sharing MariaDB
/// could add 275 commits a second beside the chat's 900 (in one run chat
/// across them fell from 959-997 to 799-1,003 messages/s; once a second it
/// stayed at 912-1,013).
const PERIOD: Duration = Duration::from_secs(1);
/// Users with rows to sweep kept across failed sweeps at most; past it
/// they are left to retention.
const MAX_PENDING_USERS: usize = 100_000;

enum Sweep {
    Ranges(Vec<Confirmation>),
    /// Answered once every range queued before it is deleted (or failed).
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Sweeper {
    queue: mpsc::Sender<Sweep>,
    /// The task's own connection, closed by [`Sweeper::close`].
    pool: AnyPool,
}

impl Sweeper {
    /// Starts the task; it ends when every handle is dropped.
    pub(super) fn spawn(pool: AnyPool, calls: StoreCalls) -> Sweeper {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool.clone(), calls, rx));
        Sweeper { queue, pool }
    }

    /// Queues committed confirmations; never waits (see the queue policy).
    pub(super) fn hand_over(&self, ranges: Vec<Confirmation>) {
        if self.queue.try_send(Sweep::Ranges(ranges)).is_err() {
            tracing::debug!("sweeper queue full; confirmed rows left to retention");
        }
    }

    /// Sweeps everything queued so far (within a second: a sweep that has
    /// begun gathering finishes first), then closes the connection.
    pub(super) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Sweep::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
        self.pool.close().await;
    }
}

async fn run(pool: AnyPool, calls: StoreCalls, mut rx: mpsc::Receiver<Sweep>) {
    // user -> (after, upto): one user's confirmations are consecutive.
    let mut pending: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut flushes = Vec::new();
    let mut received = Vec::new();
    while rx.recv_many(&mut received, QUEUE).await > 0 {
        let flushing = received.iter().any(|s| matches!(s, Sweep::Flush(_)));
        if !flushing {
            tokio::time::sleep(PERIOD).await;
        }
        while let Ok(more) = rx.try_recv() {
            received.push(more);
        }
        for sweep in received.drain(..) {
            match sweep {
                Sweep::Ranges(ranges) => {
                    for range in ranges {
                        let entry = pending
                            .entry(range.user_id)
                            .or_insert((range.after, range.upto));
                        *entry = (entry.0.min(range.after), entry.1.max(range.upto));
                    }
                }
                Sweep::Flush(done) => flushes.push(done),
            }
        }
        let ranges: Vec<Confirmation> = pending
            .iter()
            .map(|(&user_id, &(after, upto))| Confirmation {
                user_id,
                after,
                upto,
            })
            .collect();
        match calls.time("sweep", delete(&pool, &ranges)).await {
            Ok(()) => pending.clear(),
            Err(error) if pending.len() > MAX_PENDING_USERS => {
                tracing::warn!(%error, users = pending.len(), "inbox sweep failed; confirmed rows left to retention");
                pending.clear();
            }
            Err(error) => tracing::warn!(%error, "inbox sweep failed; retried"),
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One autocommit DELETE per chunk of users. It may wait for a row another
/// writer holds, briefly: writers never wait for it, since the rows it
/// deletes are confirmed and nobody writes them again.
async fn delete(pool: &AnyPool, ranges: &[Confirmation]) -> Result<(), sqlx::Error> {
    for chunk in ranges.chunks(INSERT_CHUNK) {
        let mut delete = QueryBuilder::<Any>::new("DELETE FROM inbox WHERE ");
        push_ranges(&mut delete, chunk);
        delete.build().execute(pool).await?;
    }
    Ok(())
}
