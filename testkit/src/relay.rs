//! A TCP relay a test can cut and restore: a dependency (MariaDB, Redis)
//! going away and coming back without touching the real service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::run::{fresh_mariadb_url, mysql_base_url};

/// Forwards connections to `target` (MariaDB, say) until cut; while cut it refuses new
/// connections (accepts and closes them) and has closed the open ones.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (task_up, task_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !task_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let token = task_cut.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Relay { addr, up, cut }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A relay to the test MariaDB and a fresh database URL through it.
pub async fn mariadb_relay() -> (Relay, String) {
    let base = mysql_base_url();
    let host_port = base.rsplit('@').next().expect("host:port").to_owned();
    let target: SocketAddr = tokio::net::lookup_host(host_port.as_str())
        .await
        .unwrap_or_else(|e| panic!("resolving {host_port}: {e}"))
        .next()
        .expect("an address");
    let relay = Relay::start(target).await;
    let direct_url = fresh_mariadb_url();
    let database = direct_url.rsplit('/').next().expect("database name");
    let relayed_url = format!(
        "{}@{}/{database}",
        base.rsplit_once('@').expect("user@host").0,
        relay.addr
    );
    (relay, relayed_url)
}
