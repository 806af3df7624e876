//! Chat servers running in the test's own process (through the library's
//! `Server::start` and `serve`, as `main` does), over a fresh database of
//! this run: SQLite or MariaDB, alone or as a cluster sharing MariaDB and a
//! Redis prefix. Stopped cleanly by [`ChatServer::stop`], or on drop.

use std::net::SocketAddr;
use std::time::Duration;

use chatserver::config::{AbuseLimits, HashCost};
use chatserver::{Config, Server};
use sqlx::{AnyPool, Row};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::run;
use crate::wait::Deadline;
use crate::WAIT;

/// The storage engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Sqlite,
    MariaDb,
}

/// A database URL nobody else uses: a new SQLite file or a new MariaDB
/// database, both named after the run.
pub fn fresh_database_url(storage: Storage) -> String {
    match storage {
        Storage::Sqlite => run::fresh_sqlite_url(),
        Storage::MariaDb => run::fresh_mariadb_url(),
    }
}

/// Settings for tests: a fresh database, cheap hashing, the name
/// `test-server`, otherwise the defaults.
pub fn test_config(storage: Storage) -> Config {
    config_on(fresh_database_url(storage))
}

/// Settings for tests over the database at `database_url`. The signup and
/// connection limits are lifted (tests register many users from
/// 127.0.0.1, as [`crate::bin::GENEROUS_LIMITS`]); the login limits are not.
pub fn config_on(database_url: String) -> Config {
    Config {
        abuse: AbuseLimits {
            register_per_address: 1_000_000,
            create_group_per_user: 1_000_000,
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            ..AbuseLimits::default()
        },
        listen: "127.0.0.1:0".into(),
        database_url,
        hash_cost: HashCost {
            memory_kib: 64,
            iterations: 1,
        },
        db_connect_timeout: Duration::from_secs(5),
        name: Some("test-server".into()),
        // Shut down at once, as tests stopping servers expect.
        drain_period: Duration::ZERO,
        ..Config::default()
    }
}

/// How long a server may take to start (migrations on a busy machine).
const START_WAIT: Duration = Duration::from_secs(30);
/// How long a clean stop may take.
const STOP_WAIT: Duration = Duration::from_secs(8);

/// A chat server running in this process.
pub struct ChatServer {
    pub addr: SocketAddr,
    /// The web listener: the web client on `/`, WebSockets on `/ws`.
    pub web: SocketAddr,
    pub database_url: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ChatServer {
    pub async fn start(storage: Storage) -> ChatServer {
        Self::start_with(test_config(storage)).await
    }

    /// On a free port with `config`.
    pub async fn start_with(config: Config) -> ChatServer {
        Self::start_on("127.0.0.1:0".parse().expect("address"), config).await
    }

    /// On `addr` (port 0: a free one). Retries the bind for at most
    /// [`WAIT`]: the port of a server just stopped may still be held.
    pub async fn start_on(addr: SocketAddr, config: Config) -> ChatServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let deadline = Deadline::after(WAIT);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if !deadline.passed() => {
                    eprintln!("binding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().expect("local address");
        let server = tokio::time::timeout(START_WAIT, Server::start(&config, addr))
            .await
            .unwrap_or_else(|_| panic!("chat server start-up took over {START_WAIT:?}"))
            .unwrap_or_else(|e| panic!("chat server does not start: {e}"));
        let web_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the web listener");
        let web = web_listener.local_addr().expect("local address");
        let server = server.with_web(web_listener);
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, stop.clone().cancelled_owned()));
        ChatServer {
            addr,
            web,
            database_url: config.database_url,
            stop,
            task: Some(task),
        }
    }

    /// Its address as text: the name of a server configured without one.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A new connection, registered as `name` (password `pw`) and logged in
    /// through v2.
    pub async fn user(&self, name: &str) -> (Client, i64) {
        Client::user(self.addr, name).await
    }

    /// A direct connection to the server's database, to check stored rows.
    pub async fn db(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.database_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.database_url))
    }

    /// The first column of the first row of `sql`, an integer.
    pub async fn count(&self, sql: &str) -> i64 {
        let pool = self.db().await;
        let row = sqlx::query(sql)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let count: i64 = row.try_get(0).unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
        count
    }

    /// Waits (within [`WAIT`](crate::WAIT)) until `sql`'s count is
    /// `expected`: for rows the server changes after it replied, such as
    /// inbox rows removed once DELIVERED is written.
    pub async fn count_becomes(&self, sql: &str, expected: i64) {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let count = self.count(sql).await;
            if count == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sql}: {count}, expected {expected}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Clean shutdown: stops listening (new connects are refused), closes
    /// its sessions, records their users offline; bounded.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STOP_WAIT, task)
                .await
                .unwrap_or_else(|_| panic!("chat server still running {STOP_WAIT:?} after stop"))
                .expect("chat server task");
        }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Chat servers sharing one fresh MariaDB database and one fresh Redis
/// prefix (presence lease 2 s). Servers have no name: each is known by its
/// address.
pub struct Cluster {
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
}

impl Cluster {
    /// On the shared Redis server.
    pub fn new() -> Self {
        Self::on_redis(&run::redis_url())
    }

    /// On the Redis server at `redis_url`.
    pub fn on_redis(redis_url: &str) -> Self {
        Cluster {
            database_url: run::fresh_mariadb_url(),
            redis_url: redis_url.to_owned(),
            prefix: run::redis_prefix(),
        }
    }

    pub fn config(&self) -> Config {
        let mut config = config_on(self.database_url.clone());
        config.redis_url = Some(self.redis_url.clone());
        config.redis_prefix = self.prefix.clone();
        config.presence_lease = Duration::from_secs(2);
        config.name = None;
        config
    }

    /// One more server on a free port (start them one after the other: the
    /// first creates the database and runs the migrations).
    pub async fn start_node(&self) -> ChatServer {
        ChatServer::start_with(self.config()).await
    }

    /// One more server that takes PROXY protocol headers from 127.0.0.1
    /// (a proxy in front, such as Nginx with `proxy_protocol on`), with
    /// `max_connections_per_ip` for the clients the headers name.
    pub async fn start_node_behind_proxy(&self, max_connections_per_ip: usize) -> ChatServer {
        let mut config = self.config();
        config.proxy_protocol_from =
            chatserver::config::parse_cidrs("127.0.0.1").expect("a valid address");
        config.abuse.max_connections_per_ip = max_connections_per_ip;
        ChatServer::start_with(config).await
    }

    /// `count` servers.
    pub async fn start(&self, count: usize) -> Vec<ChatServer> {
        let mut servers = Vec::with_capacity(count);
        for _ in 0..count {
            servers.push(self.start_node().await);
        }
        servers
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// Stops every server, one after the other.
pub async fn stop_all(servers: Vec<ChatServer>) {
    for server in servers {
        server.stop().await;
    }
}

/// Runs each async scenario `name(storage)` against both storage engines,
/// as the tests `sqlite::name` and `mariadb::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::server::Storage::Sqlite).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::server::Storage::MariaDb).await;
                }
            )*
        }
    };
}
