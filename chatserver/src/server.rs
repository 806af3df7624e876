//! Accepting connections, and shutting down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{self, Listener, Serves};
use crate::bus::{Bus, RedisBus};
use crate::calls::CallTimer;
use crate::config::{Config, Secret};
use crate::connection_limits::AcceptBackoff;
use crate::context::{Context, Limits};
use crate::directory::Directory;
use crate::error::StartError;
use crate::guard::Guard;
use crate::hasher::PasswordHasher;
use crate::inbound;
use crate::metrics::Metrics;
use crate::mid::MidGenerator;
use crate::readiness;
use crate::refusals::Refusals;
use crate::registry::Registry;
use crate::retention;
use crate::session;
use crate::store::{Durability, Store};
use crate::tls::Tls;
use crate::web::{Assets, Site};
use crate::writer::{InboxLimits, Writer};

/// Time sessions get to flush and log out at shutdown; with the final
/// storage updates this keeps a clean exit under 5 s.
const SESSION_DRAIN: Duration = Duration::from_secs(3);
const FINAL_STORAGE_UPDATE: Duration = Duration::from_secs(1);
const GROUP_CACHE_TTL: Duration = Duration::from_secs(30);

/// Connects to Redis, retrying like the database: a cluster may start
/// before its Redis does.
async fn connect_cluster(
    config: &Config,
    url: &str,
    name: &str,
    calls: CallTimer,
) -> Result<RedisBus, StartError> {
    let deadline = tokio::time::Instant::now() + config.db_connect_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = RedisBus::connect(
            url,
            &config.redis_prefix,
            name,
            config.presence_lease,
            calls.clone(),
        )
        .await;
        match connected {
            Ok(cluster) => {
                tracing::info!(
                    token = cluster.token(),
                    node = cluster.node(),
                    "joined the cluster"
                );
                return Ok(cluster);
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "redis not ready, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(StartError::Redis(error)),
        }
    }
}

/// A started server: storage connected and migrated, ready to accept.
pub struct Server {
    ctx: Arc<Context>,
    retention: Duration,
    admin_token: Option<Secret>,
    admin: Option<TcpListener>,
    /// `Some` with `--tls-cert`: every connection, on either listener, is TLS.
    tls: Option<Arc<Tls>>,
    /// The web listener and what it serves (`--ws-listen`).
    web: Option<(TcpListener, Arc<Site>)>,
    site: Arc<Site>,
}

