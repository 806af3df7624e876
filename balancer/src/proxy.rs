//! The data path: accept a client (and, with `[tls]`, finish its TLS
//! handshake), pick a backend (retrying the next one when a connect fails),
//! then copy bytes both ways untouched until either side is done, the idle
//! timeout fires, a drain times out or shutdown's grace ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::io::poll_read_buf;
use tracing::{debug, info_span, warn, Instrument, Span};

use crate::backend::{BackendState, Transition};
use crate::fault::{self, Fault};
use crate::proxy_header;
use crate::shared::Shared;

/// Time a client gets to complete its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of each direction's copy buffer.
const BUF_SIZE: usize = 16 * 1024;
/// First and longest pause after a failing `accept` (out of file descriptors, say).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts clients until shutdown; each connection runs in its own task on
/// the shared tracker so shutdown can wait for them.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                shared.clients.total.fetch_add(1, Ordering::Relaxed);
                let span = info_span!("conn", %peer, backend = tracing::field::Empty);
                let task_shared = shared.clone();
                shared
                    .tracker
                    .spawn(handle_client(task_shared, client, peer, span));
            }
            Err(e) => {
                // Errors such as EMFILE would spin the loop; wait, growing the
                // pause. Established connections are untouched, and waiting
                // clients stay in the backlog until descriptors free up.
                // Logged at warn once per streak, not per attempt.
                shared.clients.accept_errors.fetch_add(1, Ordering::Relaxed);
                if backoff == ACCEPT_BACKOFF_MIN {
                    warn!(error = %e, "accept failed; backing off (counted in balancer_accept_errors_total)");
                } else {
                    debug!(error = %e, "accept failed; pausing {backoff:?}");
                }
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    debug!("accept loop stopped");
}

/// Releases the backend slot however the connection ends.
struct Slot(Arc<BackendState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Tries backends until one accepts; `None` when none did. A backend that
/// wants PROXY protocol gets its header before anything else, naming
/// `client` and the balancer address `local` it connected to.
async fn connect_backend(
    shared: &Shared,
    client: SocketAddr,
    local: SocketAddr,
) -> Option<(TcpStream, Slot, bool)> {
    // Hold this snapshot for the whole connect phase: a reload meanwhile
    // affects the next client, not the one half-way through picking.
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let any_up = snapshot.members.iter().any(|m| m.state.is_up());
    // Bounded tries; when everything looks down, every backend gets one try.
    let max_tries = if any_up {
        (config.retries as usize + 1).min(snapshot.members.len())
    } else {
        snapshot.members.len()
    };
    let mut tried = Vec::with_capacity(max_tries);
    let mut attempts = 0;
    while attempts < max_tries {
        let i = snapshot.pick(&mut tried)?;
        attempts += 1;
        let member = &snapshot.members[i];
        let slot = Slot(member.state.clone());
        let address = &member.state.address;
        let connect = async {
            let mut stream = TcpStream::connect(address).await?;
            if member.proxy_protocol {
                stream
                    .write_all(&proxy_header::proxy(client, local))
                    .await?;
            }
            std::io::Result::Ok(stream)
        };
        let result = tokio::time::timeout(config.connect_timeout, connect).await;
        let (error, fault) = match result {
            Ok(Ok(stream)) => return Some((stream, slot, member.proxy_protocol)),
            Ok(Err(e)) => (e.to_string(), fault::of_io(&e)),
            Err(_) => (
                format!("timed out after {:?}", config.connect_timeout),
                shared.lag.timeout_fault(config.connect_timeout),
            ),
        };
        drop(slot);
        if fault == Fault::Local {
            // Our own exhaustion: trying another backend would fail the
            // same way, and no backend is to blame.
            member
                .state
                .stats
                .local_errors
                .fetch_add(1, Ordering::Relaxed);
            debug!(backend = %address, %error, "connect failed on our side; closing the client");
            return None;
        }
        member
            .state
            .stats
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        warn!(backend = %address, %error, attempt = attempts, "backend connect failed; trying the next");
        if member.state.record_passive_failure(config.health.fall) == Transition::WentDown {
            warn!(backend = %address, "backend is down (client connects failed)");
        }
    }
    None
}

/// The span is entered while connecting and for the closing log, not
/// around the copy: entering it on every wake-up of a busy connection cost
/// more than the copy itself.
async fn handle_client(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, span: Span) {
    let local = client.local_addr().unwrap_or(peer);
    let _ = client.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        return serve(shared.clone(), client, peer, local, span).await;
    };
    let acceptor = tls.acceptor();
    let handshake = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(client)) => r,
        _ = shared.hard_stop.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => {
            tls.handshakes.fetch_add(1, Ordering::Relaxed);
            serve(shared.clone(), stream, peer, local, span).await;
        }
        // Counted, and at debug only: scanners and port checks fail
        // handshakes all day, and the log must stay readable.
        Ok(Err(e)) => {
            tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| debug!(error = %e, "TLS handshake failed"));
        }
        Err(_) => {
            tls.handshake_failures.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| debug!("TLS handshake timed out"));
        }
    }
}

