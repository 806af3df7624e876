//! Hot reload: a file watcher and SIGHUP both only signal; one task re-reads
//! the file, validates it and hands it to `apply`. An invalid file is
//! logged and the running config stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::apply::apply;
use crate::config::Config;
use crate::shared::Shared;

/// How long to wait after a change before reading the file, so the several
/// events of one editor save collapse into one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Watches the directories holding `paths` (the config file, and the TLS
/// certificate and key): editors and certificate tools often save by
/// writing a new file and renaming it over the old one, which a watch on
/// the file itself would lose. The callback runs on notify's thread and
/// only signals.
pub fn watch(
    paths: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let watched: Vec<(PathBuf, std::ffi::OsString)> = paths
        .iter()
        .filter_map(|p| Some((dir_of(p), p.file_name()?.to_os_string())))
        .collect();
    let names: Vec<std::ffi::OsString> = watched.iter().map(|(_, n)| n.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            // Full means a reload is already pending, which will read the latest files.
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<&PathBuf> = watched.iter().map(|(d, _)| d).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Starts watching `paths`, or logs why it cannot (SIGHUP still works).
pub fn start_watcher(
    paths: &[PathBuf],
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let path = &paths[0];
    match watch(paths, tx) {
        Ok(w) => {
            info!(path = %path.display(), "watching the config file");
            Some(w)
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot watch the config file; reload with SIGHUP");
            None
        }
    }
}

/// The reload machinery of one balancer: the config file, the watcher on
/// it, and the receiving end of the reload signals. Built with the
/// balancer, so the watch is on before anything can change the file;
/// [`Self::run`] starts reacting once the balancer runs.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    rx: mpsc::Receiver<()>,
    /// Only kept alive here: dropping it stops the watch.
    _watcher: Option<notify::RecommendedWatcher>,
    reads: crate::config::Reads,
}

impl Reloader {
    /// Watches `path` and `tls_files`; the watcher signals on `tx`, as
    /// [`Handle::request_reload`](crate::Handle::request_reload) does.
    /// TLS files named only by a later config are not watched (SIGHUP
    /// reloads them).
    pub fn new(
        path: PathBuf,
        tls_files: Vec<PathBuf>,
        tx: mpsc::Sender<()>,
        rx: mpsc::Receiver<()>,
    ) -> Self {
        let mut paths = vec![path.clone()];
        paths.extend(tls_files);
        let watcher = start_watcher(&paths, tx);
        Self {
            path,
            rx,
            _watcher: watcher,
            reads: Default::default(),
        }
    }

    /// Re-reads the file whenever the watcher or SIGHUP signals, until
    /// shutdown.
    pub async fn run(mut self, shared: Arc<Shared>) {
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                m = self.rx.recv() => if m.is_none() { return },
            }
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(DEBOUNCE) => {}
            }
            while self.rx.try_recv().is_ok() {}
            match Config::load_async(&self.path, &self.reads).await {
                Ok(config) => {
                    let d = apply(&shared, config);
                    if !d.is_empty() {
                        info!(changes = %d, "config reloaded");
                    } else {
                        debug!("config file touched, nothing changed");
                    }
                }
                Err(e) => {
                    shared.reloads.record_failure(e.to_string());
                    error!("config reload rejected, keeping the running config: {e}");
                }
            }
            // The certificate may have changed without the config.
            if let (Some(state), Some(files)) = (&shared.tls, &shared.snapshot().config.tls) {
                state.reload(files).await;
            }
        }
    }
}
