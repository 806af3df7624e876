//! A transaction that owns its pooled connection and never hands it back
//! to the pool unless it ended cleanly.
//!
//! Through sqlx's `Transaction`, a COMMIT that failed (SQLite: "database or
//! disk is full") left the transaction open on the connection, and what
//! ran on that connection afterwards ran inside it (sqlx nests a `begin`
//! in an open transaction as a SAVEPOINT): the writer's retry found its own
//! uncommitted `cid` and answered "already stored", and 399 senders got
//! ACKs for messages that were never committed
//! (chatserver/tests/full_disk.rs). Here BEGIN and COMMIT are plain
//! statements, and a transaction dropped without a COMMIT or ROLLBACK
//! that succeeded closes its connection, which discards whatever it did.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

pub(super) struct OwnedTx {
    conn: PoolConnection<Any>,
    ended: bool,
}

impl OwnedTx {
    pub(super) async fn begin(pool: &AnyPool) -> Result<OwnedTx, sqlx::Error> {
        let mut tx = OwnedTx {
            conn: pool.acquire().await?,
            ended: false,
        };
        tx.conn.execute("BEGIN").await?;
        Ok(tx)
    }

    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn.execute("COMMIT").await?;
        self.ended = true;
        Ok(())
    }

    /// Undoes the transaction and keeps the connection, when the ROLLBACK
    /// goes through (otherwise the connection is closed).
    pub(super) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.conn.execute("ROLLBACK").await?;
        self.ended = true;
        Ok(())
    }
}

impl Drop for OwnedTx {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for OwnedTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for OwnedTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}
