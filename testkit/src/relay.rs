//! A TCP relay a test can cut and restore: a dependency (MariaDB, Redis)
//! going away and coming back without touching the real service.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::run::{fresh_mariadb_url, mysql_base_url};

/// Forwards connections to `target` (MariaDB, say) until cut; while cut it refuses new
/// connections (accepts and closes them) and has closed the open ones.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    /// Relayed connections not yet closed.
    open: Arc<AtomicUsize>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let (task_up, task_cut, task_open) = (up.clone(), cut.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !task_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let token = task_cut.lock().unwrap().clone();
                task_open.fetch_add(1, Ordering::SeqCst);
                let open = task_open.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = token.cancelled() => {}
                        }
                    }
                    drop(client);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Relay {
            addr,
            up,
            cut,
            open,
        }
    }

    /// Returns once every relayed connection is closed, as when the
    /// service itself goes away: all at once, not one by one while the
    /// test goes on.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        {
            let mut token = self.cut.lock().unwrap();
            token.cancel();
            *token = CancellationToken::new();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "relayed connections still open");
            std::thread::sleep(Duration::from_millis(1));
        }
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
