//! The server's metrics: one [`Metrics`] handle in the [`Context`](crate::context::Context),
//! counted where things happen, encoded in Prometheus text by the admin server.
//!
//! Counters are `prometheus-client` handles (atomics behind an `Arc`), so
//! counting costs an atomic add and no lock. Limit refusals are already
//! counted by [`Refusals`]; they are read at scrape time rather than counted twice.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use adminhttp::AdminCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use protocol::{Errno, MsgId, Reply};

use crate::calls::CallTimer;
use crate::error::Unavailable;
use crate::refusals::{Refusal, Refusals};

/// What a connection is doing, for the `connections` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    PreLogin,
    V1,
    V2,
}

impl ConnState {
    fn label(self) -> &'static str {
        match self {
            ConnState::PreLogin => "pre_login",
            ConnState::V1 => "v1",
            ConnState::V2 => "v2",
        }
    }
}

/// Where a stored message was handed on to its receiver.
#[derive(Debug, Clone, Copy)]
pub enum DeliveryPath {
    /// Stored in the receiver's inbox (every message, before any push).
    Stored,
    /// Offered to a session on this server.
    Local,
    /// Handed to the cluster for a session on another server.
    Cluster,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabel {
    errno: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    msgid: &'static str,
    errno: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SystemLabel {
    system: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Latency and failures of one dependency's calls, by operation.
#[derive(Clone, Debug)]
struct CallMetrics {
    seconds: Family<OpLabel, Histogram, fn() -> Histogram>,
    errors: Family<OpLabel, Counter>,
}

impl CallMetrics {
    fn new() -> Self {
        CallMetrics {
            seconds: Family::new_with_constructor(call_buckets),
            errors: Family::default(),
        }
    }

    fn timer(&self) -> CallTimer {
        let me = self.clone();
        CallTimer::new(move |op, elapsed, failed| {
            let label = OpLabel { op };
            me.seconds
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64());
            if failed {
                me.errors.get_or_create(&label).inc();
            } else {
                // Present with 0 once the operation ran, so a rate has a base.
                let _ = me.errors.get_or_create(&label);
            }
        })
    }
}

/// Whether the cluster's Redis breaker is open (calls fail fast), read at
/// scrape time; unset on a single server.
type BreakerProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// The password-hash pool's instruments, handed to the hasher.
#[derive(Clone, Debug)]
pub struct HashMetrics {
    /// Hash jobs waiting for a thread.
    pub queued: Gauge,
    /// Time from asking for a thread to getting one.
    pub wait: Histogram,
    /// Time a thread spent hashing.
    pub work: Histogram,
}

/// The TLS listener's instruments, handed to [`crate::tls::Tls`].
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    pub handshakes: Counter,
    /// Failed or timed-out handshakes: counted, logged at debug only.
    pub handshake_failures: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

/// Every instrument of the server; cheap to share (handles are `Arc`s).
pub struct Metrics {
    registry: Registry,
    connections: Family<StateLabel, Gauge>,
    logins: Family<ErrnoLabel, Counter>,
    token_logins: Counter,
    registrations: Counter,
    requests: Family<RequestLabels, Counter>,
    deliveries: Family<PathLabel, Counter>,
    unavailable: Family<SystemLabel, Counter>,
    database: CallMetrics,
    redis: CallMetrics,
    replay_messages: Histogram,
    replay_bytes: Histogram,
    deferrals: Counter,
    closes: Family<ReasonLabel, Counter>,
    subscription_resets: Counter,
    subscribed: Gauge,
    breaker: Arc<OnceLock<BreakerProbe>>,
    /// Given to the password hasher at start-up.
    pub hash: HashMetrics,
    /// What the admin server turned away.
    pub admin: Arc<AdminCounters>,
    /// Zero unless `--tls-cert` is set.
    pub tls: TlsMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

/// Seconds from 250 µs to about 8 s: a database or Redis round trip.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Seconds from 1 ms to about 16 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Registers every instrument; `refusals` is read at scrape time.
    pub fn new(refusals: Arc<Refusals>) -> Self {
        let mut registry = Registry::with_prefix("chatserver");
        let connections = Family::<StateLabel, Gauge>::default();
        for state in [ConnState::PreLogin, ConnState::V1, ConnState::V2] {
            // Present from the start, so a dashboard sees zeros, not gaps.
            let _ = connections.get_or_create(&StateLabel {
                state: state.label(),
            });
        }
        registry.register(
            "connections",
            "Open client connections by state (pre_login, v1, v2 logged in)",
            connections.clone(),
        );
        let logins = Family::<ErrnoLabel, Counter>::default();
        registry.register(
            "logins",
            "LOGIN requests by errno (0: logged in)",
            logins.clone(),
        );
        let token_logins = Counter::default();
        registry.register(
            "token_logins",
            "Successful LOGINs with a token (no password hashing)",
            token_logins.clone(),
        );
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "Accounts created by REGISTER",
            registrations.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by msgid and the errno of the reply (0: success)",
            requests.clone(),
        );
        let deliveries = Family::<PathLabel, Counter>::default();
        for path in [
            DeliveryPath::Stored,
            DeliveryPath::Local,
            DeliveryPath::Cluster,
        ] {
            let _ = deliveries.get_or_create(&PathLabel {
                path: path_label(path),
            });
        }
        registry.register(
            "deliveries",
            "Chat messages per receiver: stored in the inbox, pushed to a session here (local), handed to another server (cluster)",
            deliveries.clone(),
        );
        let unavailable = Family::<SystemLabel, Counter>::default();
        for system in ["database", "redis", "hash"] {
            let _ = unavailable.get_or_create(&SystemLabel { system });
        }
        registry.register(
            "unavailable_errors",
            "Requests answered errno 10 because the database, Redis or the hasher failed",
            unavailable.clone(),
        );
        let hash = HashMetrics {
            queued: Gauge::default(),
            wait: latency_buckets(),
            work: latency_buckets(),
        };
        registry.register(
            "hash_queue",
            "Password hashes waiting for a hashing thread",
            hash.queued.clone(),
        );
        registry.register(
            "hash_wait_seconds",
            "Time password hashes waited for a hashing thread",
            hash.wait.clone(),
        );
        registry.register(
            "hash_seconds",
            "Time spent hashing one password",
            hash.work.clone(),
        );
        let tls = TlsMetrics::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed (--tls-cert)",
            tls.handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls.handshake_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate/key pairs loaded after a change of the files",
            tls.reloads.clone(),
        );
        registry.register(
            "tls_reload_failures",
            "Changed certificate/key files that did not load (the old pair stays)",
            tls.reload_failures.clone(),
        );
        let database = CallMetrics::new();
        registry.register(
            "db_call_seconds",
            "Database calls by operation: time taken",
            database.seconds.clone(),
        );
        registry.register(
            "db_call_errors",
            "Database calls by operation that failed",
            database.errors.clone(),
        );
        let redis = CallMetrics::new();
        registry.register(
            "redis_call_seconds",
            "Redis calls by operation (cluster mode): time taken",
            redis.seconds.clone(),
        );
        registry.register(
            "redis_call_errors",
            "Redis calls by operation that failed or timed out",
            redis.errors.clone(),
        );
        let replay_messages = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        registry.register(
            "inbox_replay_messages",
            "Inbox messages sent right after a LOGIN_ACK (the backlog replayed at login)",
            replay_messages.clone(),
        );
        let replay_bytes = Histogram::new(exponential_buckets(256.0, 4.0, 12));
        registry.register(
            "inbox_replay_bytes",
            "Bytes of inbox messages sent right after a LOGIN_ACK",
            replay_bytes.clone(),
        );
        let deferrals = Counter::default();
        registry.register(
            "mailbox_deferrals",
            "Pushes not queued because the receiver's queue was full (read from its inbox later)",
            deferrals.clone(),
        );
        let closes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connection_closes",
            "Connections ended, by reason (write_stalled: the peer stopped reading)",
            closes.clone(),
        );
        let subscription_resets = Counter::default();
        registry.register(
            "cluster_subscription_resets",
            "Times the cluster subscription was re-established after a loss (every local session then reads its inbox)",
            subscription_resets.clone(),
        );
        let subscribed = Gauge::default();
        registry.register(
            "cluster_subscribed",
            "1 while the cluster subscription is up (this server hears the others), 0 otherwise and on a single server",
            subscribed.clone(),
        );
        let breaker: Arc<OnceLock<BreakerProbe>> = Arc::default();
        registry.register_collector(Box::new(BreakerCollector(breaker.clone())));
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(RefusalCollector(refusals)));
        let admin = Arc::new(AdminCounters::default());
        registry.register_collector(Box::new(AdminCollector(admin.clone())));
        Metrics {
            registry,
            connections,
            logins,
            token_logins,
            registrations,
            requests,
            deliveries,
            unavailable,
            database,
            redis,
            replay_messages,
            replay_bytes,
            deferrals,
            closes,
            subscription_resets,
            subscribed,
            breaker,
            hash,
            admin,
            tls,
        }
    }

    /// The Prometheus (OpenMetrics) text of every instrument.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }

    /// A connection opened (`from: None`), changed state, or closed (`to: None`).
    pub fn connection(&self, from: Option<ConnState>, to: Option<ConnState>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            self.connections
                .get_or_create(&StateLabel {
                    state: from.label(),
                })
                .dec();
        }
        if let Some(to) = to {
            self.connections
                .get_or_create(&StateLabel { state: to.label() })
                .inc();
        }
    }

    /// A request `msgid` (None: unreadable) answered with `reply`.
    pub fn request(&self, msgid: Option<MsgId>, reply: &Reply, by_token: bool) {
        let errno = match reply {
            Reply::Error(failure) => failure.errno,
            _ => Errno::Ok,
        };
        let errno_label = errno_label(errno);
        self.requests
            .get_or_create(&RequestLabels {
                msgid: msgid_label(msgid),
                errno: errno_label,
            })
            .inc();
        match (msgid, errno) {
            (Some(MsgId::Login), errno) => {
                self.logins
                    .get_or_create(&ErrnoLabel { errno: errno_label })
                    .inc();
                if errno == Errno::Ok && by_token {
                    self.token_logins.inc();
                }
            }
            (Some(MsgId::Register), Errno::Ok) => {
                self.registrations.inc();
            }
            _ => {}
        }
    }

    /// `n` receivers of a message reached by `path`.
    pub fn delivered(&self, path: DeliveryPath, n: usize) {
        if n > 0 {
            self.deliveries
                .get_or_create(&PathLabel {
                    path: path_label(path),
                })
                .inc_by(n as u64);
        }
    }

    /// What the store reports its calls to.
    pub fn database_calls(&self) -> CallTimer {
        self.database.timer()
    }

    /// What the Redis bus reports its calls to.
    pub fn redis_calls(&self) -> CallTimer {
        self.redis.timer()
    }

    /// Reads the cluster breaker at each scrape (`true`: open).
    pub fn watch_breaker(&self, open: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.breaker.set(Box::new(open));
    }

    /// The backlog sent after a LOGIN_ACK: `messages` frames, `bytes` long.
    pub fn replayed(&self, messages: usize, bytes: usize) {
        self.replay_messages.observe(messages as f64);
        self.replay_bytes.observe(bytes as f64);
    }

    /// A push was deferred: the receiver's queue was full.
    pub fn deferred(&self) {
        self.deferrals.inc();
    }

    /// A connection ended for `reason` (a short snake_case name).
    pub fn closed(&self, reason: &'static str) {
        self.closes.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The cluster subscription was lost and is back.
    pub fn subscription_reset(&self) {
        self.subscription_resets.inc();
    }

    /// The cluster subscription is up (`true`) or lost.
    pub fn subscribed(&self, up: bool) {
        self.subscribed.set(i64::from(up));
    }

    /// A request failed on a dependency.
    pub fn unavailable(&self, error: &Unavailable) {
        let system = match error {
            Unavailable::Store(_) => "database",
            Unavailable::Bus(_) => "redis",
            Unavailable::Hash(_) => "hash",
        };
        self.unavailable
            .get_or_create(&SystemLabel { system })
            .inc();
    }
}

