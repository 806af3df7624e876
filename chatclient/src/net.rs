//! The connection: connecting with a timeout, a reader task that turns the
//! byte stream into frames (and says why it ended), the writer, and
//! reconnecting with backoff.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use protocol::{FrameCodec, FrameError, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::app::VERSION;
use crate::Event;

/// The largest frame accepted from a server. Far above the server's frame
/// limit (64 KiB by default): a v2 server sends a backlog of any size as
/// one push per message, and a v1-style LOGIN_ACK with offline messages
/// stays under 1024 bytes. A larger frame ends the connection; nothing in
/// it counts as shown, so the server keeps it (DELIVERED confirms only
/// what was shown).
pub const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

/// How long one write may take before the connection is declared dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect, and how patiently.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Covers the TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// `Some`: speak TLS (`--tls`).
    pub tls: Option<Tls>,
}

/// How to speak TLS to the server: whom to trust and the name to check the
/// server's certificate against.
#[derive(Clone)]
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: tlsconf::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the certificates in `ca` (PEM), or the system's roots; checks
    /// the server's certificate against `server_name`.
    pub fn new(ca: Option<&std::path::Path>, server_name: &str) -> Result<Tls, String> {
        let roots = tlsconf::roots(ca).map_err(|e| e.to_string())?;
        let server_name = tlsconf::ServerName::try_from(server_name.to_owned())
            .map_err(|_| format!("{server_name:?} is not a host name or IP address"))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                tlsconf::client_config(roots),
            )),
            server_name,
        })
    }
}

/// Any byte stream to the server: plain TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
/// A connection to the server.
pub type Stream = Box<dyn Io>;

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One connection attempt (every address the name resolves to, in turn),
/// with its TLS handshake when the target wants TLS.
pub async fn connect(target: &Target) -> std::io::Result<Stream> {
    let attempt = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let _ = stream.set_nodelay(true);
        match &target.tls {
            None => Ok(Box::new(stream) as Stream),
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
                    })?;
                Ok(Box::new(stream) as Stream)
            }
        }
    };
    tokio::time::timeout(target.connect_timeout, attempt)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {} s", target.connect_timeout.as_secs_f64()),
            )
        })?
}

/// A live connection: the write half here, the read half in a task that
/// sends [`Event::Frame`]s and finally one [`Event::Closed`], all tagged
/// with this connection's generation so events of an old one are ignored.
pub struct Link {
    writer: WriteHalf<Stream>,
    /// The frame being written, reused from one request to the next.
    out: Vec<u8>,
    reader: JoinHandle<()>,
}

impl Link {
    pub fn start(stream: Stream, generation: u64, events: mpsc::Sender<Event>) -> Self {
        let (read, write) = tokio::io::split(stream);
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(read, FrameCodec::new(MAX_SERVER_FRAME));
            let reason = loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        // The event queue is bounded: when it is full, reading
                        // waits, and TCP pushes back on the server.
                        let event = Event::Frame { generation, frame };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break describe(&e),
                    None => break "the server closed the connection".to_owned(),
                }
            };
            tracing::debug!(generation, %reason, "connection ended");
            let _ = events.send(Event::Closed { generation, reason }).await;
        });
        Self {
            writer: write,
            out: Vec::with_capacity(256),
            reader,
        }
    }

    /// Writes one request as a [`VERSION`] frame carrying `rid`.
    pub async fn send(&mut self, rid: u64, request: &Request) -> Result<(), String> {
        request.encode_into(&mut self.out, VERSION, Some(&serde_json::Value::from(rid)));
        let write = async {
            self.writer.write_all(&self.out).await?;
            // TLS holds written bytes until flushed.
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("could not write for {} s", WRITE_TIMEOUT.as_secs())),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn describe(e: &FrameError) -> String {
    match e {
        FrameError::TooLarge { limit } => {
            format!("the server sent a frame larger than {limit} bytes")
        }
        FrameError::Truncated { pending } => {
            format!("the server closed the connection in the middle of a frame ({pending} bytes)")
        }
        FrameError::Io(io) => io.to_string(),
    }
}

/// Exponential backoff with a little jitter: 200 ms, 400 ms, ... up to 5 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to +25 %, so that many clients dropped at once do not return in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// Reconnects in the background, the first attempt after `first_delay`
/// (the server's GOAWAY) or the backoff; sends [`Event::Connected`], or
/// [`Event::GaveUp`] once `give_up_after` has passed (never when `None`).
pub fn spawn_reconnect(
    target: Target,
    generation: u64,
    give_up_after: Option<Duration>,
    first_delay: Option<Duration>,
    events: mpsc::Sender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut first_delay = first_delay;
        loop {
            let delay = first_delay.take().unwrap_or_else(|| backoff.next_delay());
            tokio::time::sleep(delay).await;
            match connect(&target).await {
                Ok(stream) => {
                    let _ = events.send(Event::Connected { generation, stream }).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(%target, "reconnect failed: {e}");
                    if give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
                        let reason = format!("{target}: {e}");
                        let _ = events.send(Event::GaveUp { generation, reason }).await;
                        return;
                    }
                }
            }
        }
    })
}

/// A frame as handed to the state machine.
pub type Frame = Bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(200) && delays[0] <= Duration::from_millis(250));
        assert!(delays[1] >= Duration::from_millis(400));
        assert!(delays[7] >= Duration::from_secs(5) && delays[7] <= Duration::from_millis(6250));
    }

    #[test]
    fn target_display() {
        let t = Target {
            host: "::1".into(),
            port: 7,
            connect_timeout: Duration::from_secs(1),
            tls: None,
        };
        assert_eq!(t.to_string(), "[::1]:7");
    }
}
