//! The data path: accept a client, pick a backend (retrying the next one when
//! a connect fails), then copy bytes both ways untouched until either side is
//! done, the idle timeout fires, a drain times out or shutdown's grace ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument, Span};

use crate::backend::{BackendState, Transition};
use crate::Shared;

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
                shared.clients_total.fetch_add(1, Ordering::Relaxed);
                let span = info_span!("conn", %peer, backend = tracing::field::Empty);
                let task_shared = shared.clone();
                shared
                    .tracker
                    .spawn(handle_client(task_shared, client, peer, span));
            }
            Err(e) => {
                // Errors such as EMFILE would spin the loop; wait, growing the pause.
                warn!(error = %e, "accept failed; pausing {backoff:?}");
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

/// Tries backends until one accepts; `None` when none did.
async fn connect_backend(shared: &Shared) -> Option<(TcpStream, Slot)> {
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
        let result =
            tokio::time::timeout(config.connect_timeout, TcpStream::connect(address)).await;
        let error = match result {
            Ok(Ok(stream)) => {
                member.state.record_connect_success();
                return Some((stream, slot));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timed out after {:?}", config.connect_timeout),
        };
        drop(slot);
        member
            .state
            .stats
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
        warn!(backend = %address, %error, attempt = attempts, "backend connect failed; trying the next");
        if member.state.record_failure(config.health.fall) == Transition::WentDown {
            warn!(backend = %address, "backend is down (client connects failed)");
        }
    }
    None
}

/// The span is entered while connecting and for the closing log, not
/// around the copy: entering it on every wake-up of a busy connection cost
/// more than the copy itself.
async fn handle_client(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, span: Span) {
    let Some((backend, slot)) = connect_backend(&shared).instrument(span.clone()).await else {
        shared.clients_rejected.fetch_add(1, Ordering::Relaxed);
        span.in_scope(|| warn!("no backend accepted the connection; closing the client"));
        return;
    };
    let state = slot.0.clone();
    span.record("backend", state.address.as_str());
    state.stats.total.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let idle = shared.snapshot().config.idle_timeout;
    let kill = state.kill_token();
    span.in_scope(|| debug!(%peer, "proxying"));
    let started = Instant::now();
    let reason = tokio::select! {
        r = pump(client, backend, &state, idle) => r,
        _ = kill.cancelled() => "drain timeout",
        _ = shared.hard_stop.cancelled() => "shutdown grace period over",
    };
    span.in_scope(|| debug!(reason, duration = ?started.elapsed(), "connection closed"));
    drop(slot);
}

/// Copies both ways until both directions reached EOF (half-closes are
/// passed on), one side fails, or nothing moved for `idle`.
async fn pump(
    client: TcpStream,
    backend: TcpStream,
    state: &BackendState,
    idle: Option<Duration>,
) -> &'static str {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, shared by both directions.
    let last = AtomicU64::new(0);
    let mut client = Counted {
        stream: client,
        counter: &state.stats.bytes_to_backend,
        last: &last,
        start,
    };
    let mut backend = Counted {
        stream: backend,
        counter: &state.stats.bytes_to_client,
        last: &last,
        start,
    };
    let copy = async {
        match tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut backend,
            BUF_SIZE,
            BUF_SIZE,
        )
        .await
        {
            Ok(_) => "closed",
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

/// A socket that counts the bytes read from it (which the copy then writes
/// to the other side) and notes when bytes last moved, for the idle timeout.
struct Counted<'a> {
    stream: TcpStream,
    counter: &'a AtomicU64,
    last: &'a AtomicU64,
    start: Instant,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.counter.fetch_add(read as u64, Ordering::Relaxed);
            self.last
                .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
