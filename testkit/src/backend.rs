//! Tiny backends to put behind a balancer (answering PING with a PONG that
//! names them, or misbehaving), short-connection traffic through a front,
//! and a plain HTTP GET for admin endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use protocol::{parse_frame, Pong, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::client::who_serves;
use crate::wait::{wait_until, Deadline};
use crate::WAIT;

/// How a test backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers PING with a PONG naming itself; echoes other frames.
    Chat,
    /// Accepts TCP and reads, but never writes a byte.
    Mute,
    /// Echoes every byte as is, so a PING never gets a PONG.
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("local address");
        let mut backend = TestBackend {
            name: name.to_string(),
            addr,
            mode,
            accepted: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
            task: None,
        };
        backend.serve(listener);
        backend
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
        if let Some(task) = self.task.take() {
            task.await.expect("accept loop");
        }
    }

    /// Listens again on the same port (retrying for at most [`WAIT`] while
    /// the port is still held).
    pub async fn revive(&mut self) {
        let deadline = Deadline::after(WAIT);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if !deadline.passed() => {
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

async fn serve_conn(mut stream: TcpStream, name: String, mode: Mode) {
    match mode {
        Mode::Mute => {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
        Mode::Echo => {
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
        Mode::Chat => {
            let mut framed = Framed::new(stream, protocol::FrameCodec::default());
            while let Some(Ok(frame)) = framed.next().await {
                let parsed = parse_frame(&frame);
                let reply = match parsed.request {
                    Ok(Request::Ping) => {
                        let pong = Reply::Pong(Pong {
                            server: name.clone(),
                            load: 0,
                            ready: true,
                        });
                        let version = parsed.version.unwrap_or_default();
                        let mut bytes = pong
                            .render(version, parsed.rid.as_ref())
                            .expect("a PONG is sent in every version");
                        bytes.pop(); // the codec adds the terminator
                        bytes
                    }
                    _ => frame.to_vec(),
                };
                if framed.send(&reply[..]).await.is_err() {
                    return;
                }
            }
        }
    }
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
    /// `workers` loops through `addr`, each pausing `pause` between
    /// connections.
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

    /// Waits at most [`WAIT`] for `n` more successful connections.
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
        for task in self.tasks {
            task.await.expect("traffic worker");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// `GET path` within [`WAIT`]; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(WAIT, request)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_string())
}

/// An admin server's `/metrics` (Prometheus text) as a map from
/// `name{labels}` to value.
pub async fn scrape(admin: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}
