//! One client connection: reads frames, runs commands, writes replies and
//! pushed messages, enforces the per-connection timeouts, and cleans up
//! however the connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::{parse_frame, Credential, Errno, Reply, Request, Version};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::command::{self, AfterWrite, SessionState};
use crate::context::Context;
use crate::mailbox::{v1_frame, v2_frame_into, Notice, Outbound, Pushed};
use crate::metrics::ConnState;
use crate::refusals::Refusal;
use crate::transport::{Closing, Received, Transport};

/// A write that makes no progress this long means the peer stopped reading.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session may spend writing GOAWAY at server shutdown.
const SHUTDOWN_WRITE: Duration = Duration::from_millis(500);
/// What GOAWAY asks clients to spread their reconnections over.
const GOAWAY_RETRY_MS: u64 = 2_000;
/// Most bytes of queued pushes written in one call on a v2 connection.
const COALESCE_BYTES: usize = 64 * 1024;
/// Inbox messages read per query when catching up (at most this many
/// frames of the frame limit are in memory at once).
const INBOX_PAGE: u32 = 32;

/// The timeout that closes a connection not logged in.
const LOGIN_IDLE: &str = "not logged in within the login idle timeout";
/// The "timeout" at which a draining v2 session gets its GOAWAY.
const GOAWAY_DUE: &str = "goaway";
/// The "timeout" at which the transport pings its peer.
const KEEPALIVE_DUE: &str = "keepalive";

/// The two stages of a server shutdown, as a session sees them.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Draining starts: connections not logged in close now, v2 sessions
    /// get GOAWAY at a random point of the drain period.
    pub drain: CancellationToken,
    /// The drain period is over: whoever is left (v1 sessions) closes.
    pub stop: CancellationToken,
}

/// The future serving one connection. Not an `async fn`: that would keep
/// the connection twice in the task (argument and state), 1.4 KiB each.
/// `version` is what the session speaks before any request says: v1 on
/// TCP, v2 on WebSocket.
pub fn serve<T: Transport>(
    ctx: Arc<Context>,
    transport: T,
    peer: SocketAddr,
    conn_id: u64,
    connected: Instant,
    shutdown: Shutdown,
    version: Version,
) -> impl std::future::Future<Output = ()> + Send {
    let span =
        tracing::info_span!("conn", conn = conn_id, peer = %peer, user = tracing::field::Empty);
    let mut state = SessionState::new(conn_id, peer.ip());
    state.version = version;
    let mut connection = Connection {
        span,
        state,
        ctx,
        transport,
        last_frame: Instant::now(),
        anonymous_since: connected,
        last_write: None,
        goaway_at: None,
        conn_state: ConnState::PreLogin,
        connected,
        bytes_out: 0,
    };
    // The block's captures are used in place; an `async fn` taking the
    // connection by value would copy it into its state a second time.
    async move { connection.run(&shutdown).await }
}

struct Connection<T> {
    /// Entered around each request and the clean-up, not on every poll:
    /// entering a span per wake-up cost about 2 µs per delivered message.
    span: tracing::Span,
    ctx: Arc<Context>,
    transport: T,
    state: SessionState,
    last_frame: Instant,
    /// Since when the connection is not logged in (connect, or logout):
    /// the login idle timeout counts from here, whatever the client sends.
    anonymous_since: Instant,
    /// When the last frame went out, for spacing frames to v1 clients.
    last_write: Option<Instant>,
    /// While draining, when this v2 session gets its GOAWAY.
    goaway_at: Option<Instant>,
    /// What the `connections` gauge counts this connection as.
    conn_state: ConnState,
    connected: Instant,
    bytes_out: u64,
}

impl<T: Transport> Connection<T> {
    async fn run(&mut self, shutdown: &Shutdown) {
        self.span.in_scope(|| tracing::debug!("connected"));
        self.ctx.metrics.connection(None, Some(self.conn_state));
        let reason = self.serve(shutdown).await;
        let span = self.span.clone();
        Box::pin(self.finish(reason).instrument(span)).await;
    }

