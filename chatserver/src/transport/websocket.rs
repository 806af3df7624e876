//! Frames over WebSocket: one text message is one frame (the JSON object,
//! no terminator). The server pings an idle peer and closes one that does
//! not answer; close frames say why the server closed.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

use super::{Closing, Received, Transport};

/// How long a ping or a close frame may take to write.
const CONTROL_WRITE: Duration = Duration::from_secs(10);
const CLOSE_WRITE: Duration = Duration::from_millis(200);
/// Bytes read per system call. Kept small: tungstenite allocates its read
/// buffer up front, and idle connections are the many.
const READ_BUFFER: usize = 2048;

/// What a binary message gets told before the connection closes.
pub const BINARY_REFUSED: &str =
    "binary messages are not supported: send each frame as a text message";

/// The tungstenite settings for a session with frame limit `max_frame`:
/// a message past it is refused as soon as its header says so.
pub fn config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// A WebSocket carrying one frame per text message.
pub struct WebSocket<S> {
    ws: WebSocketStream<S>,
    ping_interval: Duration,
    /// When anything last arrived from the peer (message, ping or pong).
    heard_at: Instant,
    /// When the ping now awaiting an answer went out.
    ping_sent: Option<Instant>,
    bytes_in: u64,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// `ws` after its handshake; pings go out after `ping_interval` of
    /// silence, and a peer that leaves one unanswered as long is closed.
    pub fn new(ws: WebSocketStream<S>, ping_interval: Duration) -> Self {
        Self {
            ws,
            ping_interval,
            heard_at: Instant::now(),
            ping_sent: None,
            bytes_in: 0,
        }
    }
}

fn io_error(error: Error) -> std::io::Error {
    match error {
        Error::Io(error) => error,
        other => std::io::Error::other(other),
    }
}

fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_whitespace() || b == 0)
}

impl<S> Transport for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Cancel-safe: `StreamExt::next` keeps a half-read message inside
    /// tungstenite.
    async fn next_frame(&mut self) -> Result<Received, Closing> {
        loop {
            let Some(message) = self.ws.next().await else {
                return Err(Closing::PeerClosed);
            };
            self.heard_at = Instant::now();
            self.ping_sent = None;
            match message {
                Ok(Message::Text(text)) => {
                    self.bytes_in += text.len() as u64;
                    // Like blank lines on TCP: nothing to answer.
                    if !is_blank(text.as_str()) {
                        return Ok(Received::Frame(Bytes::from(text)));
                    }
                }
                Ok(Message::Binary(data)) => {
                    self.bytes_in += data.len() as u64;
                    return Ok(Received::Unsupported(BINARY_REFUSED));
                }
                // tungstenite answers pings itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) => return Err(Closing::PeerClosed),
                Err(Error::Capacity(_)) => return Ok(Received::TooLarge),
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    return Err(Closing::PeerClosed)
                }
                Err(Error::Io(error)) => return Err(Closing::ReadFailed(error)),
                Err(other) => return Err(Closing::WebSocket(other.to_string())),
            }
        }
    }

    async fn write_frames(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for frame in bytes.split(|b| *b == b'\n').filter(|f| !f.is_empty()) {
            // The session renders JSON, which is UTF-8; anything else is a bug
            // upstream, refused here rather than sent as a broken message.
            let text = std::str::from_utf8(frame).map_err(std::io::Error::other)?;
            self.ws.feed(Message::text(text)).await.map_err(io_error)?;
        }
        self.ws.flush().await.map_err(io_error)
    }

    async fn close(&mut self, reason: &Closing) {
        let (code, text) = match reason {
            Closing::FrameTooLarge => (CloseCode::Size, "frame too large"),
            Closing::BinaryMessage => (CloseCode::Unsupported, BINARY_REFUSED),
            Closing::Shutdown => (CloseCode::Away, "server shutting down"),
            Closing::Idle(why) => (CloseCode::Policy, *why),
            Closing::Evicted => (CloseCode::Policy, "logged in elsewhere"),
            Closing::WebSocket(_) => (CloseCode::Protocol, "WebSocket protocol error"),
            Closing::PeerClosed => (CloseCode::Normal, ""),
            Closing::ClosedMidFrame(_)
            | Closing::ReadFailed(_)
            | Closing::WriteFailed(_)
            | Closing::WriteStalled => return,
        };
        let frame = CloseFrame {
            code,
            reason: text.into(),
        };
        let _ = tokio::time::timeout(CLOSE_WRITE, self.ws.close(Some(frame))).await;
    }

    fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    fn heard_at(&self) -> Option<Instant> {
        Some(self.heard_at)
    }

    fn keepalive_due(&self) -> Option<Instant> {
        Some(match self.ping_sent {
            Some(sent) => sent + self.ping_interval,
            None => self.heard_at + self.ping_interval,
        })
    }

    async fn keepalive(&mut self) -> Result<(), Closing> {
        let now = Instant::now();
        match self.ping_sent {
            Some(sent) if now >= sent + self.ping_interval => {
                Err(Closing::Idle("no answer to WebSocket ping"))
            }
            None if now >= self.heard_at + self.ping_interval => {
                self.ping_sent = Some(now);
                match tokio::time::timeout(CONTROL_WRITE, self.ws.send(Message::Ping(Bytes::new())))
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(Closing::WriteFailed(io_error(error))),
                    Err(_) => Err(Closing::WriteStalled),
                }
            }
            _ => Ok(()),
        }
    }
}
