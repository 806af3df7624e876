//! Background upkeep of the database. The purge: messages older than the retention period leave
//! history, undelivered inbox rows of that age leave the inbox (their
//! receivers' counters shrink with them), expired tokens go. Work is done
//! in small chunks with a pause between them, so the purge never holds the
//! database for long and never blocks traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::StoreError;
use crate::mid::first_mid_at;
use crate::store::Store;

/// Rows per statement.
const CHUNK: u32 = 500;
/// Pause between chunks.
const BREATHER: Duration = Duration::from_millis(50);
/// How often the purge runs.
const PERIOD: Duration = Duration::from_secs(600);

/// How often the SQLite WAL is checkpointed (see `Store::checkpoint`):
/// often enough that under steady writes the writer's own checkpoint
/// (`PoolRole::wal_autocheckpoint`) finds little left to copy. A pass with
/// nothing to copy costs one query.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Checkpoints the SQLite WAL every `CHECKPOINT_EVERY` until `stop`, and
/// once more at the end. A run of failures (the database away) is logged
/// once, not ten times a second.
pub async fn checkpoints(store: Store, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        match store.checkpoint().await {
            Err(error) if !failing => {
                tracing::warn!(%error, "WAL checkpoint failed; retrying quietly until one succeeds");
                failing = true;
            }
            Err(_) => {}
            Ok(()) if failing => {
                tracing::info!("WAL checkpoint succeeded again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
    let _ = store.checkpoint().await;
}

/// Runs until `stop`: once soon after start, then every `PERIOD`.
pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    let mut wait = Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = PERIOD;
        match purge(&store, retention, &stop).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention purge done"),
            Err(error) => tracing::warn!(%error, "retention purge failed; retried later"),
        }
    }
}

/// One full pass; returns the rows removed.
pub async fn purge(
    store: &Store,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let cutoff = first_mid_at(now - retention.as_millis() as i64);
    let mut removed = 0;
    loop {
        let rows = store.expired_inbox_rows(cutoff, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        let mut users: Vec<i64> = rows.iter().map(|row| row.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let mut tx = store.begin_writes().await?;
        let mut counters = tx.lock_inboxes(&users).await?;
        tx.delete_inbox_rows(&rows).await?;
        // Rows at or below the confirmed cursor were counted out when they
        // were confirmed (on MySQL the sweeper may not have reached them).
        let mut freed: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for row in &rows {
            if counters
                .get(&row.user_id)
                .is_some_and(|c| row.seq > c.delivered_seq)
            {
                let entry = freed.entry(row.user_id).or_default();
                entry.0 += 1;
                entry.1 += row.size;
            }
        }
        let changed: Vec<_> = freed
            .iter()
            .filter_map(|(user, (count, bytes))| {
                let c = counters.get_mut(user)?;
                c.pending_count = (c.pending_count - count).max(0);
                c.pending_bytes = (c.pending_bytes - bytes).max(0);
                Some((*user, *c))
            })
            .collect();
        tx.save_counters(&changed).await?;
        tx.commit().await?;
        removed += rows.len() as u64;
        if pause(stop).await {
            return Ok(removed);
        }
    }
    loop {
        let n = store.purge_messages(cutoff, CHUNK).await?;
        removed += n;
        if n == 0 || pause(stop).await {
            break;
        }
    }
    loop {
        let n = store.purge_tokens(now, CHUNK).await?;
        removed += n;
        if n == 0 || pause(stop).await {
            break;
        }
    }
    Ok(removed)
}

/// Sleeps between chunks; `true` when the server is stopping.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(BREATHER) => false,
    }
}
