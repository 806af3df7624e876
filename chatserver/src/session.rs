//! One client connection: reads frames, runs commands, writes replies and
//! pushed messages, enforces the per-connection timeouts, and cleans up
//! however the connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{parse_frame, Errno, FrameCodec, FrameError, Reply, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::command::{self, offline, AfterWrite, SessionState};
use crate::context::Context;
use crate::delivery::store_for_later;
use crate::mailbox::{v1_frame, Outbound, Pushed};
use crate::refusals::Refusal;

/// A write that makes no progress this long means the peer stopped reading.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session may spend writing queued pushes at server shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Most bytes of queued pushes written in one call on a v2 connection.
const COALESCE_BYTES: usize = 64 * 1024;
/// Bytes read per system call at most.
const READ_CHUNK: usize = 4096;

/// The timeout that closes a connection not logged in.
const LOGIN_IDLE: &str = "not logged in within the login idle timeout";

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

/// The future serving one connection. Not an `async fn`: that would keep
/// the connection twice in the task (argument and state), 1.4 KiB each.
pub fn serve(
    ctx: Arc<Context>,
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    connected: Instant,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let span =
        tracing::info_span!("conn", conn = conn_id, peer = %peer, user = tracing::field::Empty);
    let connection = Connection {
        span,
        codec: FrameCodec::new(ctx.limits.max_frame),
        state: SessionState::new(conn_id, peer.ip()),
        ctx,
        stream,
        buf: BytesMut::new(),
        last_frame: Instant::now(),
        anonymous_since: connected,
        last_write: None,
        partial_since: None,
    };
    connection.run(shutdown)
}

struct Connection {
    /// Entered around each request and the clean-up, not on every poll:
    /// entering a span per wake-up cost about 2 µs per delivered message.
    span: tracing::Span,
    ctx: Arc<Context>,
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    state: SessionState,
    last_frame: Instant,
    /// Since when the connection is not logged in (connect, or logout):
    /// the login idle timeout counts from here, whatever the client sends.
    anonymous_since: Instant,
    /// When the last frame went out, for spacing frames to v1 clients.
    last_write: Option<Instant>,
    /// When the bytes of the current unfinished frame started arriving.
    partial_since: Option<Instant>,
}