impl HashMetrics {
    /// Records a finished hash: waited `wait`, worked `work`.
    pub fn observe(&self, wait: Duration, work: Duration) {
        self.wait.observe(wait.as_secs_f64());
        self.work.observe(work.as_secs_f64());
    }
}

fn path_label(path: DeliveryPath) -> &'static str {
    match path {
        DeliveryPath::Stored => "stored",
        DeliveryPath::Local => "local",
        DeliveryPath::Cluster => "cluster",
    }
}

fn msgid_label(msgid: Option<MsgId>) -> &'static str {
    match msgid {
        None => "unreadable",
        Some(MsgId::Login) => "login",
        Some(MsgId::Logout) => "logout",
        Some(MsgId::Register) => "register",
        Some(MsgId::OneChat) => "one_chat",
        Some(MsgId::AddFriend) => "add_friend",
        Some(MsgId::CreateGroup) => "create_group",
        Some(MsgId::AddGroup) => "add_group",
        Some(MsgId::GroupChat) => "group_chat",
        Some(MsgId::Ping) => "ping",
        Some(MsgId::Delivered) => "delivered",
        Some(MsgId::History) => "history",
        Some(_) => "other",
    }
}

fn errno_label(errno: Errno) -> &'static str {
    const NAMES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    NAMES
        .get(errno.number() as usize)
        .copied()
        .unwrap_or("other")
}

