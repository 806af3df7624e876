//! A layer-4 TCP load balancer for the ChatChat cluster: smooth weighted
//! round-robin over healthy backends, active and passive health checks, hot
//! reload, metrics, and graceful shutdown.
//!
//! `main` only parses flags and wires signals; everything else is reachable
//! from [`Balancer::run`], which tests drive in-process on port 0.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod health;
pub mod proxy;
pub mod reload;
pub mod selection;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::{BackendState, Snapshot};
use crate::config::Config;
use crate::reload::Diff;

/// How long connections get to close after the grace period ended and they
/// were told to stop; they stop at their next poll, so this is generous.
const HARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// Errors that stop the balancer (a failing connection never does).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Backend states by address: the current ones with the token that stops
/// their health task, and removed ones still carrying connections.
#[derive(Debug, Default)]
struct Registry {
    current: HashMap<String, (Arc<BackendState>, CancellationToken)>,
    draining: Vec<Arc<BackendState>>,
}

/// State shared by the accept loop, connections, health tasks, the reloader
/// and the admin server.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Only touched by reloads and status reads, never on the data path, and
    /// never held across an await.
    registry: Mutex<Registry>,
    /// Stops accepting, health checks and reloads.
    shutdown: CancellationToken,
    /// Ends established connections when the grace period is over.
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    /// Capacity 1: a pending reload reads the newest file, so more signals add nothing.
    reload_tx: mpsc::Sender<()>,
    reload_rx: Mutex<Option<mpsc::Receiver<()>>>,
    config_path: Option<PathBuf>,
    started: Instant,
    listen_addr: Mutex<Option<SocketAddr>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
    clients_total: AtomicU64,
    clients_rejected: AtomicU64,
}

impl Shared {
    /// The backend list new connections pick from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    fn record_reload_error(&self, error: String) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        *self.last_reload_error.lock().unwrap() = Some(error);
    }

    /// Applies a validated config: diff, carry states over by address, start
    /// and stop health tasks, swap the snapshot. Established connections are
    /// untouched; removed backends drain.
    fn apply(self: &Arc<Self>, mut new: Config) -> Diff {
        let old = self.snapshot();
        let d = reload::diff(&old.config, &new);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        *self.last_reload_error.lock().unwrap() = None;
        if d.is_empty() {
            return d;
        }
        if d.listen_changed {
            warn!(old = %old.config.listen, new = %new.listen, "`listen` changed: restart to use it; keeping the old address");
            new.listen = old.config.listen.clone();
        }
        if d.admin_changed {
            warn!(old = ?old.config.admin, new = ?new.admin, "`admin` changed: restart to use it; keeping the old address");
            new.admin = old.config.admin.clone();
        }
        for (address, from, to) in &d.reweighted {
            info!(backend = %address, from, to, "weight changed");
        }
        let mut to_spawn = Vec::new();
        let snapshot = {
            let mut reg = self.registry.lock().unwrap();
            for address in &d.removed {
                if let Some((state, stop)) = reg.current.remove(address) {
                    stop.cancel();
                    let generation = state.mark_removed();
                    info!(backend = %address, active = state.active(), "backend removed; its connections carry on");
                    if let Some(drain) = new.drain_timeout {
                        let state = state.clone();
                        let hard_stop = self.hard_stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = tokio::time::sleep(drain) => {
                                    if state.expire_drain(generation) && state.active() > 0 {
                                        warn!(backend = %state.address, "drain timeout: closing its remaining connections");
                                    }
                                }
                                _ = hard_stop.cancelled() => {}
                            }
                        });
                    }
                    reg.draining.push(state);
                }
            }
            for address in &d.added {
                let state = match reg.draining.iter().position(|s| &s.address == address) {
                    Some(i) => reg.draining.swap_remove(i),
                    None => BackendState::new(address),
                };
                state.mark_added();
                let stop = self.shutdown.child_token();
                to_spawn.push((state.clone(), stop.clone()));
                info!(backend = %address, "backend added");
                reg.current.insert(address.clone(), (state, stop));
            }
            reg.draining.retain(|s| s.active() > 0);
            let generation = old.generation + 1;
            Snapshot::build(Arc::new(new), generation, |b| {
                reg.current[&b.address].0.clone()
            })
        };
        self.snapshot.store(Arc::new(snapshot));
        for (state, stop) in to_spawn {
            tokio::spawn(health::run_checker(self.clone(), state, stop));
        }
        d
    }

    /// A point-in-time view for `/status` and tests.
    pub fn status(&self) -> Status {
        let snapshot = self.snapshot();
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
            let mut reg = self.registry.lock().unwrap();
            reg.draining.retain(|s| s.active() > 0 && s.is_removed());
            backends.extend(
                reg.draining
                    .iter()
                    .map(|s| BackendStatus::new(s, false, 0, 0, None)),
            );
        }
        Status {
            listen: self
                .listen_addr
                .lock()
                .unwrap()
                .map(|a| a.to_string())
                .unwrap_or_else(|| snapshot.config.listen.clone()),
            uptime_secs: self.started.elapsed().as_secs(),
            config_generation: snapshot.generation,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            last_reload_error: self.last_reload_error.lock().unwrap().clone(),
            clients_total: self.clients_total.load(Ordering::Relaxed),
            clients_rejected: self.clients_rejected.load(Ordering::Relaxed),
            backends,
        }
    }
}

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
    pub backends: Vec<BackendStatus>,
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
        }
    }
}

