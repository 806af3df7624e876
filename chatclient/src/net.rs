//! The connection: connecting with a timeout, a reader task that turns the
//! byte stream into frames (and says why it ended), the writer, and
//! reconnecting with backoff.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use protocol::{FrameCodec, FrameError, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
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
    pub connect_timeout: Duration,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One connection attempt (every address the name resolves to, in turn).
pub async fn connect(target: &Target) -> std::io::Result<TcpStream> {
    let attempt = TcpStream::connect((target.host.as_str(), target.port));
    let stream = tokio::time::timeout(target.connect_timeout, attempt)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {} s", target.connect_timeout.as_secs_f64()),
            )
        })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A live connection: the write half here, the read half in a task that
/// sends [`Event::Frame`]s and finally one [`Event::Closed`], all tagged
/// with this connection's generation so events of an old one are ignored.
pub struct Link {
    writer: OwnedWriteHalf,
    /// The frame being written, reused from one request to the next.
    out: Vec<u8>,
    reader: JoinHandle<()>,
}

impl Link {
    pub fn start(stream: TcpStream, generation: u64, events: mpsc::Sender<Event>) -> Self {
        let (read, write) = stream.into_split();
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
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(&self.out)).await {
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
        };
        assert_eq!(t.to_string(), "[::1]:7");
    }
}
