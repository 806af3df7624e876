//! Storage: users, friends, groups and members here; messages, inboxes and
//! tokens in `inbox`. In
//! MySQL/MariaDB or SQLite through one sqlx `Any` pool. Every query is
//! parameterized; the two engines differ only in the `Dialect` below.

use std::time::{Duration, Instant};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::{Any, AnyPool, Row};

use crate::calls::CallTimer;
use crate::config::{mask_url, SqliteSync};
use crate::error::StoreError;
use health::{Blips, StoreCalls};

mod health;
mod inbox;
mod sweeper;
mod tx;

pub use inbox::{
    Confirmation, Counters, InboxRow, NewMessage, NewToken, StoredPush, TokenOwner, WriteTx,
};

static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Writer tasks on MySQL at most (see `writer_shards`).
const WRITER_SHARDS_MYSQL: u32 = 4;

/// Rows per multi-row INSERT: far below both engines' bind-variable limits.
const INSERT_CHUNK: usize = 500;

/// SQLite: the WAL frames after which the writer's commit finishes the
/// checkpoint itself (about 64 MiB of 4 KiB pages); see
/// `PoolRole::wal_autocheckpoint`.
const WRITER_CHECKPOINT_FRAMES: u32 = 16_384;

/// SQLite: bytes the WAL file is cut back to when it restarts.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// The store's three pools, which differ in size and session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolRole {
    /// Requests of sessions and background tasks; `None`: 16 connections
    /// on MySQL, 8 on SQLite.
    Requests(Option<u32>),
    /// The writer tasks' own connections, one per task: their
    /// transactions never wait for a pooled one, and on SQLite the one
    /// writer's page cache stays warm (a pooled connection's cache is
    /// dropped whenever another one wrote).
    Writer { shards: u32 },
    /// Readiness checks' own connection: a pool busy with a login burst is
    /// not a database that is away.
    Probe,
    /// MySQL: the sweeper's own connection (see `sweeper`), so that its
    /// short lock waits never hold one that requests need.
    Sweeper,
}

impl PoolRole {
    fn connections(self, dialect: Dialect) -> u32 {
        match (self, dialect) {
            (PoolRole::Requests(size), Dialect::MySql) => size.unwrap_or(16),
            (PoolRole::Requests(size), Dialect::Sqlite) => size.unwrap_or(8),
            (PoolRole::Writer { shards }, _) => shards,
            (PoolRole::Probe | PoolRole::Sweeper, _) => 1,
        }
    }

    /// SQLite's WAL never restarts while a checkpoint is behind the last
    /// commit, so under steady writes a background checkpoint alone let it
    /// grow without end (1.5 GB in 7 s of ping-pong, until the disk was
    /// full). `Store::checkpoint` does most of the copying every 100 ms on
    /// another connection; past `WRITER_CHECKPOINT_FRAMES` the writer's
    /// commit copies what is left, and its next batch restarts the WAL.
    /// That commit waits for the copy and two fsyncs: 28-46 ms on this box,
    /// once per 64 MiB written (docs/hardening.md).
    /// Other connections never checkpoint inside a commit: a checkpoint of
    /// the whole WAL there made a login or a batch wait for it.
    fn wal_autocheckpoint(self) -> u32 {
        match self {
            PoolRole::Writer { .. } => WRITER_CHECKPOINT_FRAMES,
            PoolRole::Requests(_) | PoolRole::Probe | PoolRole::Sweeper => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    MySql,
    Sqlite,
}

impl Dialect {
    /// The id of the row the connection inserted last.
    fn last_insert_id(self) -> &'static str {
        match self {
            Dialect::MySql => "SELECT CAST(LAST_INSERT_ID() AS SIGNED)",
            Dialect::Sqlite => "SELECT last_insert_rowid()",
        }
    }

    fn insert_ignore(self) -> &'static str {
        match self {
            Dialect::MySql => "INSERT IGNORE",
            Dialect::Sqlite => "INSERT OR IGNORE",
        }
    }
}

/// What LOGIN needs to check a password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub name: String,
    pub password_hash: String,
}

/// One member of one of the user's groups, as read at login.
#[derive(Debug, Clone)]
pub struct GroupMemberRow {
    pub group_id: i64,
    pub group_name: String,
    pub group_desc: String,
    pub user_id: i64,
    pub user_name: String,
    pub role: String,
}