    /// Cleans up after the connection ended for `reason`, and logs it.
    async fn finish(&mut self, reason: Closing) {
        if matches!(reason, Closing::Shutdown) && self.state.version == Version::V2 {
            self.go_away().await;
        }
        let user = self.state.user.as_ref().map(|u| u.id);
        command::end_login(&self.ctx, &mut self.state).await;
        self.ctx.metrics.connection(Some(self.conn_state), None);
        self.ctx.metrics.closed(reason.label());
        self.transport.close(&reason).await;
        // One line per connection end, with what an operator asks first.
        let address = self.state.peer_ip;
        let duration_ms = self.connected.elapsed().as_millis() as u64;
        let (bytes_in, bytes_out) = (self.transport.bytes_in(), self.bytes_out);
        macro_rules! closed {
            ($level:ident) => {
                tracing::$level!(
                    user,
                    %address,
                    duration_ms,
                    bytes_in,
                    bytes_out,
                    %reason,
                    "connection closed"
                )
            };
        }
        match reason {
            Closing::PeerClosed | Closing::Shutdown => closed!(info),
            // Limits: counted, and logged once a minute per address by
            // `refusals`, so a flood of them cannot flood the log.
            Closing::Idle(LOGIN_IDLE) => {
                self.ctx
                    .refusals
                    .note(Refusal::LoginIdle, self.state.peer_ip);
                closed!(debug)
            }
            Closing::FrameTooLarge | Closing::BinaryMessage => closed!(debug),
            _ => closed!(warn),
        }
    }

