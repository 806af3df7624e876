//! Frames over TCP: `\n`- or NUL-terminated JSON, as PROTOCOL.md frames them.

use bytes::BytesMut;
use protocol::{FrameCodec, FrameError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::{Closing, Received, Transport};

/// Bytes read per system call at most.
const READ_CHUNK: usize = 4096;

/// A TCP connection split into frames by [`FrameCodec`].
pub struct Lines {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// When the bytes of the current unfinished frame started arriving.
    partial_since: Option<Instant>,
    bytes_in: u64,
}

impl Lines {
    pub fn new(stream: TcpStream, max_frame: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(max_frame),
            partial_since: None,
            bytes_in: 0,
        }
    }

    /// A complete frame already in the buffer, if any.
    fn decode(&mut self) -> Result<Option<Received>, Closing> {
        match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => return Ok(Some(Received::Frame(frame))),
            Ok(None) => {}
            Err(FrameError::TooLarge { .. }) => return Ok(Some(Received::TooLarge)),
            Err(FrameError::Truncated { pending }) => return Err(Closing::ClosedMidFrame(pending)),
            Err(FrameError::Io(error)) => return Err(Closing::ReadFailed(error)),
        }
        if self.buf.is_empty() {
            self.partial_since = None;
            // Hold no buffer between messages (idle connections are the many).
            if self.buf.capacity() > 0 {
                self.buf = BytesMut::new();
            }
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        Ok(None)
    }

    fn eof(&mut self) -> Closing {
        match self.codec.decode_eof(&mut self.buf) {
            Err(FrameError::Truncated { pending }) => Closing::ClosedMidFrame(pending),
            _ => Closing::PeerClosed,
        }
    }
}

impl Transport for Lines {
    /// Cancel-safe: the only await is `readable`, and what was read stays
    /// in the buffer. One read per call, so that a peer that keeps the
    /// socket readable cannot keep the session from its timeouts.
    async fn next_frame(&mut self) -> Result<Received, Closing> {
        if let Some(received) = self.decode()? {
            return Ok(received);
        }
        loop {
            self.stream.readable().await.map_err(Closing::ReadFailed)?;
            // The buffer is only allocated once bytes are waiting, so an
            // idle connection holds none.
            self.buf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(self.eof()),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    return Ok(self.decode()?.unwrap_or(Received::Partial));
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(Closing::ReadFailed(error)),
            }
        }
    }

    async fn write_frames(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn close(&mut self, _reason: &Closing) {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            self.stream.shutdown(),
        )
        .await;
    }

    fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }
}
