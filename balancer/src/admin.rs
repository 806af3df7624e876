//! The admin HTTP server: `/metrics` in Prometheus text and `/status` in JSON.
//!
//! It faces whoever can reach its port, so every peer is bounded by the
//! accept loop shared with the chat server's admin server ([`adminhttp`]):
//! headers must arrive within [`HEADER_TIMEOUT`], a connection serves one
//! request and lives at most [`CONNECTION_LIFETIME`], at most
//! [`MAX_CONNECTIONS`] are open (more are closed at once, counted), and with
//! `admin_token` set every request needs `Authorization: Bearer TOKEN`. A few
//! descriptors are held in reserve so `/status` and `/metrics` still answer
//! when the data path has run the process out of them.
//!
//! Metrics are read from the backends' own atomic counters at scrape time by
//! a `prometheus-client` collector, so the data path never touches a metrics
//! registry and removed backends simply disappear from the output once they
//! have drained.

use std::fmt;
use std::sync::Arc;

pub use adminhttp::{CONNECTION_LIFETIME, HEADER_TIMEOUT, MAX_CONNECTIONS};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::shared::Shared;
use crate::status::{BackendStatus, Status};

/// The OpenMetrics text content type that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

/// Serves the admin endpoints on `listener` until the task is aborted,
/// under the shared limits of [`adminhttp`].
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BalancerCollector {
        shared: shared.clone(),
    }));
    let state = AdminState {
        shared: shared.clone(),
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    adminhttp::serve(listener, app, shared.admin.clone()).await
}

/// With `admin_token` configured, lets only requests bearing it through.
/// The token is read from the running config, so a reload changes it.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let config = state.shared.snapshot().config.clone();
    let token = config.admin_token.as_ref().map(|t| t.expose());
    if let Some(refused) = adminhttp::bearer_refusal(&request, token, &state.shared.admin) {
        return refused;
    }
    next.run(request).await
}

async fn status(State(state): State<AdminState>) -> Json<Status> {
    Json(Status::of(&state.shared))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Turns a [`Status`] into metric families at scrape time.
struct BalancerCollector {
    shared: Arc<Shared>,
}

impl fmt::Debug for BalancerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BalancerCollector")
    }
}

fn backend_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    backends: &[BackendStatus],
    value: impl Fn(&BackendStatus) -> i64,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for b in backends {
        let labels = [("backend", b.address.as_str())];
        ConstGauge::new(value(b)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn backend_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    backends: &[BackendStatus],
    value: impl Fn(&BackendStatus) -> u64,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for b in backends {
        let labels = [("backend", b.address.as_str())];
        ConstCounter::new(value(b)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn plain_counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for BalancerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = Status::of(&self.shared);
        let b = &s.backends;
        backend_gauge(
            &mut e,
            "balancer_backend_up",
            "1 when the backend is in rotation",
            b,
            |b| i64::from(b.up),
        )?;
        backend_gauge(
            &mut e,
            "balancer_backend_in_config",
            "0 for a removed backend still draining",
            b,
            |b| i64::from(b.in_config),
        )?;
        backend_gauge(
            &mut e,
            "balancer_backend_weight",
            "Configured weight",
            b,
            |b| i64::from(b.weight),
        )?;
        backend_gauge(
            &mut e,
            "balancer_backend_effective_weight",
            "Weight for new connections now (0 when down, ramping under slow start)",
            b,
            |b| i64::from(b.effective_weight),
        )?;
        backend_gauge(
            &mut e,
            "balancer_backend_active_connections",
            "Open proxied connections",
            b,
            |b| b.active as i64,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_connections",
            "Proxied connections",
            b,
            |b| b.total,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_bytes_to_backend",
            "Bytes sent from clients to the backend",
            b,
            |b| b.bytes_to_backend,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_bytes_to_client",
            "Bytes sent from the backend to clients",
            b,
            |b| b.bytes_to_client,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_connect_failures",
            "Client connections whose connect to the backend failed",
            b,
            |b| b.connect_failures,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_check_failures",
            "Failed health checks",
            b,
            |b| b.check_failures,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_response_timeouts",
            "Connections that sent bytes and got none back within response_timeout",
            b,
            |b| b.response_timeouts,
        )?;
        backend_counter(
            &mut e,
            "balancer_backend_local_errors",
            "Connects and checks that failed on the balancer's side, not held against the backend",
            b,
            |b| b.local_errors,
        )?;
        plain_counter(
            &mut e,
            "balancer_accept_errors",
            "Failed accepts (EMFILE and the like), each followed by a pause",
            s.accept_errors,
        )?;
        plain_counter(
            &mut e,
            "balancer_admin_refused",
            "Admin connections closed at once because MAX_CONNECTIONS were open",
            s.admin_refused,
        )?;
        plain_counter(
            &mut e,
            "balancer_admin_unauthorized",
            "Admin requests without the right bearer token",
            s.admin_unauthorized,
        )?;
        if let Some(t) = &s.tls {
            for (name, help, v) in [
                (
                    "balancer_tls_handshakes",
                    "Completed TLS handshakes",
                    t.handshakes,
                ),
                (
                    "balancer_tls_handshake_failures",
                    "Failed or timed-out TLS handshakes",
                    t.handshake_failures,
                ),
                (
                    "balancer_tls_reloads",
                    "Certificate loads after start-up",
                    t.reloads,
                ),
                (
                    "balancer_tls_reload_failures",
                    "Rejected certificate reloads (the previous pair stayed)",
                    t.reload_failures,
                ),
            ] {
                plain_counter(&mut e, name, help, v)?;
            }
        }
        plain_counter(
            &mut e,
            "balancer_client_connections",
            "Accepted client connections",
            s.clients_total,
        )?;
        plain_counter(
            &mut e,
            "balancer_client_rejected",
            "Clients closed because no backend accepted them",
            s.clients_rejected,
        )?;
        plain_counter(
            &mut e,
            "balancer_reloads",
            "Applied config reloads",
            s.reloads_ok,
        )?;
        plain_counter(
            &mut e,
            "balancer_reload_failures",
            "Rejected config files",
            s.reloads_failed,
        )?;
        let g = ConstGauge::new(s.config_generation as i64);
        g.encode(e.encode_descriptor(
            "balancer_config_generation",
            "Reloads that changed the config",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}