/// Reads the refusal counters of the limits at scrape time.
struct RefusalCollector(Arc<Refusals>);

impl fmt::Debug for RefusalCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefusalCollector")
    }
}

impl Collector for RefusalCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "limit_refusals",
            "Clients refused by a limit, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in Refusal::ALL {
            let labels = [("kind", kind.name())];
            ConstCounter::new(self.0.count(kind)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Reads the cluster breaker at scrape time (0 on a single server).
struct BreakerCollector(Arc<OnceLock<BreakerProbe>>);

impl fmt::Debug for BreakerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BreakerCollector")
    }
}

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let open = self.0.get().is_some_and(|open| open());
        let gauge = ConstGauge::new(i64::from(open));
        gauge.encode(encoder.encode_descriptor(
            "cluster_breaker_open",
            "1 while Redis is known to be away and cluster calls fail fast (0 when reachable, or on a single server)",
            None,
            gauge.metric_type(),
        )?)
    }
}

/// Reads the admin server's own refusals at scrape time.
struct AdminCollector(Arc<AdminCounters>);

impl fmt::Debug for AdminCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminCollector")
    }
}

impl Collector for AdminCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in [
            (
                "admin_refused",
                "Admin connections closed at once because 32 were open",
                &self.0.refused,
            ),
            (
                "admin_unauthorized",
                "Admin requests without the right bearer token",
                &self.0.unauthorized,
            ),
        ] {
            let counter = ConstCounter::new(value.load(std::sync::atomic::Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_in_the_text() {
        let metrics = Metrics::new(Arc::default());
        metrics.connection(None, Some(ConnState::PreLogin));
        metrics.connection(Some(ConnState::PreLogin), Some(ConnState::V2));
        metrics.request(Some(MsgId::Login), &Reply::DONE, true);
        let text = metrics.encode().unwrap();
        for needle in [
            "chatserver_connections{state=\"v2\"} 1",
            "chatserver_connections{state=\"pre_login\"} 0",
            "chatserver_logins_total{errno=\"0\"} 1",
            "chatserver_token_logins_total 1",
            "chatserver_requests_total{msgid=\"login\",errno=\"0\"} 1",
            "chatserver_limit_refusals_total{kind=\"login_rate\"} 0",
            "chatserver_build_info{version=",
            "chatserver_hash_seconds_bucket",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
