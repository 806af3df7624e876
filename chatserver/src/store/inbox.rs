//! The delivery tables (see migrations/*/0002_inbox.sql): message bodies
//! stored once, per-receiver inbox rows numbered by `seq`, each user's
//! counters, and login tokens (stored as hashes).
//!
//! Writes that assign `seq` go through [`WriteTx`], one transaction per
//! batch of the writer task: on MySQL the counters rows are locked in user
//! order (`FOR UPDATE`), so servers writing to the same inboxes wait for
//! each other instead of deadlocking, and `seq` stays gap-free across a
//! cluster; SQLite has one writer at a time anyway.

use std::collections::HashMap;

use sqlx::query_builder::Separated;
use sqlx::{Any, QueryBuilder, Row};

use super::sweeper::Sweeper;
use super::tx::OwnedTx;
use super::{
    is_unique_violation, long_text, placeholders, update_states, Dialect, Store, INSERT_CHUNK,
};
use crate::error::StoreError;

/// A message to store: its body once, whoever receives it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub mid: i64,
    pub sender_id: i64,
    pub conversation: String,
    pub cid: Option<String>,
    /// The v2 JSON text of the push, without `seq`.
    pub body: std::sync::Arc<str>,
}

/// One receiver's reference to a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxRow {
    pub user_id: i64,
    pub seq: i64,
    pub mid: i64,
    pub size: i64,
}

/// A user's inbox counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The seq of the newest message; the next one gets `last_seq + 1`.
    pub last_seq: i64,
    /// Everything up to here is confirmed and gone from `inbox`.
    pub delivered_seq: i64,
    /// Rows still in `inbox` and their bodies' bytes: what the inbox limit bounds.
    pub pending_count: i64,
    pub pending_bytes: i64,
}

/// An inbox message read back for delivery.
#[derive(Debug, Clone)]
pub struct StoredPush {
    pub seq: i64,
    pub body: String,
}

/// A receiver's confirmed range of its inbox: `after < seq <= upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    pub user_id: i64,
    pub after: i64,
    pub upto: i64,
}

/// `(user_id = ? AND seq > ? AND seq <= ?) OR ...` for `ranges`.
pub(super) fn push_ranges(query: &mut QueryBuilder<'_, Any>, ranges: &[Confirmation]) {
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 {
            query.push(" OR ");
        }
        query.push("(user_id = ");
        query.push_bind(range.user_id);
        query.push(" AND seq > ");
        query.push_bind(range.after);
        query.push(" AND seq <= ");
        query.push_bind(range.upto);
        query.push(")");
    }
}

/// A login token to store, by its hash (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub hash: String,
    pub user_id: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

/// Whose a login token is.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
    pub name: String,
}

/// One transaction of the writer task (see `tx` for why it is not sqlx's).
pub struct WriteTx {
    tx: OwnedTx,
    dialect: Dialect,
    calls: super::health::StoreCalls,
    sweeper: Option<Sweeper>,
    /// Ranges confirmed in this transaction whose rows the sweeper deletes.
    confirmed: Vec<Confirmation>,
}

impl Store {
    pub async fn begin_writes(&self) -> Result<WriteTx, StoreError> {
        let tx = self
            .calls
            .time("begin", OwnedTx::begin(&self.writes))
            .await?;
        Ok(WriteTx {
            tx,
            dialect: self.dialect,
            calls: self.calls.clone(),
            sweeper: self.sweeper.clone(),
            confirmed: Vec::new(),
        })
    }

