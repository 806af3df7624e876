//! Test helpers: a real server on a free port, over a fresh database of
//! either engine, and a client that speaks raw frames.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chatserver::config::HashCost;
use chatserver::{Config, Server};
use protocol::FrameCodec;
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one expected frame.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MariaDb,
}

/// The MariaDB server the suite runs against. There is no skipping: when it
/// is unreachable, the MariaDB half of the suite fails.
pub fn mysql_base_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A database URL nobody else uses: a new SQLite file or a new MariaDB database.
pub fn fresh_database_url(backend: Backend) -> String {
    let unique = format!(
        "{}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("chatchat-tests");
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}/chat_{unique}.db?mode=rwc", dir.display())
        }
        Backend::MariaDb => format!("{}/chat_test_{unique}", mysql_base_url()),
    }
}

/// Settings for tests: cheap hashing, otherwise the defaults.
pub fn test_config(backend: Backend) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        database_url: fresh_database_url(backend),
        hash_cost: HashCost {
            memory_kib: 64,
            iterations: 1,
        },
        db_connect_timeout: Duration::from_secs(5),
        name: Some("test-server".into()),
        ..Config::default()
    }
}

/// A server running in this process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub database_url: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(test_config(backend)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::start(&config, addr).await.expect("server starts");
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(server.serve(listener, shutdown));
        TestServer {
            addr,
            database_url: config.database_url,
            stop,
            task,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A direct connection to the server's database, to check stored rows.
    pub async fn db(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.database_url).await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let pool = self.db().await;
        let row = sqlx::query(sql).fetch_one(&pool).await.unwrap();
        let count: i64 = row.try_get(0).unwrap();
        pool.close().await;
        count
    }

    /// Clean shutdown, bounded like the real one.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(6), self.task)
            .await
            .expect("server stops within 6 s")
            .unwrap();
    }
}

/// A raw protocol client: sends bytes, reads `\n`-terminated frames.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// Frames read while waiting for a particular reply.
    pending: VecDeque<Value>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(16 * 1024 * 1024),
            pending: VecDeque::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends like the original client: JSON followed by one NUL.
    pub async fn send_v1(&mut self, request: Value) {
        let mut bytes = serde_json::to_vec(&request).unwrap();
        bytes.push(0);
        self.send_raw(&bytes).await;
    }

    /// Sends like our client: JSON followed by `\n`.
    pub async fn send(&mut self, request: Value) {
        let mut bytes = serde_json::to_vec(&request).unwrap();
        bytes.push(b'\n');
        self.send_raw(&bytes).await;
    }

    /// The next frame, parsed; panics after [`REPLY_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        match tokio::time::timeout(REPLY_TIMEOUT, self.next_frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("connection closed while a frame was expected"),
            Err(_) => panic!("no frame within {REPLY_TIMEOUT:?}"),
        }
    }

    /// The next frame, or `None` at end of stream.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(serde_json::from_slice(&frame).unwrap_or_else(|e| {
                    panic!(
                        "server sent invalid JSON {:?}: {e}",
                        String::from_utf8_lossy(&frame)
                    )
                }));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Asserts that nothing arrives for a while (for "v1 sends no reply").
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(self.pending.is_empty(), "unread frames: {:?}", self.pending);
        if let Ok(frame) = tokio::time::timeout(wait, self.next_frame()).await {
            panic!("expected no frame, got {frame:?}");
        }
    }

    /// Asserts the server closes the connection within `wait`; returns the
    /// frames that came before the close.
    pub async fn expect_closed(&mut self, wait: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return frames,
                Err(_) => panic!("connection still open after {wait:?}; got {frames:?}"),
            }
        }
    }

    /// v2 request with a rid, returning the reply.
    pub async fn call(&mut self, mut request: Value) -> Value {
        request["v"] = json!(2);
        let rid = format!("r{}", rand::random::<u32>());
        request["rid"] = json!(rid);
        self.send(request).await;
        let mut early = VecDeque::new();
        loop {
            let frame = match tokio::time::timeout(REPLY_TIMEOUT, self.next_frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!("connection closed while waiting for {rid}"),
                Err(_) => panic!("no reply to {rid} within {REPLY_TIMEOUT:?}"),
            };
            if frame["rid"] == json!(rid) {
                self.pending.extend(early);
                return frame;
            }
            assert!(
                frame.get("rid").is_none(),
                "reply with a foreign rid: {frame}"
            );
            // A push that arrived before the reply: keep it for later reads.
            early.push_back(frame);
        }
    }

    /// Registers through v2 and returns the new id.
    pub async fn register(&mut self, name: &str, password: &str) -> i64 {
        let ack = self
            .call(json!({"msgid": 4, "name": name, "password": password}))
            .await;
        assert_eq!(ack["errno"], 0, "register {name:?}: {ack}");
        ack["id"].as_i64().unwrap()
    }

    /// Logs in through v2 and returns the LOGIN_ACK.
    pub async fn login(&mut self, id: i64, password: &str) -> Value {
        let ack = self
            .call(json!({"msgid": 1, "id": id, "password": password}))
            .await;
        assert_eq!(ack["errno"], 0, "login {id}: {ack}");
        ack
    }

    /// A new connection, registered and logged in through v2.
    pub async fn user(server: &TestServer, name: &str) -> (Client, i64) {
        let mut client = server.client().await;
        let id = client.register(name, "pw").await;
        client.login(id, "pw").await;
        (client, id)
    }
}

/// Runs one async scenario against each storage engine, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::MariaDb).await;
                }
            )*
        }
    };
}
