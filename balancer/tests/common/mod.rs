//! Test helpers: tiny in-process backends, a client that asks which backend
//! served it, and a balancer started through the library's `run`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balancer::config::Config;
use balancer::{Balancer, Handle, Status};
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// How a test backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers `{"msgid":12}` with a PONG naming itself, echoes other lines.
    Chat,
    /// Accepts TCP and reads, but never writes a byte.
    Mute,
    /// Echoes every line as is, so a PING never gets a PONG.
    Echo,
}

/// A backend on 127.0.0.1 that can be killed and revived on the same port.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub mode: Mode,
    /// Client connections accepted (health checks included).
    pub accepted: Arc<AtomicU64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start(name: &str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = TestBackend {
            name: name.to_string(),
            addr,
            mode,
            accepted: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
            task: None,
        };
        b.serve(listener);
        b
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.stop = stop.clone();
        let name = self.name.clone();
        let mode = self.mode;
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = stop.cancelled() => break,
                    c = listener.accept() => c,
                };
                if let Ok((stream, _)) = conn {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_conn(stream, name.clone(), mode));
                }
            }
            // Serve what already sits in the backlog so the kill refuses only
            // connections that arrive after it.
            while let Some(Ok((stream, _))) = listener.accept().now_or_never() {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_conn(stream, name.clone(), mode));
            }
        }));
    }

    /// Stops listening: new connects are refused. Established connections
    /// carry on until their client closes them.
    pub async fn kill(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Listens again on the same port.
    pub async fn revive(&mut self) {
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_conn(stream: TcpStream, name: String, mode: Mode) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = match mode {
            Mode::Mute => continue,
            Mode::Echo => line.clone(),
            Mode::Chat => {
                let is_ping = serde_json::from_str::<serde_json::Value>(line.trim())
                    .ok()
                    .and_then(|v| v.get("msgid").and_then(|m| m.as_i64()))
                    == Some(12);
                if is_ping {
                    format!("{{\"msgid\":13,\"server\":\"{name}\",\"load\":0}}\n")
                } else {
                    line.clone()
                }
            }
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A client connection through the balancer.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Sends PING and returns the `server` of the PONG: who served us.
    pub async fn ping(&mut self) -> std::io::Result<String> {
        let line = self.roundtrip("{\"msgid\":12}\n").await?;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| std::io::Error::other(format!("bad reply {line:?}: {e}")))?;
        v.get("server")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| std::io::Error::other(format!("not a PONG: {line:?}")))
    }

    /// Writes `line` and reads one line back.
    pub async fn roundtrip(&mut self, line: &str) -> std::io::Result<String> {
        let fut = async {
            self.stream.get_mut().write_all(line.as_bytes()).await?;
            let mut reply = String::new();
            let n = self.stream.read_line(&mut reply).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by the balancer",
                ));
            }
            Ok(reply)
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .map_err(|_| std::io::Error::other("reply timed out"))?
    }

    /// True once the other side closed the connection (within `within`).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One short connection: connect, PING, the serving backend's name.
pub async fn who_serves(addr: SocketAddr) -> std::io::Result<String> {
    Client::connect(addr).await?.ping().await
}

/// A balancer running in-process.
pub struct Lb {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub handle: Handle,
    pub config_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), balancer::Error>>>,
    _dir: tempfile::TempDir,
}

impl Lb {
    /// Starts a balancer from `toml` (written to a watched file); its
    /// `listen`/`admin` are replaced by port-0 listeners bound here.
    pub async fn start(toml: &str, with_admin: bool) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("lb.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = Config::load(&config_path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = if with_admin {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let admin = admin_listener.as_ref().map(|l| l.local_addr().unwrap());
        let balancer = Balancer::new(config, Some(config_path.clone()));
        let handle = balancer.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(balancer.run(listener, admin_listener, async {
            let _ = rx.await;
        }));
        Lb {
            addr,
            admin,
            handle,
            config_path,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn status(&self) -> Status {
        self.handle.status()
    }

    pub fn backend_up(&self, address: &str) -> Option<bool> {
        self.status()
            .backends
            .iter()
            .find(|b| b.address == address && b.in_config)
            .map(|b| b.up)
    }

    /// Replaces the config file the way editors do: write a temporary file
    /// beside it, then rename it over the old one.
    pub fn write_config_by_rename(&self, toml: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// Rewrites the config file in place.
    pub fn write_config_in_place(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).unwrap();
    }

    /// Starts the shutdown and returns the future of `run` finishing.
    pub fn begin_shutdown(&mut self) -> impl Future<Output = Result<(), balancer::Error>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("already shut down");
        async move { task.await.expect("run panicked") }
    }

    pub async fn shutdown(mut self) {
        tokio::time::timeout(WAIT * 2, self.begin_shutdown())
            .await
            .expect("run did not return")
            .expect("run failed");
    }
}

/// Polls `cond` every 10 ms until it holds; false after `within`.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `[[backend]]` table.
pub fn backend_toml(address: &str, weight: u32) -> String {
    format!("[[backend]]\naddress = \"{address}\"\nweight = {weight}\n")
}

/// A full config: `head` holds top-level keys and `[health]`.
pub fn config_toml(head: &str, backends: &[(&str, u32)]) -> String {
    let mut text = format!("listen = \"127.0.0.1:0\"\n{head}\n");
    for (a, w) in backends {
        text += &backend_toml(a, *w);
    }
    text
}

/// `GET path` on the admin server; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let text = tokio::time::timeout(WAIT, fut)
        .await
        .expect("admin request timed out");
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// Workers making short connections (connect, PING, PONG, close) in a loop,
/// counting successes and keeping every failure's message.
pub struct Traffic {
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// `workers` loops, each pausing `pause` between connections.
    pub fn start(addr: SocketAddr, workers: usize, pause: Duration) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|_| {
                let (ok, failures, stop) = (ok.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        match who_serves(addr).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Traffic {
            ok,
            failures,
            stop,
            tasks,
        }
    }

    /// Waits for `n` more successful connections.
    pub async fn wait_for_more(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        assert!(
            wait_until(WAIT, || self.ok.load(Ordering::Relaxed) >= target).await,
            "traffic stalled"
        );
    }

    /// Stops and returns (successes, failure messages).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}
