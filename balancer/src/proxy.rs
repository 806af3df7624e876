//! The data path: accept a client (and, with `[tls]`, finish its TLS
//! handshake), pick a backend (retrying the next one when a connect fails),
//! then copy bytes both ways untouched until either side is done, the idle
//! timeout fires, a drain times out or shutdown's grace ends.
//!
//! The copy reads into a small buffer and writes it out. On Linux, a plain
//! (not TLS) direction that fills that buffer on a read is moving bulk
//! data, and from then on it splices (`splice(2)`, as HAProxy does):
//! socket to pipe to socket, the bytes never copied into user space.

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
    // Linux copies TCP_NODELAY from the listener to every accepted socket:
    // set once here, it spares a `setsockopt` per connection.
    let nodelay_inherited =
        cfg!(target_os = "linux") && socket2::SockRef::from(&listener).set_nodelay(true).is_ok();
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
                shared.tracker.spawn(handle_client(
                    task_shared,
                    client,
                    peer,
                    nodelay_inherited,
                    span,
                ));
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

/// Polls `inner` on its first poll and then only after `inner` itself
/// asked for it (woke the task), not on every wake-up of the task.
///
/// For the stop signals of a connection, which are shared: polling a
/// pending `CancellationToken::cancelled()` takes the token's two mutexes,
/// the same ones for every connection of a backend (drain) or of the
/// balancer (shutdown). Polled on every wake-up, that is four contended
/// locks per message on a busy keep-alive connection.
struct WokenOnly<F> {
    inner: F,
    flag: Arc<WakeFlag>,
    first: bool,
}

