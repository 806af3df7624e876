//! Our balancer running in the test's own process (through the library's
//! `Balancer::run`, as `main` does), from a config file it watches, on
//! port-0 listeners bound here; plus the TOML snippets tests build configs
//! from.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use balancer::config::Config;
use balancer::{Balancer, Handle, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{run, WAIT};

/// A balancer running in-process; it stops when dropped.
pub struct Lb {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub handle: Handle,
    pub config_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), balancer::Error>>>,
}

impl Lb {
    /// Starts a balancer from `toml`, written to a watched file in a temp
    /// dir of the run; its `listen` (and `admin` when `with_admin`) are
    /// replaced by port-0 listeners bound here.
    pub async fn start(toml: &str, with_admin: bool) -> Lb {
        let config_path = run::temp_dir("lb").join("lb.toml");
        std::fs::write(&config_path, toml).expect("writing lb.toml");
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{toml}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("local address");
        let admin_listener = if with_admin {
            Some(TcpListener::bind("127.0.0.1:0").await.expect("binding"))
        } else {
            None
        };
        let admin = admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("local address"));
        let balancer = Balancer::new(config, Some(config_path.clone()));
        let handle = balancer.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(balancer.run(listener, admin_listener, async {
            let _ = rx.await;
        }));
        Lb {
            addr,
            admin,
            handle,
            config_path,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn status(&self) -> Status {
        self.handle.status()
    }

    /// Whether the configured backend at `address` is up (`None`: not in
    /// the config).
    pub fn backend_up(&self, address: &str) -> Option<bool> {
        self.status()
            .backends
            .iter()
            .find(|b| b.address == address && b.in_config)
            .map(|b| b.up)
    }

    /// Replaces the config file the way editors do: write a temporary file
    /// beside it, then rename it over the old one.
    pub fn write_config_by_rename(&self, toml: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml).expect("writing the new config");
        std::fs::rename(&tmp, &self.config_path).expect("renaming it over the old one");
    }

    /// Rewrites the config file in place.
    pub fn write_config_in_place(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).expect("rewriting the config");
    }

    /// Starts the shutdown and returns the future of `run` finishing.
    pub fn begin_shutdown(&mut self) -> impl Future<Output = Result<(), balancer::Error>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("already shut down");
        async move { task.await.expect("run panicked") }
    }

    /// Shuts down and waits (bounded) for `run` to return successfully.
    pub async fn shutdown(mut self) {
        tokio::time::timeout(WAIT * 2, self.begin_shutdown())
            .await
            .expect("run did not return")
            .expect("run failed");
    }
}

/// A `[[backend]]` table.
pub fn backend_toml(address: &str, weight: u32) -> String {
    format!("[[backend]]\naddress = \"{address}\"\nweight = {weight}\n")
}

/// A full config: `head` holds top-level keys and `[health]`.
pub fn config_toml(head: &str, backends: &[(&str, u32)]) -> String {
    let mut text = format!("listen = \"127.0.0.1:0\"\n{head}\n");
    for (address, weight) in backends {
        text += &backend_toml(address, *weight);
    }
    text
}
