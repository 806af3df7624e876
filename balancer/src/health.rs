//! Active health checks: one task per backend, a TCP connect or a chat-level
//! PING → PONG at every interval, feeding the rise/fall counters. A PONG
//! carrying `"ready":false` (the server lost its database or Redis, or is
//! shutting down) is a failed check, so such a server leaves rotation.
//!
//! Checks start on a fixed beat (one every `interval`, whatever the last one
//! took; `timeout` is at most `interval`), so a backend that stops answering
//! is out within `fall × interval` plus the phase of the first check. A check
//! that failed for a local reason (no file descriptor, no memory, the runtime
//! too late to see the answer) proves nothing either way and is not counted.
//!
//! The task reads `[health]` from the current snapshot on every round, so a
//! reload that changes the interval or the kind needs no task restart; the
//! task ends when its backend leaves the config or the balancer stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protocol::{parse_server_frame, FrameCodec, Reply, Request, ServerFrame, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{BackendState, Transition};
use crate::config::HealthKind;
use crate::fault::{self, Fault, Lag};
use crate::proxy_header;
use crate::shared::Shared;

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("io: {0}")]
    Io(std::io::Error),
    #[error("closed before PONG")]
    Closed,
    #[error("PONG says the server is not ready")]
    NotReady,
    #[error("bad frame: {0}")]
    Frame(#[from] protocol::FrameError),
}

/// Largest frame a check reads while waiting for PONG; a PONG is tiny.
const CHECK_MAX_FRAME: usize = 64 * 1024;

impl CheckError {
    /// Whether the backend is to blame; `lag` tells whether a timeout may
    /// have been the balancer's own lateness.
    pub fn fault(&self, lag: &Lag, timeout: Duration) -> Fault {
        match self {
            CheckError::Timeout => lag.timeout_fault(timeout),
            CheckError::Connect(e) | CheckError::Io(e) => fault::of_io(e),
            CheckError::Closed | CheckError::NotReady | CheckError::Frame(_) => Fault::Backend,
        }
    }
}

/// Runs one check against `address`, bounded by `timeout` as a whole.
pub async fn check(kind: HealthKind, address: &str, timeout: Duration) -> Result<(), CheckError> {
    check_with(kind, address, timeout, false).await
}

/// [`check`], first sending a PROXY protocol v2 LOCAL header when the
/// backend expects one (the check is the balancer's own connection, not a
/// client's, so it names no address).
pub async fn check_with(
    kind: HealthKind,
    address: &str,
    timeout: Duration,
    proxy_protocol: bool,
) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, check_inner(kind, address, proxy_protocol))
        .await
        .map_err(|_| CheckError::Timeout)?
}

async fn check_inner(
    kind: HealthKind,
    address: &str,
    proxy_protocol: bool,
) -> Result<(), CheckError> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(CheckError::Connect)?;
    stream.set_nodelay(true).map_err(CheckError::Io)?;
    if proxy_protocol {
        stream
            .write_all(&proxy_header::local())
            .await
            .map_err(CheckError::Io)?;
    }
    if kind == HealthKind::Tcp {
        return Ok(());
    }
    stream
        .write_all(&Request::Ping.encode(Version::V2, None))
        .await
        .map_err(CheckError::Io)?;
    let mut frames = FramedRead::new(stream, FrameCodec::new(CHECK_MAX_FRAME));
    // Frames other than PONG (a push, say) are skipped; the timeout bounds the wait.
    while let Some(frame) = frames.next().await {
        match pong_ready(&frame?) {
            Some(true) => return Ok(()),
            Some(false) => return Err(CheckError::NotReady),
            None => {}
        }
    }
    Err(CheckError::Closed)
}

/// Checks `state` every interval until `stop` is cancelled.
pub async fn run_checker(shared: Arc<Shared>, state: Arc<BackendState>, stop: CancellationToken) {
    let mut next = tokio::time::Instant::now() + shared.snapshot().config.health.interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let snapshot = shared.snapshot();
        let health = snapshot.config.health.clone();
        let proxy_protocol = snapshot
            .members
            .iter()
            .find(|m| Arc::ptr_eq(&m.state, &state))
            .is_some_and(|m| m.proxy_protocol);
        drop(snapshot);
        // The next check is due one interval after this one started; a
        // runtime so late that it missed beats starts afresh from now.
        next = (next + health.interval).max(tokio::time::Instant::now());
        // Never longer than the beat, so checks do not overlap or drift.
        let timeout = health.timeout.min(health.interval);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = check_with(health.kind, &state.address, timeout, proxy_protocol) => r,
        };
        let result = match result {
            Err(e) if e.fault(&shared.lag, timeout) == Fault::Local => {
                state.stats.local_errors.fetch_add(1, Ordering::Relaxed);
                debug!(backend = %state.address, error = %e, "health check failed on our side; not counted");
                continue;
            }
            r => r,
        };
        match result {
            Ok(()) => {
                debug!(backend = %state.address, "health check ok");
                if state.record_success(health.rise, health.kind == HealthKind::Chat)
                    == Transition::WentUp
                {
                    info!(backend = %state.address, "backend is up");
                }
            }
            Err(e) => {
                state.stats.check_failures.fetch_add(1, Ordering::Relaxed);
                debug!(backend = %state.address, error = %e, "health check failed");
                if state.record_failure(health.fall) == Transition::WentDown {
                    warn!(backend = %state.address, error = %e, "backend is down");
                }
            }
        }
    }
}

/// For a PONG, whether the server says it is ready (a PONG without
/// `ready` is); `None` for any other frame.
fn pong_ready(frame: &[u8]) -> Option<bool> {
    match parse_server_frame(frame).map(|incoming| incoming.frame) {
        Ok(ServerFrame::Reply(Reply::Pong(pong))) => Some(pong.ready),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::pong_ready;

    #[test]
    fn a_pong_passes_unless_it_says_not_ready() {
        assert_eq!(
            pong_ready(br#"{"msgid":13,"server":"a","load":1}"#),
            Some(true)
        );
        assert_eq!(
            pong_ready(br#"{"msgid":13,"server":"a","load":1,"ready":false}"#),
            Some(false)
        );
        assert_eq!(
            pong_ready(br#"{"msgid":13,"server":"a","load":1,"ready":true}"#),
            Some(true)
        );
        assert_eq!(pong_ready(br#"{"msgid":11,"errno":0}"#), None);
    }
}