impl Connection {
    async fn run(mut self, shutdown: CancellationToken) {
        self.span.in_scope(|| tracing::debug!("connected"));
        let reason = self.serve(&shutdown).await;
        let span = self.span.clone();
        Box::pin(async move {
            if matches!(reason, Closing::Shutdown) {
                self.flush_mailbox().await;
            }
            command::end_login(&self.ctx, &mut self.state).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), self.stream.shutdown()).await;
            match reason {
                Closing::PeerClosed | Closing::Shutdown => {
                    tracing::info!(%reason, "connection closed")
                }
                // Limits: counted, and logged once a minute per address by
                // `refusals`, so a flood of them cannot flood the log.
                Closing::Idle(LOGIN_IDLE) => {
                    self.ctx
                        .refusals
                        .note(Refusal::LoginIdle, self.state.peer_ip);
                    tracing::debug!(%reason, "connection closed")
                }
                Closing::FrameTooLarge => tracing::debug!(%reason, "connection closed"),
                _ => tracing::warn!(%reason, "connection closed"),
            }
        })
        .instrument(span)
        .await;
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Closing {
        // One timer for all timeouts, re-armed only when it fires early or
        // must fire sooner: no timer work per frame.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed_for: Option<Instant> = None;
        loop {
            let deadline = self.deadline();
            match deadline {
                Some((at, _)) if armed_for.is_none_or(|armed| at < armed) => {
                    timer.as_mut().reset(at);
                    armed_for = Some(at);
                }
                None => armed_for = None,
                Some(_) => {}
            }
            let (evict, rx) = match self.state.mailbox.as_mut() {
                Some(mailbox) => (Some(&mailbox.evict), Some(&mut mailbox.rx)),
                None => (None, None),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Closing::Shutdown,
                _ = async { match evict { Some(token) => token.cancelled().await, None => std::future::pending().await } } => {
                    return Closing::Evicted;
                }
                item = async { match rx { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    if let Some(item) = item {
                        if let Err(reason) = self.outbound(item).await {
                            return reason;
                        }
                    }
                }
                // Before reading: a peer that keeps the socket readable
                // must not keep its timeouts from firing.
                _ = &mut timer, if armed_for.is_some() => {
                    armed_for = None;
                    if let Some((at, why)) = self.deadline() {
                        if Instant::now() >= at {
                            return Closing::Idle(why);
                        }
                    }
                }
                ready = self.stream.readable() => {
                    if let Err(error) = ready {
                        return Closing::ReadFailed(error);
                    }
                    // The buffer is only allocated once bytes are waiting, so
                    // an idle connection holds none.
                    self.buf.reserve(READ_CHUNK);
                    match self.stream.try_read_buf(&mut self.buf) {
                        Ok(0) => return self.eof(),
                        Ok(_) => if let Err(reason) = self.frames().await {
                            return reason;
                        },
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(error) => return Closing::ReadFailed(error),
                    }
                }
            }
        }
    }

    /// The earliest timeout that applies now, with its name.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let limits = &self.ctx.limits;
        let login = self
            .state
            .user
            .is_none()
            .then(|| (self.anonymous_since + limits.login_idle_timeout, LOGIN_IDLE));
        let v2 = (self.state.version == Version::V2).then(|| {
            (
                self.last_frame + limits.v2_idle_timeout,
                "no frame from v2 client",
            )
        });
        let stall = self
            .partial_since
            .map(|since| (since + limits.frame_stall_timeout, "frame stalled half-way"));
        [login, v2, stall]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
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
                    let span = self.span.clone();
                    // Boxed: the request futures (SQL, hashing) are large, and
                    // an idle session should not carry their space.
                    Box::pin(self.handle(&frame).instrument(span)).await?;
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { .. }) => {
                    self.ctx
                        .refusals
                        .note(Refusal::FrameTooLarge, self.state.peer_ip);
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
            // Hold no buffer between messages (idle connections are the many).
            self.buf = BytesMut::new();
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        Ok(())
    }

    async fn handle(&mut self, frame: &[u8]) -> Result<(), Closing> {
        let parsed = parse_frame(frame);
        if parsed.version == Some(Version::V2) {
            self.state.version = Version::V2;
        }
        let was_logged_in = self.state.user.is_some();
        let outcome = match parsed.request {
            Ok(request) => command::apply(&self.ctx, &mut self.state, request).await,
            Err(bad) => {
                tracing::debug!(reason = %bad.reason, "bad request");
                Reply::refuse(bad.msgid, bad.errno(), bad.reason).into()
            }
        };
        if was_logged_in && self.state.user.is_none() {
            self.anonymous_since = Instant::now();
        }
        self.reply(outcome.reply, parsed.rid.as_ref()).await?;
        self.after_write(outcome.after_write).await
    }

    async fn reply(
        &mut self,
        reply: Reply,
        rid: Option<&serde_json::Value>,
    ) -> Result<(), Closing> {
        match reply.render(self.state.version, rid) {
            Some(bytes) => self.write(&bytes).await,
            None => Ok(()),
        }
    }

    async fn after_write(&mut self, after: AfterWrite) -> Result<(), Closing> {
        let (row_ids, sweep) = match after {
            AfterWrite::Nothing => return Ok(()),
            AfterWrite::DeleteOffline(row_ids) => (row_ids, false),
            AfterWrite::DeleteOfflineThenSweep(row_ids) => (row_ids, true),
        };
        if !row_ids.is_empty() {
            if let Err(error) = self.ctx.store.delete_offline(&row_ids).await {
                tracing::error!(%error, "delivered offline messages could not be deleted; they will be delivered again");
            }
        }
        if sweep {
            Box::pin(self.sweep_offline()).await?;
        }
        Ok(())
    }

    async fn outbound(&mut self, item: Outbound) -> Result<(), Closing> {
        match item {
            Outbound::Push(pushed) => self.push(pushed).await,
            Outbound::SweepOffline => {
                let span = self.span.clone();
                Box::pin(self.sweep_offline().instrument(span)).await
            }
        }
    }

    /// Writes a pushed message. On v2 connections the pushes already queued
    /// behind it go in the same write (v1 clients need one frame per write).
    async fn push(&mut self, first: Pushed) -> Result<(), Closing> {
        let mut batch = vec![first];
        let mut sweep_after = false;
        if self.state.version == Version::V2 {
            let mut size = batch[0].frame(Version::V2).len();
            while size < COALESCE_BYTES {
                match self.state.mailbox.as_mut().map(|m| m.rx.try_recv()) {
                    Some(Ok(Outbound::Push(next))) => {
                        size += next.frame(Version::V2).len();
                        batch.push(next);
                    }
                    Some(Ok(Outbound::SweepOffline)) => {
                        sweep_after = true;
                        break;
                    }
                    _ => break,
                }
            }
        }
        let version = self.state.version;
        let written = if let [single] = batch.as_slice() {
            self.write(single.frame(version)).await
        } else {
            let bytes: Vec<u8> = batch
                .iter()
                .flat_map(|p| p.frame(version))
                .copied()
                .collect();
            self.write(&bytes).await
        };
        if written.is_err() {
            // Possibly half-written: keep what the receiver may not have
            // read whole for its next login (at least once).
            let span = self.span.clone();
            Box::pin(self.keep_for_later(&batch).instrument(span)).await;
            return written;
        }
        if sweep_after {
            let span = self.span.clone();
            Box::pin(self.sweep_offline().instrument(span)).await?;
        }
        Ok(())
    }

    async fn sweep_offline(&mut self) -> Result<(), Closing> {
        let Some(user) = &self.state.user else {
            return Ok(());
        };
        match offline::take(&self.ctx, user.id).await {
            Ok((payloads, row_ids)) => {
                for payload in payloads {
                    let frame = match self.state.version {
                        Version::V1 => v1_frame(&payload).into_vec(),
                        Version::V2 => {
                            let mut frame = payload.into_bytes();
                            frame.push(b'\n');
                            frame
                        }
                    };
                    self.write(&frame).await?;
                }
                self.after_write(AfterWrite::DeleteOffline(row_ids)).await?;
            }
            Err(error) => {
                tracing::error!(%error, "could not read offline messages; they stay stored")
            }
        }
        Ok(())
    }

    async fn keep_for_later(&self, unwritten: &[Pushed]) {
        let Some(user) = &self.state.user else {
            return;
        };
        if let Err(error) = store_for_later(&self.ctx, &[user.id], unwritten).await {
            tracing::error!(%error, lost = unwritten.len(), "could not store unwritten messages");
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
                let frame = pushed.frame(self.state.version).to_vec();
                let written = tokio::time::timeout_at(deadline, self.write(&frame)).await;
                if !matches!(written, Ok(Ok(()))) {
                    self.keep_for_later(&[pushed]).await;
                    return;
                }
            }
        }
    }

    /// One frame per write call, and on v1 connections frames spaced by
    /// `v1_write_gap`: the original client parses each read as one message.
    /// A peer that stops reading ends the connection.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closing> {
        let evict = self.state.mailbox.as_ref().map(|m| m.evict.clone());
        let gap = self.ctx.limits.v1_write_gap;
        if self.state.version == Version::V1 && !gap.is_zero() {
            if let Some(last) = self.last_write {
                tokio::time::sleep_until(last + gap).await;
            }
        }
        let written = self.write_now(bytes, evict).await;
        self.last_write = Some(Instant::now());
        written
    }

    async fn write_now(
        &mut self,
        bytes: &[u8],
        evict: Option<CancellationToken>,
    ) -> Result<(), Closing> {
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