/// What an acknowledged (committed) message survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed to disk at commit: power loss and OS crash included.
    PowerLoss,
    /// Written at commit, flushed later: a crash of the server or database
    /// process loses nothing, an OS crash or power loss may lose the last
    /// commits (SQLite `synchronous = NORMAL`, MySQL
    /// `innodb_flush_log_at_trx_commit = 2`).
    DatabaseCrash,
    /// `innodb_flush_log_at_trx_commit = 0`: up to about a second of
    /// commits lost even when only the database process crashes.
    Nothing,
}

/// A cloneable handle on the pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// One connection, for the transactions of the writer task.
    writes: AnyPool,
    /// One connection for readiness checks, so they measure the database
    /// and not how busy the main pool is.
    probe: AnyPool,
    /// MySQL: deletes confirmed inbox rows after their commit.
    sweeper: Option<sweeper::Sweeper>,
    dialect: Dialect,
    sync: SqliteSync,
    /// Times every call below (the metrics' database latency and errors)
    /// and notes connection failures (which pooled connections to check).
    calls: StoreCalls,
}

/// Writer tasks that may commit at once. SQLite has one writer at a time.
/// On MySQL concurrent transactions share the redo log's fsync (InnoDB
/// group commit): a quarter of the request pool, 1 to 4. A server told to
/// keep its pool small (`--db-pool-size`, for a large cluster sharing one
/// database) keeps one writer: on 55 servers sharing MariaDB with four
/// writers each, a tenth of MariaDB's CPU went to what looked like latch
/// waits, and chat across them reached 1,240-1,478 messages/s at a p99 of
/// 180-230 ms; with one writer each, 1,693/s at 135 ms.
fn writer_shards(dialect: Dialect, pool_size: Option<u32>) -> u32 {
    match dialect {
        Dialect::Sqlite => 1,
        Dialect::MySql => {
            (PoolRole::Requests(pool_size).connections(dialect) / 4).clamp(1, WRITER_SHARDS_MYSQL)
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn placeholders(n: usize) -> String {
    let mut text = "?,".repeat(n);
    text.pop();
    text
}

impl Store {
    /// Connects (retrying until `patience` runs out, since the database may
    /// still be starting), creates a missing MySQL database when allowed, and
    /// applies the migrations of the engine.
    /// `pool_size`: the request pool's connections (`None`: 16 on MySQL, 8
    /// on SQLite).
    pub async fn connect(
        url: &str,
        patience: Duration,
        sync: SqliteSync,
        pool_size: Option<u32>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("mysql:") {
            Dialect::MySql
        } else {
            Dialect::Sqlite
        };
        let deadline = Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match Self::try_connect(url, dialect, sync, pool_size).await {
                Ok(store) => return Ok(store),
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(url = %mask_url(url), %error, "database not ready, retrying");
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn try_connect(
        url: &str,
        dialect: Dialect,
        sync: SqliteSync,
        pool_size: Option<u32>,
    ) -> Result<Store, StoreError> {
        if dialect == Dialect::MySql && !Any::database_exists(url).await? {
            Any::create_database(url).await?;
        }
        let calls = StoreCalls::default();
        let pool = Self::pool_options(dialect, sync, &calls.blips, PoolRole::Requests(pool_size))
            .connect(url)
            .await?;
        match dialect {
            Dialect::MySql => MYSQL_MIGRATIONS.run(&pool).await?,
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
        }
        let writes = Self::pool_options(
            dialect,
            sync,
            &calls.blips,
            PoolRole::Writer {
                shards: writer_shards(dialect, pool_size),
            },
        )
        .connect(url)
        .await?;
        let probe =
            Self::pool_options(dialect, sync, &calls.blips, PoolRole::Probe).connect_lazy(url)?;
        let sweeper = match dialect {
            Dialect::MySql => Some(sweeper::Sweeper::spawn(
                Self::pool_options(dialect, sync, &calls.blips, PoolRole::Sweeper)
                    .connect_lazy(url)?,
                calls.clone(),
            )),
            Dialect::Sqlite => None,
        };
        Ok(Store {
            pool,
            writes,
            probe,
            sweeper,
            dialect,
            sync,
            calls,
        })
    }

    /// The same store, reporting each call (by operation) to `calls`.
    pub fn timed(mut self, calls: CallTimer) -> Store {
        self.calls.timer = calls;
        self
    }

    fn pool_options(
        dialect: Dialect,
        sync: SqliteSync,
        blips: &Blips,
        role: PoolRole,
    ) -> AnyPoolOptions {
        let blips = blips.clone();
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .max_connections(role.connections(dialect))
            // See `health` for when a connection is checked before use.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let blips = blips.clone();
                Box::pin(async move { Ok(blips.check(conn, meta.idle_for).await) })
            });
        if dialect == Dialect::MySql {
            // Writers and the sweeper read and lock rows only, not gaps:
            // under REPEATABLE READ a range DELETE on one user's inbox rows
            // also locked the gap before the next user's, and deadlocked
            // with a batch inserting that user's rows on another server.
            // Seq assignment is serialized by the `FOR UPDATE` row locks on
            // `inboxes`, which stay. A writer's read of the rows a receiver
            // confirmed sees every commit made before it (a fresh snapshot
            // per statement).
            const READ_COMMITTED: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";
            let session: &'static [&'static str] = match role {
                PoolRole::Writer { .. } => &[READ_COMMITTED],
                // A paused server's open transaction must not hold the
                // sweeper for the default 50 s; it retries later.
                PoolRole::Sweeper => &[READ_COMMITTED, "SET SESSION innodb_lock_wait_timeout = 1"],
                PoolRole::Requests(_) | PoolRole::Probe => return options,
            };
            return options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor;
                    for statement in session {
                        conn.execute(*statement).await?;
                    }
                    Ok(())
                })
            });
        }
        let autocheckpoint = role.wal_autocheckpoint();
        options.after_connect(move |conn, _meta| {
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                // See `SqliteSync` for what each setting survives.
                conn.execute(match sync {
                    SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
                    SqliteSync::Full => "PRAGMA synchronous = FULL",
                })
                .await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                // 16 MiB of page cache (the default is 2 MiB).
                conn.execute("PRAGMA cache_size = -16384").await?;
                // See `PoolRole::wal_autocheckpoint`.
                conn.execute(format!("PRAGMA wal_autocheckpoint = {autocheckpoint}").as_str())
                    .await?;
                // A WAL that grew while checkpoints could not finish (a
                // long read) shrinks back to this size once it restarts.
                conn.execute(format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").as_str())
                    .await?;
                // Statement journals (a multi-row INSERT inside the writer's
                // transaction needs one to undo itself alone) in memory
                // rather than in temporary files: a file per statement
                // was a tenth of the writer's time.
                conn.execute("PRAGMA temp_store = MEMORY").await?;
                Ok(())
            })
        })
    }

    /// What a committed transaction survives on this engine, for the
    /// start-up log: SQLite runs WAL with `--sqlite-synchronous` (`NORMAL`
    /// by default); on MySQL it depends on the server's
    /// `innodb_flush_log_at_trx_commit`.
    pub async fn durability(&self) -> Result<Durability, StoreError> {
        match self.dialect {
            Dialect::Sqlite => Ok(match self.sync {
                SqliteSync::Full => Durability::PowerLoss,
                SqliteSync::Normal => Durability::DatabaseCrash,
            }),
            Dialect::MySql => {
                let setting: i64 =
                    sqlx::query_scalar("SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(match setting {
                    1 => Durability::PowerLoss,
                    2 => Durability::DatabaseCrash,
                    _ => Durability::Nothing,
                })
            }
        }
    }

    /// Whether the engine keeps a WAL that [`Store::checkpoint`] copies
    /// (SQLite; MySQL checkpoints by itself).
    pub fn has_wal(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    /// SQLite: copies the WAL into the database file without blocking
    /// writers (`PASSIVE`); called every 100 ms by a background task, since
    /// only the writer's commits checkpoint, and only once the WAL is large
    /// (see `PoolRole::wal_autocheckpoint`). Nothing to do on MySQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.dialect != Dialect::Sqlite {
            return Ok(());
        }
        self.calls
            .time("checkpoint", async {
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&self.pool)
                    .await?;
                Ok(())
            })
            .await
    }

    /// One round trip to the database, for readiness checks.
    /// Whether the database answers within `within`. A failure is noted
    /// (see `health`) even when it is the time that ran out.
    pub async fn ping(&self, within: Duration) -> Result<(), StoreError> {
        self.calls
            .time("ping", async {
                match tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&self.probe))
                    .await
                {
                    Ok(done) => done.map(|_| ()).map_err(Into::into),
                    Err(_) => Err(StoreError::NoAnswer(within)),
                }
            })
            .await
    }

    /// How many writer tasks may commit at once (see `writer_shards`):
    /// one per connection of the writers' pool.
    pub fn writer_shards(&self) -> usize {
        self.writes.options().get_max_connections() as usize
    }

    /// Sweeps what is confirmed (see `sweeper`), then closes every pool.
    pub async fn close(&self) {
        if let Some(sweeper) = &self.sweeper {
            sweeper.close().await;
        }
        self.writes.close().await;
        self.probe.close().await;
        self.pool.close().await;
    }

    /// Registers a user; `None` when the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.calls
            .time("create_user", async {
                let mut conn = self.pool.acquire().await?;
                let result = sqlx::query(
                    "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                )
                .bind(name)
                .bind(password_hash)
                .bind(now_ms())
                .execute(&mut *conn)
                .await;
                match result {
                    Ok(_) => Ok(Some(self.inserted_id(&mut conn).await?)),
                    Err(error) if is_unique_violation(&error) => Ok(None),
                    Err(error) => Err(error.into()),
                }
            })
            .await
    }

    /// The id generated by the connection's last INSERT (the `Any` driver
    /// does not report it for SQLite).
    async fn inserted_id(&self, conn: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar::<_, i64>(self.dialect.last_insert_id())
            .fetch_one(conn)
            .await
    }

    pub async fn credentials(&self, user_id: i64) -> Result<Option<Credentials>, StoreError> {
        self.calls
            .time("credentials", async {
                let row = sqlx::query("SELECT name, password_hash FROM users WHERE id = ?")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| -> Result<_, sqlx::Error> {
                        Ok(Credentials {
                            name: row.try_get(0)?,
                            password_hash: row.try_get(1)?,
                        })
                    })
                    .transpose()?)
            })
            .await
    }

    pub async fn user_name(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        self.calls
            .time("user_name", async {
                let row = sqlx::query("SELECT name FROM users WHERE id = ?")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|row| row.try_get(0)).transpose()?)
            })
            .await
    }

    /// Records users as online or offline (kept for operators and for the
    /// original schema's readers; presence itself lives in memory).
    pub async fn set_online(&self, user_ids: &[i64], online: bool) -> Result<(), StoreError> {
        self.calls
            .time("set_online", async {
                let mut conn = self.pool.acquire().await?;
                update_states(&mut conn, user_ids, online).await
            })
            .await
    }

    /// Marks everyone offline: a single server that starts owns every session.
    pub async fn reset_online_states(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET state = 'offline' WHERE state <> 'offline'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes two users friends of each other; repeating it changes nothing.
    pub async fn add_friends(&self, a: i64, b: i64) -> Result<(), StoreError> {
        self.calls
            .time("add_friends", async {
                let sql = format!(
                    "{} INTO friends (user_id, friend_id) VALUES (?, ?), (?, ?)",
                    self.dialect.insert_ignore()
                );
                sqlx::query(&sql)
                    .bind(a)
                    .bind(b)
                    .bind(b)
                    .bind(a)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            })
            .await
    }

    /// Creates a group with its creator as first member; `None` when the
    /// name is taken. One transaction: a group never exists without its creator.
    pub async fn create_group(
        &self,
        creator: i64,
        name: &str,
        desc: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.calls
            .time("create_group", async {
                let mut tx = tx::OwnedTx::begin(&self.pool).await?;
                let inserted = sqlx::query(
                    "INSERT INTO chat_groups (name, description, created_at) VALUES (?, ?, ?)",
                )
                .bind(name)
                .bind(desc)
                .bind(now_ms())
                .execute(&mut *tx)
                .await;
                let group_id = match inserted {
                    Ok(_) => self.inserted_id(&mut tx).await?,
                    Err(error) if is_unique_violation(&error) => {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    Err(error) => return Err(error.into()),
                };
                sqlx::query(
                    "INSERT INTO group_members (group_id, user_id, role) VALUES (?, ?, 'creator')",
                )
                .bind(group_id)
                .bind(creator)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(group_id))
            })
            .await
    }

    /// The member ids of a group, or `None` when there is no such group.
    pub async fn group_members(&self, group_id: i64) -> Result<Option<Vec<i64>>, StoreError> {
        self.calls
            .time("group_members", async {
                let exists = sqlx::query("SELECT 1 FROM chat_groups WHERE id = ?")
                    .bind(group_id)
                    .fetch_optional(&self.pool)
                    .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                let rows = sqlx::query(
                    "SELECT user_id FROM group_members WHERE group_id = ? ORDER BY user_id",
                )
                .bind(group_id)
                .fetch_all(&self.pool)
                .await?;
                let members = rows
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()?;
                Ok(Some(members))
            })
            .await
    }

    /// Adds a normal member; `false` when there is no such group. Joining
    /// twice, or joining one's own group, changes nothing.
    pub async fn join_group(&self, group_id: i64, user_id: i64) -> Result<bool, StoreError> {
        self.calls
            .time("join_group", async {
                let exists = sqlx::query("SELECT 1 FROM chat_groups WHERE id = ?")
                    .bind(group_id)
                    .fetch_optional(&self.pool)
                    .await?;
                if exists.is_none() {
                    return Ok(false);
                }
                let sql = format!(
                    "{} INTO group_members (group_id, user_id, role) VALUES (?, ?, 'normal')",
                    self.dialect.insert_ignore()
                );
                sqlx::query(&sql)
                    .bind(group_id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(true)
            })
            .await
    }

    /// Every member of every group the user belongs to, in one query.
    pub async fn groups_of(&self, user_id: i64) -> Result<Vec<GroupMemberRow>, StoreError> {
        self.calls
            .time("groups_of", async {
                let mut conn = self.pool.acquire().await?;
                Ok(groups_with_members(&mut conn, user_id).await?)
            })
            .await
    }

    /// What a login reads once it holds the user: friends, groups with
    /// their members, and the inbox counters, on one pooled connection (a
    /// login wave waits for the pool once per login, not three times).
    pub async fn login_reads(&self, user_id: i64) -> Result<LoginReads, StoreError> {
        self.calls
            .time("login_reads", async {
                let mut conn = self.pool.acquire().await?;
                Ok(LoginReads {
                    friends: friends_of(&mut conn, user_id).await?,
                    groups: groups_with_members(&mut conn, user_id).await?,
                    counters: inbox::counters_of(&mut conn, user_id).await?,
                })
            })
            .await
    }
}

/// What [`Store::login_reads`] returns.
pub struct LoginReads {
    /// (id, name), by id.
    pub friends: Vec<(i64, String)>,
    /// One row per (group, member), by group then member.
    pub groups: Vec<GroupMemberRow>,
    pub counters: Counters,
}

async fn friends_of(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT u.id, u.name FROM friends f JOIN users u ON u.id = f.friend_id \
         WHERE f.user_id = ? ORDER BY u.id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

async fn groups_with_members(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
) -> Result<Vec<GroupMemberRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT g.id, g.name, g.description, u.id, u.name, all_members.role \
         FROM group_members mine \
         JOIN chat_groups g ON g.id = mine.group_id \
         JOIN group_members all_members ON all_members.group_id = g.id \
         JOIN users u ON u.id = all_members.user_id \
         WHERE mine.user_id = ? ORDER BY g.id, u.id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(group_member_row).collect()
}

/// `users.state` of `user_ids`, on `conn` (a pooled connection, or the
/// writer's transaction).
async fn update_states(
    conn: &mut sqlx::AnyConnection,
    user_ids: &[i64],
    online: bool,
) -> Result<(), StoreError> {
    let state = if online { "online" } else { "offline" };
    for chunk in user_ids.chunks(INSERT_CHUNK) {
        let sql = format!(
            "UPDATE users SET state = ? WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(state);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A MEDIUMTEXT column: MySQL reports it as a BLOB type, which `Any`
/// decodes only as bytes; SQLite reports TEXT.
fn long_text(row: &AnyRow, index: usize) -> Result<String, sqlx::Error> {
    match row.try_get::<String, _>(index) {
        Ok(text) => Ok(text),
        Err(_) => {
            let bytes: Vec<u8> = row.try_get(index)?;
            String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        }
    }
}

fn group_member_row(row: &AnyRow) -> Result<GroupMemberRow, sqlx::Error> {
    Ok(GroupMemberRow {
        group_id: row.try_get(0)?,
        group_name: row.try_get(1)?,
        group_desc: row.try_get(2)?,
        user_id: row.try_get(3)?,
        user_name: row.try_get(4)?,
        role: row.try_get(5)?,
    })
}

/// What the abuse limits ask of storage.
impl Store {
    /// How many groups `user_id` created (and still holds as creator).
    pub async fn groups_created_by(&self, user_id: i64) -> Result<i64, StoreError> {
        self.calls
            .time("groups_created_by", async {
                let row = sqlx::query(
                    "SELECT COUNT(*) FROM group_members WHERE user_id = ? AND role = 'creator'",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get(0)?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_gets_a_writer_per_four_pooled_connections_between_one_and_four() {
        let mysql = |pool| writer_shards(Dialect::MySql, pool);
        assert_eq!(mysql(None), 4, "the default pool of 16");
        assert_eq!(mysql(Some(2)), 1, "a large cluster's small pool");
        assert_eq!(mysql(Some(1)), 1);
        assert_eq!(mysql(Some(8)), 2);
        assert_eq!(mysql(Some(100)), 4);
        assert_eq!(writer_shards(Dialect::Sqlite, Some(100)), 1);
        assert_eq!(writer_shards(Dialect::Sqlite, None), 1);
    }
}
