//! A layer-4 TCP load balancer for the ChatChat cluster: smooth weighted
//! round-robin over healthy backends, active and passive health checks, hot
//! reload, metrics, and graceful shutdown.
//!
//! `main` only parses flags and wires signals; everything else is reachable
//! from [`Balancer::run`], which tests drive in-process on port 0.
#![forbid(unsafe_code)]

pub mod admin;
mod apply;
pub mod backend;
pub mod config;
pub mod diff;
pub mod fault;
pub mod health;
pub mod proxy;
pub mod proxy_header;
pub mod reload;
pub mod selection;
mod shared;
pub mod status;
pub mod tls;

pub use status::{BackendStatus, Status};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::backend::Snapshot;
use crate::config::Config;
use crate::reload::Reloader;
use crate::shared::Shared;

/// How long connections get to close after the grace period ended and they
/// were told to stop; they stop at their next poll, so this is generous.
const HARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// Errors that stop the balancer (a failing connection never does).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A cloneable handle for signals, tests and the admin server.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    /// Capacity 1: a pending reload reads the newest file, so more signals add nothing.
    reload_tx: mpsc::Sender<()>,
}

impl Handle {
    /// Asks for the config file to be re-read (what SIGHUP does). Returns at
    /// once; the reload task does the work.
    pub fn request_reload(&self) {
        // Full: a reload is already pending and will read the newest file.
        let _ = self.reload_tx.try_send(());
    }

    /// A point-in-time view for `/status` and tests.
    pub fn status(&self) -> Status {
        Status::of(&self.shared)
    }

    /// The backend list new connections pick from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }
}

/// A configured balancer, ready to [`run`](Balancer::run).
#[derive(Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
    reload_tx: mpsc::Sender<()>,
    /// Only with a config file. Its watcher starts in `new`, so a change
    /// made as soon as `new` returns is seen.
    reloader: Option<Reloader>,
    /// Why `[tls]` could not be loaded; `run` refuses to start with it
    /// rather than serve plaintext where TLS was asked for.
    tls_error: Option<tls::TlsError>,
}

impl Balancer {
    /// Sets up the backend states for `config`. With `config_path`, the file
    /// is watched and re-read on change and on [`Handle::request_reload`].
    /// With `[tls]`, the certificate and key are loaded here (and watched
    /// with the config file); if they cannot be, [`Balancer::run`] fails.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Self {
        let (acceptor, tls_error) = match config.tls.as_ref().map(tls::load) {
            None => (None, None),
            Some(Ok(a)) => (Some(a), None),
            Some(Err(e)) => (None, Some(e)),
        };
        let tls_files: Vec<PathBuf> = config
            .tls
            .iter()
            .flat_map(|t| [t.cert.clone(), t.key.clone()])
            .collect();
        let shared = Arc::new(Shared::new(config, acceptor));
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let reloader =
            config_path.map(|path| Reloader::new(path, tls_files, reload_tx.clone(), reload_rx));
        Self {
            shared,
            reload_tx,
            reloader,
            tls_error,
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
            reload_tx: self.reload_tx.clone(),
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
        let Balancer {
            shared,
            reloader,
            tls_error,
            ..
        } = self;
        if let Some(e) = tls_error {
            return Err(e.into());
        }
        if let Ok(addr) = listener.local_addr() {
            // `run` takes `self`, so this is the only set.
            let _ = shared.listen_addr.set(addr);
        }

        let checkers: Vec<_> = shared
            .registry
            .lock()
            .unwrap()
            .current
            .values()
            .cloned()
            .collect();
        for (state, stop) in checkers {
            tokio::spawn(health::run_checker(shared.clone(), state, stop));
        }
        let lag_shared = shared.clone();
        tokio::spawn(async move { lag_shared.lag.probe(lag_shared.shutdown.clone()).await });
        let reloader = reloader.map(|r| tokio::spawn(r.run(shared.clone())));
        let admin_task = admin.map(|l| tokio::spawn(admin::serve(shared.clone(), l)));

        let accept = tokio::spawn(proxy::accept_loop(shared.clone(), listener));
        shutdown.await;
        info!("shutting down: no new connections");
        shared.shutdown.cancel();
        let _ = accept.await;
        close_connections(&shared).await;
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

/// Waits up to the grace period for connections to finish, then tells the
/// rest to stop and waits a little more for them to go.
async fn close_connections(shared: &Shared) {
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
