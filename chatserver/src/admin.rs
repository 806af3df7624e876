//! The admin HTTP server (`--admin ADDR`): `/metrics` in Prometheus text,
//! `/healthz` (the process answers) and `/readyz` (it should get new
//! clients: the database answers, Redis too in cluster mode, and it is not
//! shutting down).
//!
//! The same accept loop and token check as the balancer's admin server
//! ([`adminhttp`]): headers within 5 s, one request per connection, each
//! connection bounded in time, at most 32 open (more are closed at once),
//! and with `--admin-token` every request needs `Authorization: Bearer
//! TOKEN`. Config validation keeps it on loopback unless a token is set.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Secret;
use crate::context::Context;
use crate::readiness;

/// The OpenMetrics text content type that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    ctx: Arc<Context>,
    token: Option<Secret>,
}

/// Serves the admin endpoints on `listener` until the task is aborted.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener, token: Option<Secret>) {
    let counters = ctx.metrics.admin.clone();
    let state = AdminState { ctx, token };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    adminhttp::serve(listener, app, counters).await
}

/// With a token configured, lets only requests bearing it through.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let token = state.token.as_ref().map(Secret::expose);
    if let Some(refused) = adminhttp::bearer_refusal(&request, token, &state.ctx.metrics.admin) {
        return refused;
    }
    next.run(request).await
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
    match readiness::not_ready(&state.ctx).await {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}
