//! The state a running balancer's tasks share behind one `Arc`: the backend
//! set, the stop signals, the counters, and what start-up fixed.
//!
//! Only data and small accessors live here; the modules that change it
//! (reload application, the data path) and read it (status) sit above.

pub use adminhttp::AdminCounters;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{BackendState, Snapshot};
use crate::config::Config;
use crate::fault::Lag;
use crate::tls::TlsState;
use tokio_rustls::TlsAcceptor;

/// State shared by the accept loop, connections, health tasks, the reloader
/// and the admin server.
#[derive(Debug)]
pub struct Shared {
    /// What new connections pick from; a reload replaces it whole, so the
    /// data path loads it and never locks.
    snapshot: ArcSwap<Snapshot>,
    /// Only touched at start-up, by reloads and by status reads, never on
    /// the data path, and never held across an await.
    pub registry: Mutex<Registry>,
    /// Stops accepting, health checks and reloads.
    pub shutdown: CancellationToken,
    /// Ends established connections when the grace period is over.
    pub hard_stop: CancellationToken,
    /// Every client connection, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub clients: ClientCounters,
    /// How late the runtime runs: a timeout during a stall is not the backend's fault.
    pub lag: Lag,
    pub reloads: ReloadCounters,
    pub admin: Arc<AdminCounters>,
    /// With `[tls]`: the acceptor in use and the TLS counters.
    pub tls: Option<TlsState>,
    /// When the balancer was built; `/status` reports the uptime.
    pub started: Instant,
    /// The bound listen address, set once when `run` starts. Until then
    /// `/status` shows the configured one (port 0 has no number yet).
    pub listen_addr: OnceLock<SocketAddr>,
}

impl Shared {
    /// One state per configured backend, each with the token that will stop
    /// its health task; no task runs yet. `tls` is the acceptor loaded from
    /// `config.tls`.
    pub fn new(config: Config, tls: Option<TlsAcceptor>) -> Self {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        for b in &config.backends {
            registry.current.insert(
                b.address.clone(),
                (BackendState::new(&b.address), shutdown.child_token()),
            );
        }
        let snapshot = Snapshot::build(Arc::new(config), 0, |b| {
            registry.current[&b.address].0.clone()
        });
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry: Mutex::new(registry),
            shutdown,
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            clients: ClientCounters::default(),
            lag: Lag::default(),
            reloads: ReloadCounters::default(),
            admin: Arc::default(),
            tls: tls.map(TlsState::new),
            started: Instant::now(),
            listen_addr: OnceLock::new(),
        }
    }

    /// The backend list new connections pick from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a new backend list; connections that picked from the old
    /// one keep it until they are done picking.
    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// Backend states by address: the current ones with the token that stops
/// their health task, and removed ones still carrying connections.
#[derive(Debug, Default)]
pub struct Registry {
    pub current: HashMap<String, (Arc<BackendState>, CancellationToken)>,
    pub draining: Vec<Arc<BackendState>>,
}

/// Client connections seen by the accept loop, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ClientCounters {
    pub total: AtomicU64,
    /// Clients closed because no backend accepted them.
    pub rejected: AtomicU64,
    /// Failed `accept` calls (EMFILE and the like), each followed by a pause.
    pub accept_errors: AtomicU64,
}

/// Outcomes of config reloads, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Why the last reload was rejected; cleared by the next good one.
    pub last_error: Mutex<Option<String>>,
}

impl ReloadCounters {
    pub fn record_ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = None;
    }

    pub fn record_failure(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(error);
    }
}
