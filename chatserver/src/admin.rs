//! The admin HTTP server (`--admin ADDR`): `/metrics` in Prometheus text,
//! `/healthz` (the process answers) and `/readyz` (it should get new
//! clients: the database answers, Redis too in cluster mode, and it is not
//! shutting down).
//!
//! The same conventions as the balancer's admin server: headers within
//! [`HEADER_TIMEOUT`], one request per connection, each connection bounded
//! by [`CONNECTION_LIFETIME`], at most [`MAX_CONNECTIONS`] open (more are
//! closed at once), and with `--admin-token` every request needs
//! `Authorization: Bearer TOKEN`. Config validation keeps it on loopback
//! unless a token is set.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Secret;
use crate::context::Context;

/// Time a client gets to send its request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one admin connection, request and response included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(15);
/// Admin connections open at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 32;
/// How long `/readyz` waits for the database.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
/// The OpenMetrics text content type that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    ctx: Arc<Context>,
    token: Option<Secret>,
}

/// Serves the admin endpoints on `listener` until the task is aborted.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener, token: Option<Secret>) {
    let state = AdminState { ctx, token };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
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

/// With a token configured, lets only requests bearing it through.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.expose().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.ctx.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 `ready`, or 503 with the reason.
async fn readyz(State(state): State<AdminState>) -> Response {
    match not_ready(&state.ctx).await {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// Why the server should not get new clients now, if it should not.
async fn not_ready(ctx: &Context) -> Option<String> {
    if ctx.shutting_down.load(Ordering::Relaxed) {
        return Some("shutting down".into());
    }
    match tokio::time::timeout(READY_CHECK_TIMEOUT, ctx.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Some(format!("database unreachable: {error}")),
        Err(_) => return Some("database unreachable: no answer in time".into()),
    }
    if !ctx.bus.reachable() {
        return Some("redis unreachable".into());
    }
    None
}
