//! The point-in-time view behind `/status` (JSON) and `/metrics`, read from
//! the shared state's atomics, its snapshot and its draining backends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::backend::BackendState;
use crate::shared::Shared;

/// The JSON of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub listen: String,
    pub uptime_secs: u64,
    /// Bumped by every reload that changed something.
    pub config_generation: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_error: Option<String>,
    pub clients_total: u64,
    /// Clients closed because no backend accepted them.
    pub clients_rejected: u64,
    /// Failed `accept` calls (out of file descriptors, say).
    pub accept_errors: u64,
    /// Admin connections closed at once because the cap was reached.
    pub admin_refused: u64,
    /// Admin requests without the right bearer token.
    pub admin_unauthorized: u64,
    /// With `[tls]`: handshakes and certificate reloads.
    pub tls: Option<TlsStatus>,
    pub backends: Vec<BackendStatus>,
}

/// TLS counters in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TlsStatus {
    pub handshakes: u64,
    /// Failed or timed-out handshakes (logged at debug only).
    pub handshake_failures: u64,
    /// Certificate loads after start-up.
    pub reloads: u64,
    /// Certificate reloads rejected (the previous pair stayed).
    pub reload_failures: u64,
}

/// One backend in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub address: String,
    /// False for a removed backend whose connections are draining.
    pub in_config: bool,
    pub up: bool,
    pub weight: u32,
    /// Weight used for new connections now: 0 when down, ramping under slow start.
    pub effective_weight: u32,
    pub max_connections: Option<u32>,
    pub active: u64,
    pub total: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    pub connect_failures: u64,
    pub check_failures: u64,
    /// Connections that sent bytes and got nothing back within `response_timeout`.
    pub response_timeouts: u64,
    /// Connects and checks that failed on the balancer's side (not counted against it).
    pub local_errors: u64,
}

impl Status {
    /// Reads `shared` now: the configured backends in config order, then
    /// the removed ones still draining. Draining backends whose last
    /// connection has closed are dropped from the registry on the way.
    pub fn of(shared: &Shared) -> Self {
        let snapshot = shared.snapshot();
        let now = Instant::now();
        let mut backends: Vec<BackendStatus> = snapshot
            .members
            .iter()
            .map(|m| {
                BackendStatus::new(
                    &m.state,
                    true,
                    m.weight,
                    snapshot.effective_weight(m, now),
                    m.max_connections,
                )
            })
            .collect();
        {
            let mut reg = shared.registry.lock().unwrap();
            reg.draining.retain(|s| s.active() > 0 && s.is_removed());
            backends.extend(
                reg.draining
                    .iter()
                    .map(|s| BackendStatus::new(s, false, 0, 0, None)),
            );
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            listen: shared
                .listen_addr
                .get()
                .map(|a| a.to_string())
                .unwrap_or_else(|| snapshot.config.listen.clone()),
            uptime_secs: shared.started.elapsed().as_secs(),
            config_generation: snapshot.generation,
            reloads_ok: get(&shared.reloads.ok),
            reloads_failed: get(&shared.reloads.failed),
            last_reload_error: shared.reloads.last_error.lock().unwrap().clone(),
            clients_total: get(&shared.clients.total),
            clients_rejected: get(&shared.clients.rejected),
            accept_errors: get(&shared.clients.accept_errors),
            admin_refused: get(&shared.admin.refused),
            admin_unauthorized: get(&shared.admin.unauthorized),
            tls: shared.tls.as_ref().map(|t| TlsStatus {
                handshakes: get(&t.handshakes),
                handshake_failures: get(&t.handshake_failures),
                reloads: get(&t.reloads),
                reload_failures: get(&t.reload_failures),
            }),
            backends,
        }
    }
}

impl BackendStatus {
    fn new(
        s: &BackendState,
        in_config: bool,
        weight: u32,
        effective_weight: u32,
        max_connections: Option<u32>,
    ) -> Self {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            address: s.address.clone(),
            in_config,
            up: s.is_up(),
            weight,
            effective_weight,
            max_connections,
            active: get(&s.stats.active),
            total: get(&s.stats.total),
            bytes_to_backend: get(&s.stats.bytes_to_backend),
            bytes_to_client: get(&s.stats.bytes_to_client),
            connect_failures: get(&s.stats.connect_failures),
            check_failures: get(&s.stats.check_failures),
            response_timeouts: get(&s.stats.response_timeouts),
            local_errors: get(&s.stats.local_errors),
        }
    }
}