    /// Inbox messages after `after_seq`, oldest first, at most `limit`.
    pub async fn inbox_after(
        &self,
        user_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredPush>, StoreError> {
        self.calls
            .time("inbox_after", async {
                let rows = sqlx::query(
                    "SELECT i.seq, m.body FROM inbox i JOIN messages m ON m.mid = i.mid \
             WHERE i.user_id = ? AND i.seq > ? ORDER BY i.seq LIMIT ?",
                )
                .bind(user_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredPush {
                            seq: row.try_get(0)?,
                            body: long_text(row, 1)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// A conversation's messages before `before_mid`, newest first; one more
    /// than `limit` tells the caller there are more.
    pub async fn history(
        &self,
        conversation: &str,
        before_mid: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.calls.time("history", async {
        let rows = sqlx::query(
            "SELECT body FROM messages WHERE conversation = ? AND mid < ? ORDER BY mid DESC LIMIT ?",
        )
        .bind(conversation)
        .bind(before_mid)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| long_text(row, 0).map_err(Into::into))
            .collect()
        }).await
    }

    /// The user a token hash belongs to, when it expires, and the user's
    /// name: what a token login needs, in one round trip.
    pub async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>, StoreError> {
        self.calls
            .time("token_owner", async {
                let row = sqlx::query(
                    "SELECT t.user_id, t.expires_at, u.name FROM tokens t \
                     JOIN users u ON u.id = t.user_id WHERE t.hash = ?",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row
                    .map(|row| -> Result<_, sqlx::Error> {
                        Ok(TokenOwner {
                            user_id: row.try_get(0)?,
                            expires_at: row.try_get(1)?,
                            name: row.try_get(2)?,
                        })
                    })
                    .transpose()?)
            })
            .await
    }

    pub async fn delete_token(&self, hash: &str) -> Result<(), StoreError> {
        self.calls
            .time("delete_token", async {
                sqlx::query("DELETE FROM tokens WHERE hash = ?")
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            })
            .await
    }

    /// Deletes up to `chunk` expired tokens; returns how many.
    pub async fn purge_tokens(&self, now_ms: i64, chunk: u32) -> Result<u64, StoreError> {
        self.calls
            .time("purge_tokens", async {
                let hashes: Vec<String> =
                    sqlx::query_scalar("SELECT hash FROM tokens WHERE expires_at < ? LIMIT ?")
                        .bind(now_ms)
                        .bind(i64::from(chunk))
                        .fetch_all(&self.pool)
                        .await?;
                if hashes.is_empty() {
                    return Ok(0);
                }
                let sql = format!(
                    "DELETE FROM tokens WHERE hash IN ({})",
                    placeholders(hashes.len())
                );
                let mut query = sqlx::query(&sql);
                for hash in &hashes {
                    query = query.bind(hash);
                }
                Ok(query.execute(&self.pool).await?.rows_affected())
            })
            .await
    }

    /// Deletes up to `chunk` messages older than `cutoff_mid`; returns how many.
    pub async fn purge_messages(&self, cutoff_mid: i64, chunk: u32) -> Result<u64, StoreError> {
        self.calls
            .time("purge_messages", async {
                let mids: Vec<i64> = sqlx::query_scalar(
                    "SELECT mid FROM messages WHERE mid < ? ORDER BY mid LIMIT ?",
                )
                .bind(cutoff_mid)
                .bind(i64::from(chunk))
                .fetch_all(&self.pool)
                .await?;
                if mids.is_empty() {
                    return Ok(0);
                }
                // Their cids first, so that no cid ever names a missing message.
                for table in ["message_cids", "messages"] {
                    let sql = format!(
                        "DELETE FROM {table} WHERE mid IN ({})",
                        placeholders(mids.len())
                    );
                    let mut query = sqlx::query(&sql);
                    for mid in &mids {
                        query = query.bind(*mid);
                    }
                    query.execute(&self.pool).await?;
                }
                Ok(mids.len() as u64)
            })
            .await
    }

    /// Up to `chunk` undelivered inbox rows older than `cutoff_mid`.
    pub async fn expired_inbox_rows(
        &self,
        cutoff_mid: i64,
        chunk: u32,
    ) -> Result<Vec<InboxRow>, StoreError> {
        self.calls
            .time("expired_inbox_rows", async {
                let rows =
                    sqlx::query("SELECT user_id, seq, mid, size FROM inbox WHERE mid < ? LIMIT ?")
                        .bind(cutoff_mid)
                        .bind(i64::from(chunk))
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter()
                    .map(|row| {
                        Ok(InboxRow {
                            user_id: row.try_get(0)?,
                            seq: row.try_get(1)?,
                            mid: row.try_get(2)?,
                            size: row.try_get(3)?,
                        })
                    })
                    .collect()
            })
            .await
    }
}

/// The user's counters (zero for a user who never received anything).
pub(super) async fn counters_of(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
) -> Result<Counters, sqlx::Error> {
    let row = sqlx::query(
        "SELECT last_seq, delivered_seq, pending_count, pending_bytes FROM inboxes WHERE user_id = ?",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row
        .map(|row| counters(&row, 0))
        .transpose()?
        .unwrap_or_default())
}

/// `head VALUES (...), (...) tail` for `rows`, one statement per
/// `INSERT_CHUNK` of them; `bind` pushes one row's values.
async fn insert_rows<T>(
    tx: &mut OwnedTx,
    head: &str,
    rows: &[T],
    tail: &str,
    mut bind: impl FnMut(Separated<'_, 'static, Any, &'static str>, &T),
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut insert = QueryBuilder::<'static, Any>::new(head);
        insert.push_values(chunk, &mut bind);
        insert.push(tail);
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn counters(row: &sqlx::any::AnyRow, first: usize) -> Result<Counters, sqlx::Error> {
    Ok(Counters {
        last_seq: row.try_get(first)?,
        delivered_seq: row.try_get(first + 1)?,
        pending_count: row.try_get(first + 2)?,
        pending_bytes: row.try_get(first + 3)?,
    })
}

impl WriteTx {
    /// The `mid` and body already stored under each (sender, cid): one
    /// query per chunk of keys, not one per key.
    pub async fn find_cids(
        &mut self,
        keys: &[(i64, &str)],
    ) -> Result<HashMap<(i64, String), (i64, String)>, StoreError> {
        let calls = self.calls.clone();
        calls
            .time("find_cids", async {
                let mut found = HashMap::new();
                for chunk in keys.chunks(INSERT_CHUNK) {
                    let mut select = QueryBuilder::<Any>::new(
                        "SELECT c.sender_id, c.cid, m.mid, m.body FROM message_cids c \
                         JOIN messages m ON m.mid = c.mid WHERE ",
                    );
                    for (i, &(sender, cid)) in chunk.iter().enumerate() {
                        if i > 0 {
                            select.push(" OR ");
                        }
                        select.push("(c.sender_id = ");
                        select.push_bind(sender);
                        select.push(" AND c.cid = ");
                        select.push_bind(cid.to_owned());
                        select.push(")");
                    }
                    for row in select.build().fetch_all(&mut *self.tx).await? {
                        found.insert(
                            (row.try_get(0)?, long_text(&row, 1)?),
                            (row.try_get(2)?, long_text(&row, 3)?),
                        );
                    }
                }
                Ok(found)
            })
            .await
    }

    /// The counters of `users` (sorted, distinct), locked until commit on
    /// MySQL; rows missing (users who never received anything) are created.
    pub async fn lock_inboxes(
        &mut self,
        users: &[i64],
    ) -> Result<HashMap<i64, Counters>, StoreError> {
        let calls = self.calls.clone();
        calls
            .time("lock_inboxes", async {
                let mut found = self.select_counters(users).await?;
                let missing: Vec<i64> = users
                    .iter()
                    .copied()
                    .filter(|user| !found.contains_key(user))
                    .collect();
                if !missing.is_empty() {
                    let head = format!(
                "{} INTO inboxes (user_id, last_seq, delivered_seq, pending_count, pending_bytes) ",
                self.dialect.insert_ignore()
            );
                    insert_rows(&mut self.tx, &head, &missing, "", |mut row, user| {
                        row.push_bind(*user)
                            .push_bind(0_i64)
                            .push_bind(0_i64)
                            .push_bind(0_i64)
                            .push_bind(0_i64);
                    })
                    .await?;
                    found.extend(self.select_counters(&missing).await?);
                }
                Ok(found)
            })
            .await
    }

    async fn select_counters(
        &mut self,
        users: &[i64],
    ) -> Result<HashMap<i64, Counters>, StoreError> {
        let lock = match self.dialect {
            Dialect::MySql => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let mut found = HashMap::with_capacity(users.len());
        for chunk in users.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT user_id, last_seq, delivered_seq, pending_count, pending_bytes \
                 FROM inboxes WHERE user_id IN ({}) ORDER BY user_id{lock}",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            for row in query.fetch_all(&mut *self.tx).await? {
                found.insert(row.try_get::<i64, _>(0)?, counters(&row, 1)?);
            }
        }
        Ok(found)
    }

    /// Counts what each user's confirmed range `after < seq <= upto` holds
    /// (rows and bytes), for the counters. SQLite deletes the rows here, in
    /// one `DELETE ... RETURNING` per chunk of users. MySQL only reads them
    /// (a plain read takes no locks) and the sweeper deletes them once this
    /// transaction has committed (see `sweeper` for why).
    pub async fn confirm(
        &mut self,
        ranges: &[Confirmation],
    ) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
        let calls = self.calls.clone();
        calls
            .time("confirm", async {
                let mut removed: HashMap<i64, (i64, i64)> = HashMap::with_capacity(ranges.len());
                for chunk in ranges.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<Any>::new(match self.dialect {
                        Dialect::MySql => "SELECT user_id, size FROM inbox WHERE ",
                        Dialect::Sqlite => "DELETE FROM inbox WHERE ",
                    });
                    push_ranges(&mut query, chunk);
                    if self.dialect == Dialect::Sqlite {
                        query.push(" RETURNING user_id, size");
                    }
                    for row in query.build().fetch_all(&mut *self.tx).await? {
                        let entry = removed.entry(row.try_get(0)?).or_default();
                        entry.0 += 1;
                        entry.1 += row.try_get::<i64, _>(1)?;
                    }
                }
                if self.dialect == Dialect::MySql {
                    self.confirmed.extend_from_slice(ranges);
                }
                Ok(removed)
            })
            .await
    }

    /// Removes specific inbox rows (retention).
    pub async fn delete_inbox_rows(&mut self, rows: &[InboxRow]) -> Result<(), StoreError> {
        let calls = self.calls.clone();
        calls
            .time("delete_inbox_rows", async {
                for row in rows {
                    sqlx::query("DELETE FROM inbox WHERE user_id = ? AND seq = ?")
                        .bind(row.user_id)
                        .bind(row.seq)
                        .execute(&mut *self.tx)
                        .await?;
                }
                Ok(())
            })
            .await
    }

    /// Stores messages; `false` when a (sender, cid) is already taken (a
    /// race with another batch: the caller retries and finds it).
    pub async fn insert_messages(&mut self, messages: &[NewMessage]) -> Result<bool, StoreError> {
        let calls = self.calls.clone();
        calls
            .time("insert_messages", async {
                let head = "INSERT INTO messages (mid, sender_id, conversation, body) ";
                insert_rows(&mut self.tx, head, messages, "", |mut row, message| {
                    row.push_bind(message.mid)
                        .push_bind(message.sender_id)
                        .push_bind(message.conversation.clone())
                        .push_bind(message.body.to_string());
                })
                .await?;
                let with_cid: Vec<(&NewMessage, &str)> = messages
                    .iter()
                    .filter_map(|m| Some((m, m.cid.as_deref()?)))
                    .collect();
                let head = "INSERT INTO message_cids (sender_id, cid, mid) ";
                let inserted = insert_rows(
                    &mut self.tx,
                    head,
                    &with_cid,
                    "",
                    |mut row, (message, cid)| {
                        row.push_bind(message.sender_id)
                            .push_bind(cid.to_string())
                            .push_bind(message.mid);
                    },
                )
                .await;
                match inserted {
                    Ok(()) => Ok(true),
                    Err(error) if is_unique_violation(&error) => Ok(false),
                    Err(error) => Err(error.into()),
                }
            })
            .await
    }

    pub async fn insert_tokens(&mut self, tokens: &[NewToken]) -> Result<(), StoreError> {
        let head = "INSERT INTO tokens (hash, user_id, expires_at) ";
        self.insert_all("insert_tokens", head, tokens, "", |mut row, token| {
            row.push_bind(token.hash.clone())
                .push_bind(token.user_id)
                .push_bind(token.expires_at);
        })
        .await
    }

    pub async fn insert_inbox(&mut self, rows: &[InboxRow]) -> Result<(), StoreError> {
        let head = "INSERT INTO inbox (user_id, seq, mid, size) ";
        self.insert_all("insert_inbox", head, rows, "", |mut row, inbox| {
            row.push_bind(inbox.user_id)
                .push_bind(inbox.seq)
                .push_bind(inbox.mid)
                .push_bind(inbox.size);
        })
        .await
    }

    /// Writes counters back (rows exist: `lock_inboxes` made them).
    pub async fn save_counters(&mut self, changed: &[(i64, Counters)]) -> Result<(), StoreError> {
        let upsert = match self.dialect {
            Dialect::MySql => {
                " ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq), \
                 delivered_seq = VALUES(delivered_seq), pending_count = VALUES(pending_count), \
                 pending_bytes = VALUES(pending_bytes)"
            }
            Dialect::Sqlite => {
                " ON CONFLICT (user_id) DO UPDATE SET last_seq = excluded.last_seq, \
                 delivered_seq = excluded.delivered_seq, pending_count = excluded.pending_count, \
                 pending_bytes = excluded.pending_bytes"
            }
        };
        let head =
            "INSERT INTO inboxes (user_id, last_seq, delivered_seq, pending_count, pending_bytes) ";
        self.insert_all(
            "save_counters",
            head,
            changed,
            upsert,
            |mut row, (user, c)| {
                row.push_bind(*user)
                    .push_bind(c.last_seq)
                    .push_bind(c.delivered_seq)
                    .push_bind(c.pending_count)
                    .push_bind(c.pending_bytes);
            },
        )
        .await
    }

    /// [`insert_rows`] in this transaction, timed as `op`.
    async fn insert_all<T>(
        &mut self,
        op: &'static str,
        head: &str,
        rows: &[T],
        tail: &str,
        bind: impl FnMut(Separated<'_, 'static, Any, &'static str>, &T),
    ) -> Result<(), StoreError> {
        let calls = self.calls.clone();
        calls
            .time(op, async {
                insert_rows(&mut self.tx, head, rows, tail, bind).await?;
                Ok(())
            })
            .await
    }

    /// `users.state` of `user_ids`, in this transaction.
    pub async fn set_online(&mut self, user_ids: &[i64], online: bool) -> Result<(), StoreError> {
        let calls = self.calls.clone();
        calls
            .time("set_online", async {
                update_states(&mut self.tx, user_ids, online).await
            })
            .await
    }

    /// Commits, then hands the confirmed ranges to the sweeper (MySQL).
    pub async fn commit(self) -> Result<(), StoreError> {
        self.calls.time("commit", self.tx.commit()).await?;
        if let (Some(sweeper), false) = (&self.sweeper, self.confirmed.is_empty()) {
            sweeper.hand_over(self.confirmed);
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.calls.time("rollback", self.tx.rollback()).await?;
        Ok(())
    }
}