/// One client stream, plain or TLS: what the copy needs of it.
trait ClientSide: AsyncRead + AsyncWrite + Unpin + Send {
    /// Ready once reading may yield bytes, so that an idle connection holds
    /// no copy buffer. TLS may hold decrypted bytes the socket no longer
    /// signals, so it is always ready.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;

    /// Whether closing needs a shutdown of its own: TLS ends with a
    /// close_notify, which dropping the socket does not send.
    const CLOSE_NEEDS_SHUTDOWN: bool = false;
}

impl ClientSide for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ClientSide for tokio_rustls::server::TlsStream<TcpStream> {
    const CLOSE_NEEDS_SHUTDOWN: bool = true;

    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Connects a backend for the (handshaken) client and copies until done.
async fn serve(
    shared: Arc<Shared>,
    client: impl ClientSide,
    peer: SocketAddr,
    local: SocketAddr,
    span: Span,
) {
    let Some((backend, slot, _)) = connect_backend(&shared, peer, local)
        .instrument(span.clone())
        .await
    else {
        shared.clients.rejected.fetch_add(1, Ordering::Relaxed);
        span.in_scope(|| warn!("no backend accepted the connection; closing the client"));
        return;
    };
    let state = slot.0.clone();
    span.record("backend", state.address.as_str());
    state.stats.total.fetch_add(1, Ordering::Relaxed);
    let _ = backend.set_nodelay(true);
    let config = shared.snapshot().config.clone();
    let idle = config.idle_timeout;
    let response = config.response_timeout.map(|limit| ResponseWatch {
        limit,
        fall: config.health.fall,
        shared: shared.clone(),
    });
    let kill = state.kill_token();
    span.in_scope(|| debug!(%peer, "proxying"));
    let started = Instant::now();
    let reason = tokio::select! {
        r = pump(client, backend, &state, idle, response.as_ref()) => r,
        _ = kill.cancelled() => "drain timeout",
        _ = shared.hard_stop.cancelled() => "shutdown grace period over",
    };
    span.in_scope(|| debug!(reason, duration = ?started.elapsed(), "connection closed"));
    drop(slot);
}

/// Copies both ways until both directions reached EOF (half-closes are
/// passed on), one side fails, or nothing moved for `idle`.
async fn pump(
    mut client: impl ClientSide,
    mut backend: TcpStream,
    state: &BackendState,
    idle: Option<Duration>,
    response: Option<&ResponseWatch>,
) -> &'static str {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, shared by both
    // directions; only kept (a clock read per read) with an idle timeout.
    let last = AtomicU64::new(0);
    let activity = idle.map(|_| (&last, start));
    // 1 + milliseconds since `start` of the oldest client byte the backend
    // has not answered yet; 0 when nothing is awaited. Only kept with a
    // response timeout.
    let awaiting = AtomicU64::new(0);
    let awaited = response.map(|_| (&awaiting, start));
    let mut up = Flow::new(&state.stats.bytes_to_backend, activity);
    up.request = awaited;
    let mut down = Flow::new(&state.stats.bytes_to_client, activity);
    down.answer = awaited.map(|(a, _)| a);
    down.answered_by = Some(state);
    // Armed only while an answer is due, so idle connections hold no timer.
    let mut due = response.map(|_| Box::pin(tokio::time::sleep(Duration::ZERO)));
    let mut fired = false;
    let copy = async {
        let copied = std::future::poll_fn(|cx| {
            if !up.finished {
                let other = down.finished;
                if let Poll::Ready(r) = up.poll(cx, &mut client, &mut backend, other) {
                    r?;
                }
            }
            if !down.finished {
                let other = up.finished;
                if let Poll::Ready(r) = down.poll(cx, &mut backend, &mut client, other) {
                    r?;
                }
            }
            // After the flows, which may just have made an answer due.
            if let (Some(watch), Some(timer), false) = (response, due.as_mut(), fired) {
                let since = awaiting.load(Ordering::Relaxed);
                if since != 0 {
                    let deadline = tokio::time::Instant::from_std(
                        start + Duration::from_millis(since - 1) + watch.limit,
                    );
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        // Re-armed by the next request if the runtime took the blame.
                        fired = watch.expired(state);
                        awaiting.store(0, Ordering::Relaxed);
                    }
                }
            }
            if up.finished && down.finished {
                Poll::Ready(Ok::<(), std::io::Error>(()))
            } else {
                Poll::Pending
            }
        })
        .await;
        match copied {
            Ok(()) => "closed",
            Err(_) => "error",
        }
    };
    match idle {
        None => copy.await,
        Some(idle) => tokio::select! {
            r = copy => r,
            _ = idle_watch(idle, &last, start) => "idle timeout",
        },
    }
}