/// A cloneable handle for signals, tests and the admin server.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks for the config file to be re-read (what SIGHUP does). Returns at
    /// once; the reload task does the work.
    pub fn request_reload(&self) {
        // Full: a reload is already pending and will read the newest file.
        let _ = self.shared.reload_tx.try_send(());
    }

    pub fn status(&self) -> Status {
        self.shared.status()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }
}

/// A configured balancer, ready to [`run`](Balancer::run).
#[derive(Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
    /// Started in `new`, so a change made as soon as `new` returns is seen.
    watcher: Option<notify::RecommendedWatcher>,
}

impl Balancer {
    /// Sets up the backend states for `config`. With `config_path`, the file
    /// is watched and re-read on change and on [`Handle::request_reload`].
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Self {
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
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let watcher = config_path
            .as_deref()
            .and_then(|p| reload::start_watcher(p, reload_tx.clone()));
        Self {
            watcher,
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                registry: Mutex::new(registry),
                shutdown,
                hard_stop: CancellationToken::new(),
                tracker: TaskTracker::new(),
                reload_tx,
                reload_rx: Mutex::new(Some(reload_rx)),
                config_path,
                started: Instant::now(),
                listen_addr: Mutex::new(None),
                reloads_ok: AtomicU64::new(0),
                reloads_failed: AtomicU64::new(0),
                last_reload_error: Mutex::new(None),
                clients_total: AtomicU64::new(0),
                clients_rejected: AtomicU64::new(0),
            }),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Proxies clients from `listener` until `shutdown` resolves, then stops
    /// accepting and lets connections finish for up to `shutdown_grace`
    /// before closing the rest. `admin`, if given, serves `/metrics` and
    /// `/status` until the end.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Balancer { shared, watcher } = self;
        *shared.listen_addr.lock().unwrap() = listener.local_addr().ok();

        let checkers: Vec<_> = {
            let reg = shared.registry.lock().unwrap();
            reg.current.values().cloned().collect()
        };
        for (state, stop) in checkers {
            tokio::spawn(health::run_checker(shared.clone(), state, stop));
        }
        let reloader = match (&shared.config_path, shared.reload_rx.lock().unwrap().take()) {
            (Some(path), Some(rx)) => Some(tokio::spawn(reload::reload_task(
                shared.clone(),
                rx,
                path.clone(),
                watcher,
            ))),
            _ => None,
        };
        let admin_task = admin.map(|l| tokio::spawn(admin::serve(shared.clone(), l)));

        let accept = tokio::spawn(proxy::accept_loop(shared.clone(), listener));
        shutdown.await;
        info!("shutting down: no new connections");
        shared.shutdown.cancel();
        let _ = accept.await;
        shared.tracker.close();
        let grace = shared.snapshot().config.shutdown_grace;
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            let left = shared.tracker.len();
            warn!(
                connections = left,
                "grace period over: closing the remaining connections"
            );
            shared.hard_stop.cancel();
            let _ = tokio::time::timeout(HARD_STOP_WAIT, shared.tracker.wait()).await;
        }
        shared.hard_stop.cancel();
        if let Some(r) = reloader {
            let _ = r.await;
        }
        if let Some(a) = admin_task {
            a.abort();
        }
        info!("stopped");
        Ok(())
    }
}

/// Runs `config` on `listener` until `shutdown`, without file reload or
/// admin server: the plain `run(config, listener, shutdown)` shape.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Balancer::new(config, None)
        .run(listener, None, shutdown)
        .await
}
