//! Backends only the balancer's own tests need: one that can be wedged
//! (accepts and reads, never answers) while running, and one that expects a
//! PROXY protocol v2 header and records what it said. Plus a raw HTTP call
//! with headers for the admin server.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{parse_frame, FrameCodec, Pong, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// PONG naming `name` for a PING frame, an echo otherwise.
fn answer(frame: &[u8], name: &str) -> Vec<u8> {
    let parsed = parse_frame(frame);
    match parsed.request {
        Ok(Request::Ping) => {
            let pong = Reply::Pong(Pong {
                server: name.to_string(),
                load: 0,
                ready: true,
            });
            let mut bytes = pong
                .render(parsed.version.unwrap_or_default(), parsed.rid.as_ref())
                .expect("a PONG renders in every version");
            bytes.pop(); // the codec adds the terminator
            bytes
        }
        _ => frame.to_vec(),
    }
}

/// Chat-like frames over `stream`: answered while `wedged` is false, read
/// and dropped once it is true (a server whose workers are stuck).
async fn serve_chat(stream: TcpStream, name: String, wedged: Arc<AtomicBool>) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    while let Some(Ok(frame)) = framed.next().await {
        if wedged.load(Ordering::Relaxed) {
            continue;
        }
        if framed.send(&answer(&frame, &name)[..]).await.is_err() {
            return;
        }
    }
}

/// A chat backend on 127.0.0.1 that can be wedged and unwedged.
pub struct WedgeBackend {
    pub addr: SocketAddr,
    wedged: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl WedgeBackend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wedged = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (w, s, name) = (wedged.clone(), stop.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
                };
                tokio::spawn(serve_chat(stream, name.clone(), w.clone()));
            }
        });
        Self { addr, wedged, stop }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn wedge(&self, on: bool) {
        self.wedged.store(on, Ordering::Relaxed);
    }
}

impl Drop for WedgeBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one connection's PROXY header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// PROXY command: the client's address and the address it connected to.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// LOCAL command (a health check).
    Local,
    /// No valid header: the connection was closed.
    Invalid(String),
}

/// A chat backend that requires a PROXY protocol v2 header first (parsed
/// with `ppp`), records it, then answers like [`WedgeBackend`].
pub struct PpBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

impl PpBackend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (seen2, s, name) = (seen.clone(), stop.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
                };
                tokio::spawn(serve_pp(stream, name.clone(), seen2.clone()));
            }
        });
        Self { addr, seen, stop }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for PpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_pp(mut stream: TcpStream, name: String, seen: Arc<Mutex<Vec<Seen>>>) {
    // 16 fixed bytes, then the length they announce.
    let mut head = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await;
    if !matches!(got, Ok(Ok(_))) {
        seen.lock()
            .unwrap()
            .push(Seen::Invalid("short header".into()));
        return;
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut whole = head.to_vec();
    whole.resize(16 + len, 0);
    if stream.read_exact(&mut whole[16..]).await.is_err() {
        seen.lock()
            .unwrap()
            .push(Seen::Invalid("short addresses".into()));
        return;
    }
    let header = match ppp::v2::Header::try_from(whole.as_slice()) {
        Ok(h) => h,
        Err(e) => {
            seen.lock().unwrap().push(Seen::Invalid(e.to_string()));
            return;
        }
    };
    let entry = match (header.command, header.addresses) {
        (ppp::v2::Command::Local, _) => Seen::Local,
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => Seen::Proxy {
            source: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        },
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => Seen::Proxy {
            source: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            destination: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        },
        (_, other) => Seen::Invalid(format!("{other:?}")),
    };
    seen.lock().unwrap().push(entry);
    serve_chat(stream, name, Arc::new(AtomicBool::new(false))).await;
}

/// `GET path` with extra header lines, within 10 s; (status code, body).
/// Panics when the server does not answer in time.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let request = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("admin request timed out")
        .expect("admin request failed");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (code, body.to_string())
}
