//! TLS termination on the client side with rustls (the `ring` provider):
//! TLS 1.2 and 1.3 only, rustls's modern AEAD cipher suites only.
//!
//! The acceptor is swapped whole when the certificate or key files change
//! (or on SIGHUP): new handshakes use the new pair, connections already set
//! up keep theirs, so a rotation drops nothing. A pair that does not load
//! (a half-written file, a key that does not match) is logged and counted
//! and the old one stays. Handshake failures are counted and logged at
//! debug only: a scanner must not flood the log.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::config::{self, TlsConfig};

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Read(#[from] config::ConfigError),
    #[error(transparent)]
    Pair(#[from] tlsconf::TlsError),
}

/// Builds an acceptor from PEM bytes, with the choices shared with the
/// chat server (`tlsconf`).
pub fn acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    names: (&Path, &Path),
) -> Result<TlsAcceptor, TlsError> {
    let config = tlsconf::server_config(cert_pem, key_pem, names)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Loads the pair named by `tls`, blocking for at most the read timeout
/// per file. For start-up.
pub fn load(tls: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert = config::read_file(&tls.cert)?;
    let key = config::read_file(&tls.key)?;
    acceptor_from_pem(&cert, &key, (&tls.cert, &tls.key))
}

/// [`load`] from inside the runtime.
pub async fn load_async(tls: &TlsConfig, reads: &config::Reads) -> Result<TlsAcceptor, TlsError> {
    let cert = config::read_file_async(&tls.cert, reads).await?;
    let key = config::read_file_async(&tls.key, reads).await?;
    acceptor_from_pem(&cert, &key, (&tls.cert, &tls.key))
}

/// The acceptor in use and TLS counters, shared by the accept path, the
/// reloader and the metrics.
pub struct TlsState {
    acceptor: ArcSwap<TlsAcceptor>,
    pub handshakes: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    reads: config::Reads,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("handshakes", &self.handshakes)
            .field("handshake_failures", &self.handshake_failures)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    pub fn new(acceptor: TlsAcceptor) -> Self {
        Self {
            acceptor: ArcSwap::from_pointee(acceptor),
            handshakes: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            reads: config::Reads::default(),
        }
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }

    /// Re-reads the pair; keeps the current one when the new one fails.
    pub async fn reload(&self, tls: &TlsConfig) {
        match load_async(tls, &self.reads).await {
            Ok(acceptor) => {
                self.acceptor.store(Arc::new(acceptor));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                info!(cert = %tls.cert.display(), "TLS certificate loaded");
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                error!("TLS certificate reload rejected, keeping the current one: {e}");
            }
        }
    }
}