/// `inner`'s waker: notes that `inner` wants a poll and wakes the task.
#[derive(Default)]
struct WakeFlag {
    woken: std::sync::atomic::AtomicBool,
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> WokenOnly<F> {
    fn new(inner: F) -> Self {
        Self {
            inner,
            flag: Arc::default(),
            first: true,
        }
    }
}

impl<F: Future + Unpin> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Cheap when the task's waker is unchanged (it is compared, not cloned).
        this.flag.task.register(cx.waker());
        if !std::mem::take(&mut this.first) && !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = std::task::Waker::from(this.flag.clone());
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&waker))
    }
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
///
/// `local` is looked up only for such a backend: a `getsockname` per
/// connection is a syscall the common case does not need.
async fn connect_backend(
    shared: &Shared,
    client: SocketAddr,
    local: impl Fn() -> SocketAddr,
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
                    .write_all(&proxy_header::proxy(client, local()))
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
async fn handle_client(
    shared: Arc<Shared>,
    client: TcpStream,
    peer: SocketAddr,
    nodelay_inherited: bool,
    span: Span,
) {
    if !nodelay_inherited {
        let _ = client.set_nodelay(true);
    }
    if shared.tls.is_none() {
        return serve(shared, client, peer, span).await;
    }
    // Boxed: the handshake and a TLS stream (rustls state) would make every
    // connection's future several KiB, which spawning copies around even
    // for plain TCP (`memmove` was 3 % of a plain connect's CPU).
    Box::pin(handle_tls(shared, client, peer, span)).await
}

/// The TLS handshake, then [`serve`].
async fn handle_tls(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, span: Span) {
    let Some(tls) = &shared.tls else {
        return;
    };
    let acceptor = tls.acceptor();
    let handshake = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(client)) => r,
        _ = shared.hard_stop.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => {
            tls.handshakes.fetch_add(1, Ordering::Relaxed);
            serve(shared.clone(), stream, peer, span).await;
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

    /// The TCP socket underneath (for its local address).
    fn tcp(&self) -> &TcpStream;

    /// The socket, when the bytes on it are the bytes the other side gets
    /// (so they may be spliced); `None` for TLS, whose bytes are records.
    fn plain(&self) -> Option<&TcpStream>;

    /// Whether closing needs a shutdown of its own: TLS ends with a
    /// close_notify, which dropping the socket does not send.
    const CLOSE_NEEDS_SHUTDOWN: bool = false;
}

impl ClientSide for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ClientSide for tokio_rustls::server::TlsStream<TcpStream> {
    const CLOSE_NEEDS_SHUTDOWN: bool = true;

    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

/// Connects a backend for the (handshaken) client and copies until done.
async fn serve(shared: Arc<Shared>, client: impl ClientSide, peer: SocketAddr, span: Span) {
    let local = || client.tcp().local_addr().unwrap_or(peer);
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
    let half_close = config.half_close;
    let response = config.response_timeout.map(|limit| ResponseWatch {
        limit,
        fall: config.health.fall,
        shared: shared.clone(),
    });
    let kill = state.kill_token();
    span.in_scope(|| debug!(%peer, "proxying"));
    let started = Instant::now();
    let stop = std::pin::pin!(async {
        tokio::select! {
            _ = kill.cancelled() => "drain timeout",
            _ = shared.hard_stop.cancelled() => "shutdown grace period over",
        }
    });
    let reason = tokio::select! {
        biased;
        r = pump(client, backend, &state, idle, half_close, response.as_ref()) => r,
        r = WokenOnly::new(stop) => r,
    };
    span.in_scope(|| debug!(reason, duration = ?started.elapsed(), "connection closed"));
    drop(slot);
}

/// Copies both ways until both directions reached EOF (half-closes are
/// passed on), one side fails, or nothing moved for `idle`. Without
/// `half_close`, the first EOF ends it: both sockets are closed, and bytes
/// the other side had not sent yet are dropped (Nginx's default).
async fn pump(
    mut client: impl ClientSide,
    mut backend: TcpStream,
    state: &BackendState,
    idle: Option<Duration>,
    half_close: bool,
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
            // Without half-closes, an EOF is passed on by closing, not by
            // a `shutdown` of its own.
            if !up.finished {
                let other = down.finished || !half_close;
                if let Poll::Ready(r) = up.poll(cx, &mut client, &mut backend, other) {
                    r?;
                }
            }
            if !down.finished && (half_close || !up.finished) {
                let other = up.finished || !half_close;
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
            let done = if half_close {
                up.finished && down.finished
            } else {
                up.finished || down.finished
            };
            if done {
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
    /// Set once this direction moves bulk data through a pipe instead of
    /// `buf`. Small messages (chat traffic) never get one: a pipe costs
    /// two descriptors and three syscalls, and saves nothing on 64 bytes.
    #[cfg(target_os = "linux")]
    pipe: Option<splice::Pipe>,
    /// A pipe was tried (and is in use, or could not be had): not again.
    #[cfg(target_os = "linux")]
    pipe_tried: bool,
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
            #[cfg(target_os = "linux")]
            pipe: None,
            #[cfg(target_os = "linux")]
            pipe_tried: false,
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
            #[cfg(target_os = "linux")]
            if let Some(pipe) = &mut self.pipe {
                ready!(pipe.poll_drain(cx, plain(to)?))?;
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
            #[cfg(target_os = "linux")]
            if let Some(pipe) = &mut self.pipe {
                // The buffer's last bytes are out: it is not needed any more.
                self.buf = Vec::new();
                let n = ready!(pipe.poll_fill(cx, plain(from)?))?;
                self.moved(n);
                continue;
            }
            if self.buf.capacity() == 0 {
                ready!(from.poll_readable(cx))?;
                self.buf.reserve_exact(BUF_SIZE);
            }
            let n = ready!(poll_read_buf(Pin::new(&mut *from), cx, &mut self.buf))?;
            self.moved(n);
            #[cfg(target_os = "linux")]
            if n == self.buf.capacity() && !self.pipe_tried {
                // A full buffer: bulk data. Splice from now on, once this
                // buffer is out (bytes stay in order).
                self.pipe_tried = true;
                if from.plain().is_some() && to.plain().is_some() {
                    match splice::Pipe::new() {
                        Ok(pipe) => self.pipe = Some(pipe),
                        Err(e) => debug!(error = %e, "no pipe for splicing; copying"),
                    }
                }
            }
        }
    }

    /// Books `n` bytes read from the source (0: its EOF).
    fn moved(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
            return;
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

/// The plain socket of a side a pipe was set up for (only ever both plain).
#[cfg(target_os = "linux")]
fn plain(side: &impl ClientSide) -> std::io::Result<&TcpStream> {
    side.plain()
        .ok_or_else(|| std::io::Error::other("splicing a TLS stream"))
}

/// splice(2) through a pipe: the kernel moves page references from the
/// source socket into the pipe and from the pipe into the destination
/// socket, without the two copies through a user-space buffer. The pipe
/// is the bounded buffer (the kernel's default 16 pages); it is filled only
/// when empty, so bytes stay in order and `poll_fill`'s EAGAIN always means
/// the socket has nothing (not that the pipe is full).
#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::task::{ready, Context, Poll};

    use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Most bytes moved by one splice: the default pipe capacity.
    const CHUNK: usize = 64 * 1024;

    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Bytes in the pipe, not yet spliced out.
        len: usize,
    }

    impl Pipe {
        pub fn new() -> io::Result<Self> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            Ok(Self {
                read,
                write,
                len: 0,
            })
        }

        /// Splices what `from` has into the (empty) pipe; 0 at EOF.
        pub fn poll_fill(
            &mut self,
            cx: &mut Context<'_>,
            from: &TcpStream,
        ) -> Poll<io::Result<usize>> {
            debug_assert_eq!(self.len, 0);
            loop {
                ready!(from.poll_read_ready(cx))?;
                // tokio clears the readiness on WouldBlock and waits for the next edge.
                let spliced = from.try_io(Interest::READABLE, || {
                    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
                    Ok(splice(from, None, &self.write, None, CHUNK, flags)?)
                });
                match spliced {
                    Ok(n) => {
                        self.len = n;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }

        /// Splices the pipe's bytes into `to` until it is empty.
        pub fn poll_drain(&mut self, cx: &mut Context<'_>, to: &TcpStream) -> Poll<io::Result<()>> {
            while self.len > 0 {
                ready!(to.poll_write_ready(cx))?;
                let spliced = to.try_io(Interest::WRITABLE, || {
                    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
                    Ok(splice(&self.read, None, to, None, self.len, flags)?)
                });
                match spliced {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => self.len -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            Poll::Ready(Ok(()))
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

#[cfg(test)]
mod tests {
    /// What `accept_loop` relies on to skip a `setsockopt` per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket2::SockRef::from(&listener).set_nodelay(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// Spawning moves each connection's future around by value: the TLS
    /// path (handshake, rustls state) is boxed so that a plain connection's
    /// future stays small (7.6 KiB before, `memmove` 3 % of a connect).
    #[tokio::test]
    async fn a_plain_connections_future_stays_small() {
        let config = crate::config::Config::parse(
            "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        let shared = std::sync::Arc::new(crate::shared::Shared::new(config, None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = client.local_addr().unwrap();
        let f = super::handle_client(shared, client, peer, true, tracing::Span::none());
        let size = std::mem::size_of_val(&f);
        assert!(size <= 3 * 1024, "{size} bytes");
    }

    /// A connection's stop signal is polled once, then only when it fired,
    /// however often the connection's task wakes for its traffic.
    #[test]
    fn woken_only_polls_its_future_only_when_that_future_woke() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll};

        let token = tokio_util::sync::CancellationToken::new();
        let polls = AtomicUsize::new(0);
        let mut cancelled = std::pin::pin!(token.cancelled());
        let inner = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            cancelled.as_mut().poll(cx)
        });
        let mut gate = std::pin::pin!(super::WokenOnly::new(inner));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10 {
            assert_eq!(gate.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        token.cancel();
        assert_eq!(gate.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
