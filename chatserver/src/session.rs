//! One client connection: reads frames, runs commands, writes replies and
//! pushed messages, enforces the per-connection timeouts, and cleans up
//! however the connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{parse_frame, Errno, FrameCodec, FrameError, Reply, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::command::{self, offline, AfterWrite, SessionState};
use crate::context::Context;
use crate::delivery::store_for_later;
use crate::mailbox::{Outbound, Pushed};

/// A write that makes no progress this long means the peer stopped reading.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session may spend writing queued pushes at server shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Read buffer growth step; a buffer this large or more is released when idle.
const READ_CHUNK: usize = 4096;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Closing {
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
    #[error("idle: {0}")]
    Idle(&'static str),
    #[error("evicted: outbound queue full, or the login moved to another server")]
    Evicted,
    #[error("server shutting down")]
    Shutdown,
}

pub async fn serve(
    ctx: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: CancellationToken,
) {
    let span =
        tracing::info_span!("conn", conn = conn_id, peer = %peer, user = tracing::field::Empty);
    let connection = Connection {
        max_frame: ctx.limits.max_frame,
        state: SessionState::new(conn_id, peer.ip()),
        ctx,
        stream,
        buf: BytesMut::new(),
        codec: FrameCodec::new(0),
        version: Version::V1,
        last_frame: Instant::now(),
        partial_since: None,
    };
    connection.run(shutdown).instrument(span).await;
}

struct Connection {
    ctx: Arc<Context>,
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    max_frame: usize,
    state: SessionState,
    version: Version,
    last_frame: Instant,
    /// When the bytes of the current unfinished frame started arriving.
    partial_since: Option<Instant>,
}

impl Connection {
    async fn run(mut self, shutdown: CancellationToken) {
        self.codec = FrameCodec::new(self.max_frame);
        tracing::debug!("connected");
        let reason = self.serve(&shutdown).await;
        if matches!(reason, Closing::Shutdown) {
            self.flush_mailbox().await;
        }
        command::end_login(&self.ctx, &mut self.state).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.stream.shutdown()).await;
        match reason {
            Closing::PeerClosed | Closing::Shutdown => tracing::info!(%reason, "connection closed"),
            _ => tracing::warn!(%reason, "connection closed"),
        }
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Closing {
        loop {
            let deadline = self.deadline();
            let evict = self.state.mailbox.as_ref().map(|m| m.evict.clone());
            let mailbox = self.state.mailbox.as_mut();
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Closing::Shutdown,
                _ = async { match &evict { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                    return Closing::Evicted;
                }
                item = async { match mailbox { Some(m) => m.rx.recv().await, None => std::future::pending().await } } => {
                    if let Some(item) = item {
                        if let Err(reason) = self.outbound(item).await {
                            return reason;
                        }
                    }
                }
                read = self.stream.read_buf(&mut self.buf) => {
                    match read {
                        Ok(0) => return self.eof(),
                        Ok(_) => if let Err(reason) = self.frames().await {
                            return reason;
                        },
                        Err(error) => return Closing::ReadFailed(error),
                    }
                }
                _ = sleep_until_opt(deadline.map(|(at, _)| at)) => {
                    return Closing::Idle(deadline.map_or("timeout", |(_, why)| why));
                }
            }
        }
    }

    /// The earliest timeout that applies now, with its name.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let limits = &self.ctx.limits;
        let mut candidates = Vec::with_capacity(3);
        if self.state.user.is_none() {
            candidates.push((
                self.last_frame + limits.login_idle_timeout,
                "no request before login",
            ));
        }
        if self.version == Version::V2 {
            candidates.push((
                self.last_frame + limits.v2_idle_timeout,
                "no frame from v2 client",
            ));
        }
        if let Some(since) = self.partial_since {
            candidates.push((since + limits.frame_stall_timeout, "frame stalled half-way"));
        }
        candidates.into_iter().min_by_key(|(at, _)| *at)
    }

    fn eof(&mut self) -> Closing {
        match self.codec.decode_eof(&mut self.buf) {
            Err(FrameError::Truncated { pending }) => Closing::ClosedMidFrame(pending),
            _ => Closing::PeerClosed,
        }
    }

    /// Handles every complete frame in the buffer.
    async fn frames(&mut self) -> Result<(), Closing> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    self.last_frame = Instant::now();
                    self.handle(&frame).await?;
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { limit }) => {
                    tracing::warn!(limit, "frame too large");
                    self.reply(Reply::error(None, Errno::FrameTooLarge), None)
                        .await?;
                    return Err(Closing::FrameTooLarge);
                }
                Err(FrameError::Truncated { pending }) => {
                    return Err(Closing::ClosedMidFrame(pending))
                }
                Err(FrameError::Io(error)) => return Err(Closing::ReadFailed(error)),
            }
        }
        if self.buf.is_empty() {
            self.partial_since = None;
            if self.buf.capacity() > 4 * READ_CHUNK {
                // Give back the memory of a large frame once it is handled.
                self.buf = BytesMut::new();
            }
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        Ok(())
    }

    async fn handle(&mut self, frame: &[u8]) -> Result<(), Closing> {
        let parsed = parse_frame(frame);
        if parsed.version == Some(Version::V2) {
            self.version = Version::V2;
        }
        let outcome = match parsed.request {
            Ok(request) => command::apply(&self.ctx, &mut self.state, request).await,
            Err(bad) => {
                tracing::debug!(reason = %bad.reason, "bad request");
                Reply::Error {
                    request: bad.msgid,
                    errno: bad.errno(),
                    message: bad.reason.into(),
                }
                .into()
            }
        };
        self.reply(outcome.reply, parsed.rid.as_ref()).await?;
        self.after_write(outcome.after_write).await;
        Ok(())
    }

    async fn reply(
        &mut self,
        reply: Reply,
        rid: Option<&serde_json::Value>,
    ) -> Result<(), Closing> {
        match reply.render(self.version, rid) {
            Some(bytes) => self.write(&bytes).await,
            None => Ok(()),
        }
    }

    async fn after_write(&mut self, after: AfterWrite) {
        match after {
            AfterWrite::Nothing => {}
            AfterWrite::DeleteOffline(row_ids) if row_ids.is_empty() => {}
            AfterWrite::DeleteOffline(row_ids) => {
                if let Err(error) = self.ctx.store.delete_offline(&row_ids).await {
                    tracing::error!(%error, "delivered offline messages could not be deleted; they will be delivered again");
                }
            }
        }
    }

    async fn outbound(&mut self, item: Outbound) -> Result<(), Closing> {
        match item {
            Outbound::Push(pushed) => {
                let written = self.write(pushed.frame()).await;
                if written.is_err() {
                    // Possibly half-written: the receiver cannot have read a
                    // whole frame, so keep the message for its next login.
                    self.keep_for_later(pushed).await;
                }
                written
            }
            Outbound::SweepOffline => {
                let Some(user) = &self.state.user else {
                    return Ok(());
                };
                match offline::take(&self.ctx, user.id).await {
                    Ok((payloads, after)) => {
                        for payload in payloads {
                            let mut frame = payload.into_bytes();
                            frame.push(b'\n');
                            self.write(&frame).await?;
                        }
                        self.after_write(after).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not read offline messages; they stay stored")
                    }
                }
                Ok(())
            }
        }
    }

    async fn keep_for_later(&self, pushed: Pushed) {
        let Some(user) = &self.state.user else {
            return;
        };
        if let Err(error) = store_for_later(&self.ctx, &[user.id], &[pushed]).await {
            tracing::error!(%error, "could not store an unwritten message");
        }
    }

    /// Writes pushes still queued, for a clean server shutdown.
    async fn flush_mailbox(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        while let Some(item) = self
            .state
            .mailbox
            .as_mut()
            .and_then(|m| m.rx.try_recv().ok())
        {
            if let Outbound::Push(pushed) = item {
                let written = tokio::time::timeout_at(deadline, self.write(pushed.frame())).await;
                if !matches!(written, Ok(Ok(()))) {
                    self.keep_for_later(pushed).await;
                    return;
                }
            }
        }
    }

    /// One frame per write call: the original client parses each read as
    /// one message. A peer that stops reading ends the connection.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closing> {
        let evict = self.state.mailbox.as_ref().map(|m| m.evict.clone());
        tokio::select! {
            written = tokio::time::timeout(WRITE_STALL_TIMEOUT, self.stream.write_all(bytes)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(Closing::WriteFailed(error)),
                Err(_) => Err(Closing::WriteStalled),
            },
            _ = async { match &evict { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                Err(Closing::Evicted)
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
