//! The admin HTTP servers' common ground (balancer and chat server): an
//! accept loop that bounds every peer, and the bearer-token check.
//!
//! An admin port faces whoever can reach it, so: headers must arrive within
//! [`HEADER_TIMEOUT`], a connection serves one request and lives at most
//! [`CONNECTION_LIFETIME`], at most [`MAX_CONNECTIONS`] are open (more are
//! closed at once, counted). A few descriptors are held in reserve so the
//! endpoints still answer when the data path has run the process out of them.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Time a client gets to send its request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one admin connection, request and response included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(15);
/// Admin connections open at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 32;
/// Descriptors held back for the admin server when the process runs out.
const RESERVED_FDS: usize = 2;
/// Pause after an accept error that the reserve could not help with.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What an admin server turned away.
#[derive(Debug, Default)]
pub struct AdminCounters {
    /// Connections closed on accept because the cap was reached.
    pub refused: AtomicU64,
    /// Requests without the right bearer token.
    pub unauthorized: AtomicU64,
}

/// Spare descriptors (`/dev/null` opened read-only): closing one makes room
/// to accept an admin connection when the data path used up the rest.
struct Reserve(Vec<std::fs::File>);

impl Reserve {
    fn fill(&mut self) {
        while self.0.len() < RESERVED_FDS {
            match std::fs::File::open("/dev/null") {
                Ok(f) => self.0.push(f),
                Err(_) => return,
            }
        }
    }
}

fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Serves `app` on `listener` under the limits above until the task is
/// aborted; `counters` hold the connections refused at the cap.
pub async fn serve(listener: TcpListener, app: Router, counters: Arc<AdminCounters>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut reserve = Reserve(Vec::new());
    reserve.fill();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if out_of_fds(&e) && !reserve.0.is_empty() => {
                // Make room for this one; refilled once descriptors free up.
                reserve.0.pop();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                reserve.fill();
                continue;
            }
        };
        reserve.fill();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

/// With `token` set, the 401 answer unless `request` bears it (compared
/// in time independent of where they differ), counted in `counters`;
/// `None` lets the request through.
pub fn bearer_refusal(
    request: &Request,
    token: Option<&str>,
    counters: &AdminCounters,
) -> Option<Response> {
    let token = token?;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response(),
    )
}

fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
