//! TLS on the chat port and the web listener (`--tls-cert`, `--tls-key`),
//! with the balancer's choices (`tlsconf`: rustls, TLS 1.2/1.3 only).
//!
//! [`Tls::accept`] turns an accepted socket into a TLS stream within a
//! deadline; any listener (the chat port, a WebSocket port) can use it.
//! Failed handshakes are counted and logged at debug only: a scanner must
//! not flood the log. The certificate and key files are polled: when they
//! change, the new pair serves new handshakes and established connections
//! keep theirs, so a rotation drops nothing; a pair that does not load (a
//! half-written file, a key that does not match) is logged and counted and
//! the old one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::TlsMetrics;

pub use tlsconf::TlsError;

/// How often the files are checked for a change: a rotation is picked up
/// within this, for the cost of two `stat`s.
const POLL: Duration = Duration::from_secs(2);
/// Reading the files may not take longer (a path on a hung network mount).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the certificate chain and its key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake not done in time")]
    TimedOut,
}

/// The acceptor in use, swapped whole on a rotation.
pub struct Tls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the pair (off the runtime's threads, within a timeout).
    pub async fn load(files: TlsFiles, metrics: TlsMetrics) -> Result<Tls, TlsError> {
        let acceptor = load_acceptor(&files).await?;
        Ok(Tls {
            files,
            acceptor: RwLock::new(acceptor),
            metrics,
        })
    }

    /// Completes the server side of the handshake on `tcp`, by `deadline`.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        deadline: Instant,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let result = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(HandshakeError::Failed(error)),
            Err(_) => Err(HandshakeError::TimedOut),
        };
        match &result {
            Ok(_) => self.metrics.handshakes.inc(),
            Err(_) => self.metrics.handshake_failures.inc(),
        };
        result
    }

    /// Polls the files until `stop`, loading the pair again when either
    /// changes.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = self.fingerprint().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let now = self.fingerprint().await;
            if now == seen {
                continue;
            }
            seen = now;
            match load_acceptor(&self.files).await {
                Ok(acceptor) => {
                    *self
                        .acceptor
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
                    self.metrics.reloads.inc();
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded");
                }
                Err(error) => {
                    self.metrics.reload_failures.inc();
                    tracing::error!(%error, "TLS certificate reload rejected, keeping the current one");
                }
            }
        }
    }

    /// What identifies the files' current contents without reading them.
    async fn fingerprint(&self) -> [Option<(SystemTime, u64, u64)>; 2] {
        let files = self.files.clone();
        let stat = |path: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        };
        let job = tokio::task::spawn_blocking(move || [stat(&files.cert), stat(&files.key)]);
        match tokio::time::timeout(READ_TIMEOUT, job).await {
            Ok(Ok(print)) => print,
            _ => [None, None],
        }
    }
}

async fn load_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let files = files.clone();
    let job =
        tokio::task::spawn_blocking(move || tlsconf::load_server_config(&files.cert, &files.key));
    let timed_out = || TlsError::Read {
        path: String::from("certificate/key"),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "reading took too long"),
    };
    let config = tokio::time::timeout(READ_TIMEOUT, job)
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| timed_out())??;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
