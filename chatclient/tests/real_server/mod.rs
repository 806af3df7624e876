//! The real chat server, in-process on 127.0.0.1 over a fresh SQLite file,
//! for tests that drive the `chatclient` binary against it. It can be
//! stopped and started again on the same port and database.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chatserver::config::HashCost;
use chatserver::{Config, Server};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{client_command, Client};

/// A new SQLite database file of its own: `sqlite:///tmp/.../x.db?mode=rwc`.
pub fn fresh_sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!(
        "chatclient-real-{}-{:08x}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}/x.db?mode=rwc", dir.display())
}

/// Enough randomness for unique names, without a dependency.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

pub struct RealServer {
    pub addr: SocketAddr,
    pub database_url: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RealServer {
    /// A server on a free port over a new database.
    pub async fn start() -> RealServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), &fresh_sqlite_url()).await
    }

    /// A server on `addr` (port 0: a free one) over `database_url`. Retries
    /// the bind for a while: the port of a server just stopped may still be
    /// held for a moment.
    pub async fn start_on(addr: SocketAddr, database_url: &str) -> RealServer {
        let config = Config {
            listen: addr.to_string(),
            database_url: database_url.to_owned(),
            hash_cost: HashCost {
                memory_kib: 64,
                iterations: 1,
            },
            db_connect_timeout: Duration::from_secs(5),
            name: Some("real-test-server".into()),
            ..Config::default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("binding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let server = Server::start(&config, addr).await.expect("server starts");
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, stop.clone().cancelled_owned()));
        RealServer {
            addr,
            database_url: database_url.to_owned(),
            stop,
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Clean shutdown: stops listening and closes every session.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(8), task)
                .await
                .expect("server stops within 8 s")
                .unwrap();
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn code(status: std::process::ExitStatus) -> i32 {
    status.code().expect("exited by signal")
}

/// Registers through the binary's menu (scripted); returns the new id.
pub async fn register(port: u16, name: &str, password: &str) -> i64 {
    let mut client = Client::start(port, &[]);
    client.send(&format!("2\n{name}\n{password}\n")).await;
    let line = client.expect_out("registered: id ").await;
    let id = line["registered: id ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let (status, _, err) = client.finish().await;
    assert_eq!(code(status), 0, "{err:#?}");
    id
}

/// A scripted client logged in with `--login`, stdin left open.
pub async fn logged_in(port: u16, id: i64, password: &str, extra: &[&str]) -> Client {
    let port = port.to_string();
    let id_text = id.to_string();
    let mut args = vec![
        "127.0.0.1",
        &port,
        "--linger",
        "0.5",
        "--login",
        &id_text,
        "--password-env",
        "CHAT_PW",
    ];
    args.extend_from_slice(extra);
    let mut command = client_command(&args);
    command.env("CHAT_PW", password);
    let mut client = Client::spawn(command);
    client.expect_out(&format!("logged in: id {id} ")).await;
    client
}