    /// Waits for whatever comes first. What is done about it (a request,
    /// a push, a catch-up) runs boxed: this loop's state is held by every
    /// idle connection, those futures only while they run.
    async fn serve(&mut self, shutdown: &Shutdown) -> Closing {
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
            if self.state.mailbox.as_ref().is_some_and(|m| m.take_behind()) {
                // Pushes were left out of a full queue: read them from the inbox.
                let span = self.span.clone();
                if let Err(reason) = Box::pin(self.catch_up().instrument(span)).await {
                    return reason;
                }
            }
            let (evict, next_item) = match self.state.mailbox.as_mut() {
                Some(mailbox) => {
                    let (evict, next) = mailbox.evict_and_recv();
                    (Some(evict), Some(next))
                }
                None => (None, None),
            };
            tokio::select! {
                biased;
                _ = shutdown.stop.cancelled() => return Closing::Shutdown,
                _ = shutdown.drain.cancelled(), if self.goaway_at.is_none() => {
                    if self.state.user.is_none() {
                        return Closing::Shutdown;
                    }
                    // v1 sessions wait for `stop`: their clients cannot
                    // reconnect by themselves, so they go last.
                    self.goaway_at = Some(match self.state.version {
                        Version::V2 => {
                            let period = self.ctx.limits.drain_period;
                            Instant::now() + period.mul_f64(rand::random::<f64>())
                        }
                        Version::V1 => Instant::now() + Duration::from_secs(365 * 24 * 3600),
                    });
                }
                _ = async { match evict { Some(token) => token.cancelled().await, None => std::future::pending().await } } => {
                    return Closing::Evicted;
                }
                item = async { match next_item { Some(next) => next.await, None => std::future::pending().await } } => {
                    if let Some(item) = item {
                        if let Err(reason) = Box::pin(self.outbound(item)).await {
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
                            if why == GOAWAY_DUE {
                                return Closing::Shutdown;
                            }
                            if why != KEEPALIVE_DUE {
                                return Closing::Idle(why);
                            }
                            if let Err(reason) = self.transport.keepalive().await {
                                return reason;
                            }
                        }
                    }
                }
                received = self.transport.next_frame() => {
                    if let Err(reason) = Box::pin(self.received(received)).await {
                        return reason;
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
            let heard = self
                .transport
                .heard_at()
                .map_or(self.last_frame, |at| at.max(self.last_frame));
            (heard + limits.v2_idle_timeout, "no frame from v2 client")
        });
        let stall = self
            .transport
            .partial_since()
            .map(|since| (since + limits.frame_stall_timeout, "frame stalled half-way"));
        let keepalive = self.transport.keepalive_due().map(|at| (at, KEEPALIVE_DUE));
        let goaway = self
            .goaway_at
            .filter(|_| self.state.version == Version::V2)
            .map(|at| (at, GOAWAY_DUE));
        [login, v2, stall, goaway, keepalive]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Handles what the transport received: a frame, or the end of the
    /// connection after an error reply.
    async fn received(&mut self, received: Result<Received, Closing>) -> Result<(), Closing> {
        match received? {
            Received::Frame(frame) => {
                self.last_frame = Instant::now();
                let span = self.span.clone();
                self.handle(&frame).instrument(span).await
            }
            Received::Partial => Ok(()),
            Received::TooLarge => {
                self.ctx
                    .refusals
                    .note(Refusal::FrameTooLarge, self.state.peer_ip);
                self.reply(Reply::error(None, Errno::FrameTooLarge), None)
                    .await?;
                Err(Closing::FrameTooLarge)
            }
            Received::Unsupported(why) => {
                self.reply(Reply::refuse(None, Errno::BadRequest, why), None)
                    .await?;
                Err(Closing::BinaryMessage)
            }
        }
    }

    async fn handle(&mut self, frame: &[u8]) -> Result<(), Closing> {
        let parsed = parse_frame(frame);
        if parsed.version == Some(Version::V2) {
            self.state.version = Version::V2;
        }
        let msgid = match &parsed.request {
            Ok(request) => Some(request.msgid()),
            Err(bad) => bad.msgid,
        };
        let by_token = matches!(
            &parsed.request,
            Ok(Request::Login(login)) if matches!(login.credential, Credential::Token(_))
        );
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
        self.ctx.metrics.request(msgid, &outcome.reply, by_token);
        let conn_state = match (&self.state.user, self.state.version) {
            (None, _) => ConnState::PreLogin,
            (Some(_), Version::V1) => ConnState::V1,
            (Some(_), Version::V2) => ConnState::V2,
        };
        self.ctx
            .metrics
            .connection(Some(self.conn_state), Some(conn_state));
        self.conn_state = conn_state;
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
        match after {
            AfterWrite::Nothing => Ok(()),
            AfterWrite::ReadInbox => {
                self.confirm_written().await;
                let span = self.span.clone();
                let (messages, bytes) = Box::pin(self.catch_up().instrument(span)).await?;
                self.ctx.metrics.replayed(messages, bytes);
                Ok(())
            }
        }
    }

    async fn outbound(&mut self, item: Outbound) -> Result<(), Closing> {
        match item {
            Outbound::Push { pushed, seq } => self.push(pushed, seq).await,
            Outbound::Notice(notice) => {
                let mut out = Vec::new();
                self.append_notice(&mut out, notice);
                if out.is_empty() {
                    return Ok(());
                }
                self.write(&out).await
            }
            Outbound::CatchUp => {
                if let Some(mailbox) = &self.state.mailbox {
                    mailbox.take_behind();
                }
                let span = self.span.clone();
                Box::pin(self.catch_up().instrument(span)).await?;
                Ok(())
            }
        }
    }

    /// Writes a pushed message. On v2 connections the pushes already queued
    /// behind it go in the same write (v1 clients need one frame per write).
    /// Pushes at or below the written seq are duplicates (already read from
    /// the inbox); one that skips a seq sends the session to its inbox.
    async fn push(&mut self, first: Pushed, seq: i64) -> Result<(), Closing> {
        let mut out = Vec::new();
        let mut gap = !self.append_push(&mut out, &first, seq);
        if self.state.version == Version::V2 {
            while !gap && out.len() < COALESCE_BYTES {
                match self.state.mailbox.as_mut().and_then(|m| m.try_recv()) {
                    Some(Outbound::Push { pushed, seq }) => {
                        gap = !self.append_push(&mut out, &pushed, seq)
                    }
                    Some(Outbound::CatchUp) => gap = true,
                    Some(Outbound::Notice(notice)) => self.append_notice(&mut out, notice),
                    None => break,
                }
            }
        }
        if !out.is_empty() {
            self.write(&out).await?;
            self.confirm_written_v1().await;
        }
        if gap {
            let span = self.span.clone();
            Box::pin(self.catch_up().instrument(span)).await?;
        }
        Ok(())
    }

    /// Appends a notice's frame for a v2 client (v1 has no notices), and
    /// remembers who the user is now related to.
    fn append_notice(&mut self, out: &mut Vec<u8>, notice: Notice) {
        if let Some(user) = notice.related {
            self.state.relate(user);
        }
        if self.state.version == Version::V2 {
            out.extend_from_slice(notice.json.as_bytes());
            out.push(b'\n');
        }
    }

    /// Appends the push when it is the next seq; `false` on a gap.
    fn append_push(&mut self, out: &mut Vec<u8>, pushed: &Pushed, seq: i64) -> bool {
        let cursor = &mut self.state.inbox;
        if seq <= cursor.written {
            return true;
        }
        if seq != cursor.written + 1 {
            return false;
        }
        pushed.write_frame(self.state.version, seq, out);
        cursor.written = seq;
        true
    }

    /// Writes every inbox message after the written cursor, a page at a
    /// time, oldest first. v1 receivers confirm as they go; v2 clients
    /// confirm with DELIVERED. Returns how many messages and bytes went out.
    async fn catch_up(&mut self) -> Result<(usize, usize), Closing> {
        let Some(user) = self.state.user.as_ref().map(|u| u.id) else {
            return Ok((0, 0));
        };
        let (mut messages, mut bytes) = (0, 0);
        loop {
            let page = match self
                .ctx
                .store
                .inbox_after(user, self.state.inbox.written, INBOX_PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    // The messages stay stored; the next push or login reads them.
                    tracing::error!(%error, "could not read the inbox");
                    return Ok((messages, bytes));
                }
            };
            let complete = page.len() < INBOX_PAGE as usize;
            let mut out = Vec::new();
            for stored in page {
                match self.state.version {
                    Version::V2 => v2_frame_into(&stored.body, stored.seq, &mut out),
                    Version::V1 => out.extend_from_slice(&v1_frame(&stored.body)),
                }
                self.state.inbox.written = stored.seq;
                messages += 1;
                if self.state.version == Version::V1 || out.len() >= COALESCE_BYTES {
                    bytes += out.len();
                    self.write(&out).await?;
                    out.clear();
                    self.confirm_written_v1().await;
                }
            }
            if !out.is_empty() {
                bytes += out.len();
                self.write(&out).await?;
            }
            if complete {
                return Ok((messages, bytes));
            }
        }
    }

    /// A v1 client confirms nothing: what was written to it counts as delivered.
    async fn confirm_written_v1(&mut self) {
        if self.state.version == Version::V1 {
            self.confirm_written().await;
        }
    }

    async fn confirm_written(&mut self) {
        let Some(user) = self.state.user.as_ref().map(|u| u.id) else {
            return;
        };
        let cursor = &mut self.state.inbox;
        if cursor.written > cursor.confirmed {
            cursor.confirmed = cursor.written;
            self.ctx.writer.confirm(user, cursor.written).await;
        }
    }

    /// Tells a v2 client the server is going away, so it reconnects (with
    /// its token and `since`) after a random delay instead of all at once.
    async fn go_away(&mut self) {
        let frame = protocol::GoAway {
            reason: "shutdown".into(),
            retry_ms: GOAWAY_RETRY_MS,
        }
        .frame();
        if let Ok(Ok(())) =
            tokio::time::timeout(SHUTDOWN_WRITE, self.transport.write_frames(&frame)).await
        {
            self.bytes_out += frame.len() as u64;
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
            written = tokio::time::timeout(WRITE_STALL_TIMEOUT, self.transport.write_frames(bytes)) => match written {
                Ok(Ok(())) => {
                    self.bytes_out += bytes.len() as u64;
                    Ok(())
                }
                Ok(Err(error)) => Err(Closing::WriteFailed(error)),
                Err(_) => Err(Closing::WriteStalled),
            },
            _ = async { match &evict { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {
                Err(Closing::Evicted)
            }
        }
    }
}
