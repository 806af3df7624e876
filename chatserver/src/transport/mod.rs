//! The seam between a session and its connection: where frames come from
//! and go to. A session runs the same over TCP lines ([`lines`]) and over
//! WebSocket text messages ([`websocket`]); only framing, keepalive and the
//! way a connection closes differ.

pub mod lines;
pub mod websocket;

use std::future::Future;

use bytes::Bytes;
use tokio::time::Instant;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum Closing {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("peer closed the connection in the middle of a frame ({0} bytes)")]
    ClosedMidFrame(usize),
    #[error("read failed: {0}")]
    ReadFailed(std::io::Error),
    #[error("write failed: {0}")]
    WriteFailed(std::io::Error),
    #[error("peer stopped reading")]
    WriteStalled,
    #[error("frame too large")]
    FrameTooLarge,
    #[error("binary WebSocket message (frames are text messages)")]
    BinaryMessage,
    #[error("WebSocket protocol error: {0}")]
    WebSocket(String),
    #[error("idle: {0}")]
    Idle(&'static str),
    #[error("evicted: the login moved to another server")]
    Evicted,
    #[error("server shutting down")]
    Shutdown,
}

impl Closing {
    /// The `reason` label of `connection_closes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Closing::PeerClosed => "peer_closed",
            Closing::ClosedMidFrame(_) => "closed_mid_frame",
            Closing::ReadFailed(_) => "read_failed",
            Closing::WriteFailed(_) => "write_failed",
            Closing::WriteStalled => "write_stalled",
            Closing::FrameTooLarge => "frame_too_large",
            Closing::BinaryMessage => "binary_message",
            Closing::WebSocket(_) => "websocket_error",
            Closing::Idle(_) => "idle",
            Closing::Evicted => "evicted",
            Closing::Shutdown => "shutdown",
        }
    }
}

/// What arrived from the peer.
#[derive(Debug)]
pub enum Received {
    /// One complete frame, not blank.
    Frame(Bytes),
    /// Bytes of a frame not complete yet: the session looks at its
    /// timeouts (the frame stall timeout counts now) and waits again.
    Partial,
    /// A frame past the frame limit: the session answers errno 8 and closes.
    TooLarge,
    /// Something that is not a frame and ends the connection after an
    /// error reply (a binary WebSocket message).
    Unsupported(&'static str),
}

/// A connection carrying frames. Every method is driven by the session's
/// single task; `next_frame` must be cancel-safe (it races the session's
/// mailbox and timers in a `select!`).
pub trait Transport: Send {
    /// Waits for the next inbound frame.
    fn next_frame(&mut self) -> impl Future<Output = Result<Received, Closing>> + Send;

    /// Writes `bytes`: one or more frames, each ended by `\n`, as the
    /// session renders them (TCP writes them as they are; WebSocket sends
    /// one text message per frame).
    fn write_frames(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Closes the connection for `reason` (a WebSocket close frame says why).
    fn close(&mut self, reason: &Closing) -> impl Future<Output = ()> + Send;

    /// Bytes read from the peer so far.
    fn bytes_in(&self) -> u64;

    /// When the frame now arriving started arriving, if one is half-read.
    fn partial_since(&self) -> Option<Instant> {
        None
    }

    /// When the peer was last heard from below the frame level (a
    /// WebSocket pong): it counts as activity for the v2 idle timeout.
    fn heard_at(&self) -> Option<Instant> {
        None
    }

    /// When [`keepalive`](Self::keepalive) is due, if this transport has one.
    fn keepalive_due(&self) -> Option<Instant> {
        None
    }

    /// Pings the peer, or ends the connection when the last ping got no
    /// answer in time.
    fn keepalive(&mut self) -> impl Future<Output = Result<(), Closing>> + Send {
        async { Ok(()) }
    }
}
