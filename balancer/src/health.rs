//! Active health checks: one task per backend, a TCP connect or a chat-level
//! PING → PONG at every interval, feeding the rise/fall counters.
//!
//! The task reads `[health]` from the current snapshot on every round, so a
//! reload that changes the interval or the kind needs no task restart; the
//! task ends when its backend leaves the config or the balancer stops.

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
    #[error("bad frame: {0}")]
    Frame(#[from] protocol::FrameError),
}

/// Largest frame a check reads while waiting for PONG; a PONG is tiny.
const CHECK_MAX_FRAME: usize = 64 * 1024;

/// Runs one check against `address`, bounded by `timeout` as a whole.
pub async fn check(kind: HealthKind, address: &str, timeout: Duration) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, check_inner(kind, address))
        .await
        .map_err(|_| CheckError::Timeout)?
}

async fn check_inner(kind: HealthKind, address: &str) -> Result<(), CheckError> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(CheckError::Connect)?;
    if kind == HealthKind::Tcp {
        return Ok(());
    }
    stream.set_nodelay(true).map_err(CheckError::Io)?;
    stream
        .write_all(&Request::Ping.encode(Version::V2, None))
        .await
        .map_err(CheckError::Io)?;
    let mut frames = FramedRead::new(stream, FrameCodec::new(CHECK_MAX_FRAME));
    // Frames other than PONG (a push, say) are skipped; the timeout bounds the wait.
    while let Some(frame) = frames.next().await {
        if is_pong(&frame?) {
            return Ok(());
        }
    }
    Err(CheckError::Closed)
}

/// Checks `state` every interval until `stop` is cancelled.
pub async fn run_checker(shared: Arc<Shared>, state: Arc<BackendState>, stop: CancellationToken) {
    loop {
        let health = shared.snapshot().config.health.clone();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(health.interval) => {}
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = check(health.kind, &state.address, health.timeout) => r,
        };
        match result {
            Ok(()) => {
                debug!(backend = %state.address, "health check ok");
                if state.record_success(health.rise) == Transition::WentUp {
                    info!(backend = %state.address, "backend is up");
                }
            }
            Err(e) => {
                state
                    .stats
                    .check_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(backend = %state.address, error = %e, "health check failed");
                if state.record_failure(health.fall) == Transition::WentDown {
                    warn!(backend = %state.address, error = %e, "backend is down");
                }
            }
        }
    }
}

/// True when `frame` is a PONG.
fn is_pong(frame: &[u8]) -> bool {
    matches!(
        parse_server_frame(frame).map(|incoming| incoming.frame),
        Ok(ServerFrame::Reply(Reply::Pong(_)))
    )
}