/// Passive detection of a wedged backend: a client sent bytes and the
/// backend returned none within `limit`. It counts one failure toward
/// `fall` per connection and leaves the connection open (the client
/// decides whether to wait on).
struct ResponseWatch {
    limit: Duration,
    fall: u32,
    shared: Arc<Shared>,
}

impl ResponseWatch {
    /// An answer is overdue: records the failure unless the runtime itself
    /// was too late to have seen the answer. True when it was recorded.
    fn expired(&self, state: &BackendState) -> bool {
        if self.shared.lag.timeout_fault(self.limit) == Fault::Local {
            return false;
        }
        state
            .stats
            .response_timeouts
            .fetch_add(1, Ordering::Relaxed);
        warn!(backend = %state.address, limit = ?self.limit, "backend sent nothing back in time");
        if state.record_passive_failure(self.fall) == Transition::WentDown {
            warn!(backend = %state.address, "backend is down (responses timed out)");
        }
        true
    }
}

/// One direction of the copy. Its buffer is allocated when the reading side
/// first becomes readable (an idle connection holds none) and never zeroed.
struct Flow<'a> {
    buf: Vec<u8>,
    written: usize,
    /// Bytes written since the last flush.
    unflushed: bool,
    eof: bool,
    finished: bool,
    counter: &'a AtomicU64,
    activity: Option<(&'a AtomicU64, Instant)>,
    /// Client to backend: marks when an answer became due.
    request: Option<(&'a AtomicU64, Instant)>,
    /// Backend to client: any byte is an answer.
    answer: Option<&'a AtomicU64>,
    /// Backend to client: told of the first answer and of every awaited one.
    answered_by: Option<&'a BackendState>,
}

impl<'a> Flow<'a> {
    fn new(counter: &'a AtomicU64, activity: Option<(&'a AtomicU64, Instant)>) -> Self {
        Self {
            buf: Vec::new(),
            written: 0,
            unflushed: false,
            eof: false,
            finished: false,
            counter,
            activity,
            request: None,
            answer: None,
            answered_by: None,
        }
    }

    /// Moves bytes from `from` to `to` until either would block; ready once
    /// EOF was read and passed on. When the other direction has finished
    /// already, a TCP half-close is not sent: both sockets are closed right
    /// after, and the close sends the FIN. TLS still sends its close_notify.
    fn poll<W: ClientSide>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut impl ClientSide,
        to: &mut W,
        other_finished: bool,
    ) -> Poll<std::io::Result<()>> {
        loop {
            while self.written < self.buf.len() {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
                self.unflushed = true;
            }
            if self.unflushed {
                // A no-op on TCP; TLS sends the records it has buffered.
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                self.unflushed = false;
            }
            if self.eof {
                if !other_finished || W::CLOSE_NEEDS_SHUTDOWN {
                    ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                }
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
            self.buf.clear();
            self.written = 0;
            if self.buf.capacity() == 0 {
                ready!(from.poll_readable(cx))?;
                self.buf.reserve_exact(BUF_SIZE);
            }
            let n = ready!(poll_read_buf(Pin::new(&mut *from), cx, &mut self.buf))?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.counter.fetch_add(n as u64, Ordering::Relaxed);
            if let Some((last, start)) = self.activity {
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            if let Some((awaiting, start)) = self.request {
                if awaiting.load(Ordering::Relaxed) == 0 {
                    awaiting.store(start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                }
            }
            if let Some(awaiting) = self.answer {
                if awaiting.swap(0, Ordering::Relaxed) != 0 {
                    if let Some(state) = self.answered_by {
                        state.record_answer();
                    }
                }
            } else if let Some(state) = self.answered_by.take() {
                // Without response tracking, the first answer is enough.
                state.record_answer();
            }
        }
    }
}

/// Resolves once nothing moved for `idle`.
async fn idle_watch(idle: Duration, last: &AtomicU64, start: Instant) {
    loop {
        let last_at = start + Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = last_at + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}