impl Server {
    /// Connects storage. `local_addr` names the server when no name is set.
    pub async fn start(config: &Config, local_addr: SocketAddr) -> Result<Server, StartError> {
        let refusals = Arc::new(Refusals::default());
        let metrics = Metrics::new(refusals.clone());
        let store = Store::connect(
            &config.database_url,
            config.db_connect_timeout,
            config.sqlite_synchronous,
            config.db_pool_size,
        )
        .await
        .map_err(StartError::Database)?
        .timed(metrics.database_calls());
        match store.durability().await {
            Ok(Durability::PowerLoss) => {
                tracing::info!("acknowledged messages are flushed to disk at commit")
            }
            Ok(Durability::DatabaseCrash) => tracing::info!(
                "acknowledged messages survive a crash of the server or the database, \
                 not of the host (SQLite synchronous=NORMAL, or MySQL \
                 innodb_flush_log_at_trx_commit=2)"
            ),
            Ok(Durability::Nothing) => tracing::warn!(
                "the database does not write each commit (innodb_flush_log_at_trx_commit=0): \
                 a crash of the database may lose acknowledged messages"
            ),
            Err(error) => tracing::warn!(%error, "cannot read the database's durability setting"),
        }
        let server_name = config
            .name
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let bus = match &config.redis_url {
            Some(url) => {
                let calls = metrics.redis_calls();
                let redis = Arc::new(connect_cluster(config, url, &server_name, calls).await?);
                let probe = redis.clone();
                metrics.watch_breaker(move || !probe.reachable.load(Ordering::Relaxed));
                Bus::Redis(redis)
            }
            None => {
                // A single server owns every session, so nobody is online yet.
                store
                    .reset_online_states()
                    .await
                    .map_err(StartError::Database)?;
                Bus::Local
            }
        };
        // Cached memberships expire in a cluster, in case a join announced
        // on another server is missed during a Redis outage.
        let group_ttl = matches!(bus, Bus::Redis(_)).then_some(GROUP_CACHE_TTL);
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                Tls::load(files.clone(), metrics.tls.clone())
                    .await
                    .map_err(StartError::Tls)?,
            )),
            None => None,
        };
        let ctx = Context {
            server_name,
            limits: Limits {
                max_frame: config.max_frame,
                outbound_queue: config.outbound_queue,
                outbound_queue_bytes: config.outbound_queue_bytes,
                login_idle_timeout: config.login_idle_timeout,
                v2_idle_timeout: config.v2_idle_timeout,
                frame_stall_timeout: config.frame_stall_timeout,
                v1_write_gap: config.v1_write_gap,
                drain_period: config.drain_period,
            },
            directory: Directory::new(store.clone(), group_ttl),
            writer: Writer::spawn(
                store.clone(),
                InboxLimits {
                    messages: config.inbox_limit as i64,
                    bytes: config.inbox_limit_bytes as i64,
                },
            ),
            token_ttl: config.token_ttl,
            store,
            registry: Registry::default(),
            hasher: PasswordHasher::new(config.hash_cost, config.hash_threads, config.hash_nice)
                .observed(metrics.hash.clone()),
            guard: Guard::new(
                config,
                match &bus {
                    Bus::Redis(redis) => Some(redis.clone()),
                    Bus::Local => None,
                },
            ),
            refusals,
            metrics,
            shutting_down: Default::default(),
            ready: AtomicBool::new(true),
            mids: MidGenerator::new(bus.node()),
            bus,
        };
        Ok(Server {
            ctx: Arc::new(ctx),
            retention: config.retention,
            admin_token: config.admin_token.clone(),
            admin: None,
            tls,
            web: None,
            site: Arc::new(Site {
                assets: Assets::default(),
                origins: config.ws_allowed_origins.clone(),
                ping_interval: config.ws_ping_interval,
            }),
        })
    }

    /// Serves the admin endpoints on `listener` too, from [`serve`](Self::serve)
    /// until the process ends (they answer during the drain).
    pub fn with_admin(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// Serves the web client and WebSocket sessions on `listener` too,
    /// with the same limits and shutdown as the chat listener.
    pub fn with_web(mut self, listener: TcpListener) -> Self {
        self.web = Some((listener, self.site.clone()));
        self
    }

    /// Serves until `shutdown` completes, then drains: stops accepting,
    /// answers `/readyz` 503, closes connections not logged in, sends
    /// GOAWAY to v2 sessions spread over the drain period, closes v1
    /// sessions at its end (or when every session is gone), records the
    /// users still here offline.
    pub async fn serve(mut self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let admin = self.admin.take().map(|listener| {
            tokio::spawn(crate::admin::serve(
                self.ctx.clone(),
                listener,
                self.admin_token.clone(),
            ))
        });
        let drain = CancellationToken::new();
        let stop = CancellationToken::new();
        let sessions = TaskTracker::new();
        // The bus's heartbeat and subscriber, and the retention purge.
        let background = TaskTracker::new();
        if let Bus::Redis(redis) = &self.ctx.bus {
            inbound::spawn(self.ctx.clone(), redis.clone(), stop.clone(), &background);
        }
        background.spawn(retention::run(
            self.ctx.store.clone(),
            self.retention,
            stop.clone(),
        ));
        if self.ctx.store.has_wal() {
            background.spawn(retention::checkpoints(self.ctx.store.clone(), stop.clone()));
        }
        if let Some(tls) = &self.tls {
            background.spawn(tls.clone().watch(stop.clone()));
        }
        background.spawn(readiness::probe(self.ctx.clone(), stop.clone()));
        let mut next_conn_id: u64 = 0;
        let mut backoff = AcceptBackoff::default();
        let web = self.web.take();
        tokio::pin!(shutdown);
        loop {
            let web_accept = async {
                match &web {
                    Some((listener, site)) => (listener.accept().await, Serves::Web(site.clone())),
                    None => std::future::pending().await,
                }
            };
            let (accepted, serves) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = async { (listener.accept().await, Serves::Chat) } => accepted,
                accepted = web_accept => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    next_conn_id += 1;
                    configure(&stream);
                    sessions.spawn(admission::serve(
                        self.ctx.clone(),
                        stream,
                        peer,
                        next_conn_id,
                        session::Shutdown {
                            // Children, not clones, though nothing cancels
                            // one session alone: a session polls these on
                            // every wake-up, and each poll locks its token;
                            // one token shared by all sessions would be a
                            // lock contended by every worker thread. A
                            // child costs 120 bytes per connection.
                            drain: drain.child_token(),
                            stop: stop.child_token(),
                        },
                        Listener {
                            serves,
                            tls: self.tls.clone(),
                        },
                    ));
                }
                Err(error) => {
                    // Out of file descriptors, usually: back off, keep serving.
                    let pause = backoff.failed();
                    tracing::error!(%error, ?pause, "accept failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        drop(listener);
        drop(web);
        self.ctx
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let drain_period = self.ctx.limits.drain_period;
        tracing::info!(
            sessions = sessions.len(),
            ?drain_period,
            "shutting down: draining"
        );
        drain.cancel();
        sessions.close();
        let _ = tokio::time::timeout(drain_period, sessions.wait()).await;
        tracing::info!(
            sessions = sessions.len(),
            "drain period over, closing the rest"
        );
        stop.cancel();
        if tokio::time::timeout(SESSION_DRAIN, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = sessions.len(),
                "sessions still closing at the deadline"
            );
        }
        let still_online = self.ctx.registry.users();
        let final_update = async {
            background.close();
            background.wait().await;
            // Cursor moves still queued are written before the pool closes.
            self.ctx.writer.flush().await;
            self.ctx.bus.leave(&still_online).await;
            if let Err(error) = self.ctx.store.set_online(&still_online, false).await {
                tracing::error!(%error, "could not record users offline");
            }
            self.ctx.store.close().await;
        };
        let _ = tokio::time::timeout(FINAL_STORAGE_UPDATE, final_update).await;
        if let Some(admin) = admin {
            admin.abort();
        }
        tracing::info!("stopped");
    }
}

/// Keepalive finds peers that vanished without a FIN (idle 60 s, then 3
/// probes 10 s apart); no Nagle delay on small chat frames.
fn configure(stream: &TcpStream) {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let socket = SockRef::from(stream);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive) {
        tracing::warn!(%error, "cannot enable TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
}

/// Starts a server on `listener` and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        address: config.listen.clone(),
        source,
    })?;
    let server = Server::start(&config, local_addr).await?;
    server.serve(listener, shutdown).await;
    Ok(())
}
