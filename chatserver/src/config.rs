//! Settings: command line, environment and config file merged into one
//! validated [`Config`]. Precedence: file < environment < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ConfigError;
use crate::tls::TlsFiles;
use crate::web::origin::AllowedOrigins;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://chat.db?mode=rwc";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6000";
pub const DEFAULT_MAX_FRAME: usize = protocol::DEFAULT_MAX_FRAME;
/// OWASP's minimum recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
pub const DEFAULT_HASH_MEMORY_KIB: u32 = 19 * 1024;
pub const DEFAULT_HASH_ITERATIONS: u32 = 2;
/// A login storm takes the CPU chat leaves idle (hasher.rs).
pub const DEFAULT_HASH_NICE: i32 = 10;
pub const DEFAULT_LOGIN_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_V2_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_FRAME_STALL_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// The original client parses each 1024-byte read as one message: frames to
/// it must arrive apart. 5 ms costs a human typing nothing.
pub const DEFAULT_V1_WRITE_GAP: Duration = Duration::from_millis(5);
pub const DEFAULT_DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REDIS_PREFIX: &str = "chat:";
pub const DEFAULT_PRESENCE_LEASE: Duration = Duration::from_secs(15);
pub const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_INBOX_LIMIT: u64 = 10_000;
pub const DEFAULT_INBOX_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Connections served at once; beyond it new ones are refused (errno 9,
/// closed). With the frame limit it bounds memory: about max_connections ×
/// (max_frame + 16 KiB).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Connections one client address may hold at once; a NAT shares one.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Failed logins per minute at one account from one address.
pub const DEFAULT_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS: usize = 5;
/// Failed logins per minute from one address, whatever the accounts.
pub const DEFAULT_LOGIN_FAILURES_PER_ADDRESS: usize = 30;
/// Login attempts per minute at one account from all addresses together
/// (cluster-wide with Redis), except from addresses that logged into it
/// before.
pub const DEFAULT_LOGIN_FAILURES_PER_ACCOUNT: usize = 20;
/// REGISTERs per minute from one address.
pub const DEFAULT_REGISTER_PER_ADDRESS: usize = 5;
/// CREATE_GROUPs per minute by one user.
pub const DEFAULT_CREATE_GROUP_PER_USER: usize = 10;
/// Groups one user may have created, in all.
pub const DEFAULT_MAX_GROUPS_PER_USER: usize = 100;
/// Silence after which a WebSocket peer is pinged; a ping unanswered as
/// long closes it. Under Nginx's default proxy_read_timeout (60 s).
pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Time a shutdown spreads GOAWAY to v2 sessions over, before v1 sessions close.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(10);

/// The ChatChat chat server.
///
/// Every option can also be given as an environment variable (shown below)
/// or as a key of the TOML file passed with --config (see
/// config/chatserver.toml); flags override the environment, which overrides
/// the file.
///
/// Each setting is declared once, here: its flag, variable, file key (the
/// field name) and help. The file is read into this same struct, and the
/// two are merged field by field (see `merge`).
#[derive(Debug, Default, Parser, Serialize, Deserialize)]
#[command(version, about, long_about = None)]
#[serde(deny_unknown_fields, default)]
pub struct Args {
    /// Address to listen on [config: listen, default 127.0.0.1]
    #[serde(skip)]
    pub ip: Option<String>,
    /// Port to listen on; 0 picks a free port [config: listen, default 6000]
    #[serde(skip)]
    pub port: Option<u16>,
    /// IP:PORT to listen on; a file key only (flags use IP PORT).
    #[arg(skip)]
    pub listen: Option<String>,
    /// TOML config file with the same settings as the options below.
    #[arg(long, env = "CHAT_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Storage: sqlite://FILE?mode=rwc (embedded, the default: chat.db in the
    /// working directory) or mysql://USER:PASS@HOST:PORT/DB (MySQL/MariaDB; the
    /// database is created when missing and the user may).
    #[arg(long, env = "CHAT_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Largest accepted frame in bytes, terminator not counted [default 65536]
    #[arg(long, env = "CHAT_MAX_FRAME", value_name = "BYTES")]
    pub max_frame: Option<usize>,
    /// argon2id memory cost in KiB for new password hashes [default 19456]
    #[arg(long, env = "CHAT_HASH_MEMORY_KIB", value_name = "KIB")]
    pub hash_memory_kib: Option<u32>,
    /// argon2id passes for new password hashes [default 2]
    #[arg(long, env = "CHAT_HASH_ITERATIONS", value_name = "N")]
    pub hash_iterations: Option<u32>,
    /// Threads that may hash passwords at once [default: number of CPUs]
    #[arg(long, env = "CHAT_HASH_THREADS", value_name = "N")]
    pub hash_threads: Option<usize>,
    /// Nice value of the hashing threads, 0 to 19: how much less they count
    /// than the threads serving chat. 0 on a host shared with other busy
    /// processes, where a lower priority would slow logins [default 10]
    #[arg(long, env = "CHAT_HASH_NICE", value_name = "N")]
    pub hash_nice: Option<i32>,
    /// Close a connection not logged in this long after it connected (or
    /// logged out), whatever it sends [default 10m]
    #[arg(long, env = "CHAT_LOGIN_IDLE_TIMEOUT", value_name = "DURATION")]
    pub login_idle_timeout: Option<String>,
    /// Close a v2 connection that sends no frame this long [default 90s]
    #[arg(long, env = "CHAT_V2_IDLE_TIMEOUT", value_name = "DURATION")]
    pub v2_idle_timeout: Option<String>,
    /// Close a connection whose frame stays incomplete this long [default 60s]
    #[arg(long, env = "CHAT_FRAME_STALL_TIMEOUT", value_name = "DURATION")]
    pub frame_stall_timeout: Option<String>,
    /// Frames queued for one connection; beyond it (or beyond
    /// --outbound-queue-bytes) pushes are not queued and the session reads
    /// them back from its stored inbox once it catches up [default 1024]
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", value_name = "FRAMES")]
    pub outbound_queue: Option<usize>,
    /// Bytes of pushes queued for one connection at most [default 4194304]
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE_BYTES", value_name = "BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Undelivered messages one user's inbox may hold; a 1:1 message to a
    /// full inbox gets errno 9 and is not stored, a group message skips
    /// members whose inbox is full [default 10000]
    #[arg(long, env = "CHAT_INBOX_LIMIT", value_name = "MESSAGES")]
    pub inbox_limit: Option<u64>,
    /// Bytes of undelivered messages one user's inbox may hold [default 67108864]
    #[arg(long, env = "CHAT_INBOX_LIMIT_BYTES", value_name = "BYTES")]
    pub inbox_limit_bytes: Option<u64>,
    /// How long messages are kept (history, and undelivered inbox messages)
    /// before the background purge removes them [default 30days]
    #[arg(long, env = "CHAT_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// SQLite only: normal (a commit survives a crash of the server, not a
    /// power loss) or full (fsync at every commit: survives a power loss,
    /// costs throughput) [default normal]
    #[arg(long, env = "CHAT_SQLITE_SYNCHRONOUS", value_name = "normal|full")]
    pub sqlite_synchronous: Option<String>,
    /// How long a login token stays valid [default 7days]
    #[arg(long, env = "CHAT_TOKEN_TTL", value_name = "DURATION")]
    pub token_ttl: Option<String>,
    /// Least time between two frames written to a v1 (original) client, so
    /// that it reads each alone; 0s turns spacing off [default 5ms]
    #[arg(long, env = "CHAT_V1_WRITE_GAP", value_name = "DURATION")]
    pub v1_write_gap: Option<String>,
    /// How long to keep retrying the database at start-up [default 30s]
    #[arg(long, env = "CHAT_DB_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub db_connect_timeout: Option<String>,
    /// Connections of the pool that serves requests (logins, history...);
    /// the writers' (on MySQL a quarter of this, 1 to 4; 1 on SQLite) and
    /// the readiness probe's (1) and on MySQL the inbox sweeper's (1) come on
    /// top. In a cluster, servers times (this plus writers plus 2) must stay
    /// under MySQL's max_connections
    /// [default 16 on MySQL, 8 on SQLite]
    #[arg(long, env = "CHAT_DB_POOL_SIZE", value_name = "N")]
    pub db_pool_size: Option<u32>,
    /// Cluster mode: redis://HOST:PORT for presence and delivery between
    /// servers sharing one MySQL database [default: single server, no Redis]
    #[arg(long, env = "CHAT_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis [default chat:]
    #[arg(long, env = "CHAT_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// How long a crashed server's users stay locked to it [default 15s]
    #[arg(long, env = "CHAT_PRESENCE_LEASE", value_name = "DURATION")]
    pub presence_lease: Option<String>,
    /// This server's name, shown in PONG and logs [default: IP:PORT]
    #[arg(long, env = "CHAT_SERVER_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Runtime worker threads [default: number of CPUs]. On a machine shared
    /// with other busy processes (a load generator, say) fewer threads wake
    /// each other less often.
    #[arg(long, env = "CHAT_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Connections served at once; more are refused with errno 9 and closed [default 10000]
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one client address may hold at once [default 256]
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Proxies (our balancer, Nginx) whose connections start with a PROXY
    /// protocol header (v1 or v2) naming the client: CIDR[,CIDR...]. Their
    /// connections without one are closed; a header from any other address is
    /// refused [default: none, no PROXY headers accepted]
    #[arg(long, env = "CHAT_PROXY_PROTOCOL_FROM", value_name = "CIDRS")]
    pub proxy_protocol_from: Option<String>,
    /// Serve TLS (1.2 and 1.3 only) on the chat port, and on --ws-listen
    /// (https, wss://), with this PEM certificate chain; needs --tls-key. The files are checked every 2 s
    /// and a changed pair serves new connections, open ones keep theirs
    /// [default: plain TCP]
    #[arg(long, env = "CHAT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "CHAT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Failed logins per minute at one account from one address, then errno 9 [default 5]
    #[arg(
        long,
        env = "CHAT_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS",
        value_name = "N"
    )]
    pub login_failures_per_account_address: Option<usize>,
    /// Failed logins per minute from one address, then errno 9 [default 30]
    #[arg(long, env = "CHAT_LOGIN_FAILURES_PER_ADDRESS", value_name = "N")]
    pub login_failures_per_address: Option<usize>,
    /// Login attempts per minute at one account from all addresses together
    /// (cluster-wide in cluster mode), then errno 9 except from addresses that
    /// logged into that account before [default 20]
    #[arg(long, env = "CHAT_LOGIN_FAILURES_PER_ACCOUNT", value_name = "N")]
    pub login_failures_per_account: Option<usize>,
    /// REGISTERs per minute from one address, then errno 9 [default 5]
    #[arg(long, env = "CHAT_REGISTER_PER_ADDRESS", value_name = "N")]
    pub register_per_address: Option<usize>,
    /// CREATE_GROUPs per minute by one user, then errno 9 [default 10]
    #[arg(long, env = "CHAT_CREATE_GROUP_PER_USER", value_name = "N")]
    pub create_group_per_user: Option<usize>,
    /// Groups one user may create in all, then errno 9 [default 100]
    #[arg(long, env = "CHAT_MAX_GROUPS_PER_USER", value_name = "N")]
    pub max_groups_per_user: Option<usize>,
    /// Log format: text or json (level from RUST_LOG, default info) [default text]
    #[arg(long, env = "CHAT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Admin HTTP server (/metrics, /healthz, /readyz) on IP:PORT; only on a
    /// loopback address unless --admin-token is set [default: off]
    #[arg(long, env = "CHAT_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,
    /// Bearer token every admin request must carry [default: none]
    #[arg(long, env = "CHAT_ADMIN_TOKEN", value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// At SIGTERM: time over which v2 sessions get GOAWAY (spread, so they
    /// reconnect elsewhere in waves); v1 sessions are closed at its end [default 10s]
    #[arg(long, env = "CHAT_DRAIN_PERIOD", value_name = "DURATION")]
    pub drain_period: Option<String>,
    /// Web client and WebSocket endpoint (`/ws`) on IP:PORT, with the chat
    /// listener's limits and PROXY rule [default: off]
    #[arg(long, env = "CHAT_WS_LISTEN", value_name = "ADDR")]
    pub ws_listen: Option<String>,
    /// Comma list of page origins (scheme://host[:port]) that may open a
    /// WebSocket, or * for any; others get 403 [default: the request's Host]
    #[arg(long, env = "CHAT_WS_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    pub ws_allowed_origins: Option<String>,
    /// Silence after which the server pings a WebSocket peer; a ping
    /// unanswered as long closes it [default 30s]
    #[arg(long, env = "CHAT_WS_PING_INTERVAL", value_name = "DURATION")]
    pub ws_ping_interval: Option<String>,
    /// Validate the settings, print the effective config (secrets masked)
    /// and exit: 0 when valid, 1 otherwise. Nothing is opened or bound.
    #[arg(long)]
    #[serde(skip)]
    pub check: bool,
}

/// Flags (and environment) over the file: every setting given in `flags`
/// replaces the file's. Generic over the fields, so a new setting needs no
/// line here.
fn merge(file: Args, flags: Args) -> Result<Args, ConfigError> {
    let as_map = |args: &Args| match serde_json::to_value(args) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("Args serializes to an object"),
    };
    let mut merged = as_map(&file);
    for (key, value) in as_map(&flags) {
        if !value.is_null() {
            merged.insert(key, value);
        }
    }
    let mut args: Args =
        serde_json::from_value(Value::Object(merged)).map_err(|e| ConfigError::Invalid {
            option: "config",
            message: e.to_string(),
        })?;
    args.ip = flags.ip;
    args.port = flags.port;
    args.config = flags.config;
    Ok(args)
}

/// A value that never reaches a log or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// argon2id cost for new hashes. Existing hashes keep the cost they were made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: DEFAULT_HASH_MEMORY_KIB,
            iterations: DEFAULT_HASH_ITERATIONS,
        }
    }
}

/// Limits against abusive clients; see the options of the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub login_failures_per_account_address: usize,
    pub login_failures_per_address: usize,
    pub login_failures_per_account: usize,
    pub register_per_address: usize,
    pub create_group_per_user: usize,
    pub max_groups_per_user: usize,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            login_failures_per_account_address: DEFAULT_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS,
            login_failures_per_address: DEFAULT_LOGIN_FAILURES_PER_ADDRESS,
            login_failures_per_account: DEFAULT_LOGIN_FAILURES_PER_ACCOUNT,
            register_per_address: DEFAULT_REGISTER_PER_ADDRESS,
            create_group_per_user: DEFAULT_CREATE_GROUP_PER_USER,
            max_groups_per_user: DEFAULT_MAX_GROUPS_PER_USER,
        }
    }
}

/// SQLite's `synchronous` setting (in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// A commit is in the WAL file, fsynced at checkpoints: it survives a
    /// crash (SIGKILL) of the server, not an OS crash or power loss, which
    /// may undo the last commits. The default: one fsync per commit costs
    /// more than the rest of a message's path.
    #[default]
    Normal,
    /// The WAL is fsynced at each commit: a power loss loses nothing
    /// acknowledged.
    Full,
}

/// Validated settings.
#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    pub max_frame: usize,
    pub hash_cost: HashCost,
    pub hash_threads: usize,
    pub hash_nice: i32,
    pub login_idle_timeout: Duration,
    pub v2_idle_timeout: Duration,
    pub frame_stall_timeout: Duration,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub inbox_limit: u64,
    pub inbox_limit_bytes: u64,
    pub retention: Duration,
    pub token_ttl: Duration,
    pub sqlite_synchronous: SqliteSync,
    pub v1_write_gap: Duration,
    pub db_connect_timeout: Duration,
    /// `None`: the engine's default.
    pub db_pool_size: Option<u32>,
    /// `Some` turns on cluster mode.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub presence_lease: Duration,
    pub worker_threads: usize,
    /// `None` means "the bound address", known only after binding.
    pub name: Option<String>,
    pub log_format: LogFormat,
    pub abuse: AbuseLimits,
    /// Proxies trusted to send a PROXY header; empty: none.
    pub proxy_protocol_from: Vec<IpNet>,
    /// `Some`: TLS on the chat port and the web listener.
    pub tls: Option<TlsFiles>,
    /// Where the admin HTTP server listens; `None`: off.
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<Secret>,
    pub drain_period: Duration,
    /// Where the web listener listens; `None`: off.
    pub ws_listen: Option<SocketAddr>,
    pub ws_allowed_origins: AllowedOrigins,
    pub ws_ping_interval: Duration,
}

/// The database URL without its password, for logs and `Debug`.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &mask_url(&self.database_url))
            .field("max_frame", &self.max_frame)
            .field("hash_cost", &self.hash_cost)
            .field("hash_threads", &self.hash_threads)
            .field("hash_nice", &self.hash_nice)
            .field("login_idle_timeout", &self.login_idle_timeout)
            .field("v2_idle_timeout", &self.v2_idle_timeout)
            .field("frame_stall_timeout", &self.frame_stall_timeout)
            .field("outbound_queue", &self.outbound_queue)
            .field("outbound_queue_bytes", &self.outbound_queue_bytes)
            .field("inbox_limit", &self.inbox_limit)
            .field("inbox_limit_bytes", &self.inbox_limit_bytes)
            .field("retention", &self.retention)
            .field("token_ttl", &self.token_ttl)
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("v1_write_gap", &self.v1_write_gap)
            .field("db_connect_timeout", &self.db_connect_timeout)
            .field("db_pool_size", &self.db_pool_size)
            .field("redis_url", &self.redis_url.as_deref().map(mask_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("presence_lease", &self.presence_lease)
            .field("worker_threads", &self.worker_threads)
            .field("name", &self.name)
            .field("abuse", &self.abuse)
            .field("proxy_protocol_from", &self.proxy_protocol_from)
            .field("tls", &self.tls)
            .field("log_format", &self.log_format)
            .field("admin", &self.admin)
            .field("admin_token", &self.admin_token)
            .field("drain_period", &self.drain_period)
            .field("ws_listen", &self.ws_listen)
            .field("ws_allowed_origins", &self.ws_allowed_origins)
            .field("ws_ping_interval", &self.ws_ping_interval)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            max_frame: DEFAULT_MAX_FRAME,
            hash_cost: HashCost::default(),
            hash_threads: default_threads(),
            hash_nice: DEFAULT_HASH_NICE,
            login_idle_timeout: DEFAULT_LOGIN_IDLE_TIMEOUT,
            v2_idle_timeout: DEFAULT_V2_IDLE_TIMEOUT,
            frame_stall_timeout: DEFAULT_FRAME_STALL_TIMEOUT,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            inbox_limit: DEFAULT_INBOX_LIMIT,
            inbox_limit_bytes: DEFAULT_INBOX_LIMIT_BYTES,
            retention: DEFAULT_RETENTION,
            token_ttl: DEFAULT_TOKEN_TTL,
            sqlite_synchronous: SqliteSync::default(),
            v1_write_gap: DEFAULT_V1_WRITE_GAP,
            db_connect_timeout: DEFAULT_DB_CONNECT_TIMEOUT,
            db_pool_size: None,
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            presence_lease: DEFAULT_PRESENCE_LEASE,
            worker_threads: default_threads(),
            name: None,
            log_format: LogFormat::Text,
            abuse: AbuseLimits::default(),
            proxy_protocol_from: Vec::new(),
            tls: None,
            admin: None,
            admin_token: None,
            drain_period: DEFAULT_DRAIN_PERIOD,
            ws_listen: None,
            ws_allowed_origins: AllowedOrigins::default(),
            ws_ping_interval: DEFAULT_WS_PING_INTERVAL,
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Config {
    /// Merges the file named by `--config` (if any) under the flags.
    pub fn from_args(flags: Args) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => Args::default(),
        };
        let args = merge(file, flags)?;
        let defaults = Config::default();
        let listen = match (args.ip, args.port, args.listen) {
            (Some(ip), Some(port), _) => join_host_port(&ip, port),
            (Some(ip), None, _) => join_host_port(&ip, 6000),
            (None, _, Some(listen)) => listen,
            (None, _, None) => defaults.listen,
        };
        let config = Config {
            listen,
            database_url: args.database_url.unwrap_or(defaults.database_url),
            max_frame: args.max_frame.unwrap_or(defaults.max_frame),
            hash_cost: HashCost {
                memory_kib: args.hash_memory_kib.unwrap_or(DEFAULT_HASH_MEMORY_KIB),
                iterations: args.hash_iterations.unwrap_or(DEFAULT_HASH_ITERATIONS),
            },
            hash_threads: args.hash_threads.unwrap_or(defaults.hash_threads),
            hash_nice: args.hash_nice.unwrap_or(defaults.hash_nice),
            login_idle_timeout: duration(
                "login-idle-timeout",
                args.login_idle_timeout,
                defaults.login_idle_timeout,
            )?,
            v2_idle_timeout: duration(
                "v2-idle-timeout",
                args.v2_idle_timeout,
                defaults.v2_idle_timeout,
            )?,
            frame_stall_timeout: duration(
                "frame-stall-timeout",
                args.frame_stall_timeout,
                defaults.frame_stall_timeout,
            )?,
            outbound_queue: args.outbound_queue.unwrap_or(defaults.outbound_queue),
            outbound_queue_bytes: args
                .outbound_queue_bytes
                .unwrap_or(defaults.outbound_queue_bytes),
            inbox_limit: args.inbox_limit.unwrap_or(defaults.inbox_limit),
            inbox_limit_bytes: args.inbox_limit_bytes.unwrap_or(defaults.inbox_limit_bytes),
            retention: duration("retention", args.retention, defaults.retention)?,
            token_ttl: duration("token-ttl", args.token_ttl, defaults.token_ttl)?,
            sqlite_synchronous: match args.sqlite_synchronous.as_deref() {
                None | Some("normal") => SqliteSync::Normal,
                Some("full") => SqliteSync::Full,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        option: "sqlite-synchronous",
                        message: format!("{other:?} is not normal or full"),
                    })
                }
            },
            v1_write_gap: duration("v1-write-gap", args.v1_write_gap, defaults.v1_write_gap)?,
            db_connect_timeout: duration(
                "db-connect-timeout",
                args.db_connect_timeout,
                defaults.db_connect_timeout,
            )?,
            db_pool_size: args.db_pool_size,
            redis_url: args.redis_url,
            redis_prefix: args.redis_prefix.unwrap_or(defaults.redis_prefix),
            presence_lease: duration(
                "presence-lease",
                args.presence_lease,
                defaults.presence_lease,
            )?,
            worker_threads: args.worker_threads.unwrap_or(defaults.worker_threads),
            name: args.name,
            abuse: AbuseLimits {
                max_connections: args.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                max_connections_per_ip: args
                    .max_connections_per_ip
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
                login_failures_per_account_address: args
                    .login_failures_per_account_address
                    .unwrap_or(DEFAULT_LOGIN_FAILURES_PER_ACCOUNT_ADDRESS),
                login_failures_per_address: args
                    .login_failures_per_address
                    .unwrap_or(DEFAULT_LOGIN_FAILURES_PER_ADDRESS),
                login_failures_per_account: args
                    .login_failures_per_account
                    .unwrap_or(DEFAULT_LOGIN_FAILURES_PER_ACCOUNT),
                register_per_address: args
                    .register_per_address
                    .unwrap_or(DEFAULT_REGISTER_PER_ADDRESS),
                create_group_per_user: args
                    .create_group_per_user
                    .unwrap_or(DEFAULT_CREATE_GROUP_PER_USER),
                max_groups_per_user: args
                    .max_groups_per_user
                    .unwrap_or(DEFAULT_MAX_GROUPS_PER_USER),
            },
            proxy_protocol_from: match args.proxy_protocol_from.as_deref() {
                None => Vec::new(),
                Some(list) => parse_cidrs(list)?,
            },
            tls: match (args.tls_cert, args.tls_key) {
                (None, None) => None,
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => {
                    return Err(ConfigError::Invalid {
                        option: "tls-cert/tls-key",
                        message: "give both, or neither".to_owned(),
                    })
                }
            },
            admin: match args.admin.as_deref() {
                None => None,
                Some(text) => Some(text.parse().map_err(|_| ConfigError::Invalid {
                    option: "admin",
                    message: format!("{text:?} is not IP:PORT"),
                })?),
            },
            admin_token: args.admin_token.filter(|t| !t.is_empty()).map(Secret::new),
            drain_period: duration("drain-period", args.drain_period, defaults.drain_period)?,
            ws_listen: match args.ws_listen.as_deref() {
                None => None,
                Some(text) => Some(text.parse().map_err(|_| ConfigError::Invalid {
                    option: "ws-listen",
                    message: format!("{text:?} is not IP:PORT"),
                })?),
            },
            ws_allowed_origins: AllowedOrigins::parse(
                args.ws_allowed_origins.as_deref().unwrap_or(""),
            )
            .map_err(|message| ConfigError::Invalid {
                option: "ws-allowed-origins",
                message,
            })?,
            ws_ping_interval: duration(
                "ws-ping-interval",
                args.ws_ping_interval,
                defaults.ws_ping_interval,
            )?,
            log_format: match args.log_format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        option: "log-format",
                        message: format!("{other:?} is not text or json"),
                    })
                }
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                option,
                message: message.to_owned(),
            })
        };
        if self.max_frame < 64 {
            return invalid("max-frame", "must be at least 64 bytes");
        }
        if self.hash_cost.memory_kib < 8 || self.hash_cost.iterations < 1 {
            return invalid(
                "hash-memory-kib/hash-iterations",
                "argon2 needs at least 8 KiB and 1 pass",
            );
        }
        if self.hash_threads == 0 {
            return invalid("hash-threads", "must be at least 1");
        }
        if !(0..=19).contains(&self.hash_nice) {
            return invalid("hash-nice", "must be between 0 and 19");
        }
        if self.worker_threads == 0 {
            return invalid("worker-threads", "must be at least 1");
        }
        if self
            .db_pool_size
            .is_some_and(|size| !(1..=1000).contains(&size))
        {
            return invalid("db-pool-size", "must be between 1 and 1000");
        }
        if self.abuse.max_connections == 0 || self.abuse.max_connections_per_ip == 0 {
            return invalid(
                "max-connections/max-connections-per-ip",
                "must be at least 1",
            );
        }
        if self.outbound_queue == 0 {
            return invalid("outbound-queue", "must be at least 1");
        }
        if self.outbound_queue_bytes < self.max_frame {
            return invalid("outbound-queue-bytes", "must be at least --max-frame");
        }
        if self.inbox_limit == 0 || self.inbox_limit_bytes < self.max_frame as u64 {
            return invalid(
                "inbox-limit/inbox-limit-bytes",
                "must hold at least one message of --max-frame bytes",
            );
        }
        if self.retention < Duration::from_secs(60) {
            return invalid("retention", "must be at least 1m");
        }
        if self.token_ttl < Duration::from_secs(1) {
            return invalid("token-ttl", "must be at least 1s");
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("mysql:")) {
            return invalid("database-url", "must start with sqlite: or mysql:");
        }
        if self
            .redis_url
            .as_deref()
            .is_some_and(|url| !url.starts_with("redis://") && !url.starts_with("rediss://"))
        {
            return invalid("redis-url", "must start with redis:// or rediss://");
        }
        if self.presence_lease < Duration::from_secs(1) {
            return invalid("presence-lease", "must be at least 1s");
        }
        if self
            .admin
            .is_some_and(|addr| !addr.ip().is_loopback() && self.admin_token.is_none())
        {
            return invalid("admin", "a non-loopback admin address needs --admin-token");
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid("listen", &format!("{:?} is not IP:PORT", self.listen));
        }
        Ok(())
    }
}

/// `10.0.0.0/8,127.0.0.1`: networks, a bare address meaning just itself.
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    option: "proxy-protocol-from",
                    message: format!("{item:?} is not an address or CIDR network"),
                })
        })
        .collect()
}

fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn duration(
    option: &'static str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(&text).map_err(|e| ConfigError::Invalid {
            option,
            message: format!("{text:?}: {e}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<Args, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let mut full = vec!["chatserver"];
        full.extend_from_slice(argv);
        Config::from_args(Args::try_parse_from(full).unwrap())
    }

    #[test]
    fn defaults_are_the_embedded_database_and_owasp_cost() {
        let config = parse(&["127.0.0.1", "0"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.hash_cost.memory_kib, 19456);
        assert_eq!(config.hash_cost.iterations, 2);
        assert_eq!(config.max_frame, 65536);
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("chatcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.toml");
        std::fs::write(&path, "max_frame = 1000\noutbound_queue = 7\n").unwrap();
        let config = parse(&["--config", path.to_str().unwrap(), "--max-frame", "2000"]).unwrap();
        assert_eq!(config.max_frame, 2000);
        assert_eq!(config.outbound_queue, 7);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "max_frame = 1000\nmax_frames = 3\n").unwrap();
        let message = parse(&["--config", bad.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(message.contains("max_frames"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn the_shipped_config_file_parses_to_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/chatserver.toml");
        let config = parse(&["--config", path]).unwrap();
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.database_url, defaults.database_url);
        assert_eq!(config.max_frame, defaults.max_frame);
        assert_eq!(config.hash_cost, defaults.hash_cost);
        assert_eq!(config.hash_nice, defaults.hash_nice);
        assert_eq!(config.login_idle_timeout, defaults.login_idle_timeout);
        assert_eq!(config.v2_idle_timeout, defaults.v2_idle_timeout);
        assert_eq!(config.frame_stall_timeout, defaults.frame_stall_timeout);
        assert_eq!(config.outbound_queue, defaults.outbound_queue);
        assert_eq!(config.v1_write_gap, defaults.v1_write_gap);
        assert_eq!(config.redis_url, None);
        assert_eq!(config.redis_prefix, defaults.redis_prefix);
        assert_eq!(config.presence_lease, defaults.presence_lease);
        assert_eq!(config.abuse, defaults.abuse);
        assert_eq!(config.proxy_protocol_from, defaults.proxy_protocol_from);
        assert_eq!(config.ws_listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(config.ws_allowed_origins, defaults.ws_allowed_origins);
        assert_eq!(config.ws_ping_interval, defaults.ws_ping_interval);
    }

    #[test]
    fn the_hashing_nice_value_is_one_the_kernel_accepts() {
        assert_eq!(parse(&[]).unwrap().hash_nice, 10);
        assert_eq!(parse(&["--hash-nice", "0"]).unwrap().hash_nice, 0);
        for bad in ["--hash-nice=20", "--hash-nice=-1"] {
            let message = parse(&[bad]).unwrap_err().to_string();
            assert!(message.contains("hash-nice"), "{message}");
        }
    }

    #[test]
    fn proxy_networks_are_cidrs_or_addresses() {
        let config = parse(&["--proxy-protocol-from", "10.0.0.0/8, 127.0.0.1,::1"]).unwrap();
        let nets: Vec<String> = config
            .proxy_protocol_from
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        let message = parse(&["--proxy-protocol-from", "10.0.0.0/33"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("proxy-protocol-from"), "{message}");
    }

    #[test]
    fn bad_values_name_the_option() {
        let message = parse(&["--v2-idle-timeout", "soon"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("v2-idle-timeout"), "{message}");
        let message = parse(&["--database-url", "postgres://x"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("database-url"), "{message}");
        for (flag, value, option) in [
            ("--sqlite-synchronous", "fsync", "sqlite-synchronous"),
            ("--inbox-limit", "0", "inbox-limit"),
            ("--retention", "10s", "retention"),
            ("--outbound-queue-bytes", "10", "outbound-queue-bytes"),
        ] {
            let message = parse(&[flag, value]).unwrap_err().to_string();
            assert!(message.contains(option), "{flag} {value}: {message}");
        }
        assert_eq!(
            parse(&["--sqlite-synchronous", "full"])
                .unwrap()
                .sqlite_synchronous,
            SqliteSync::Full
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("mysql://root:secret@127.0.0.1:3306/chat"),
            "mysql://root:***@127.0.0.1:3306/chat"
        );
        assert_eq!(mask_url("sqlite://chat.db"), "sqlite://chat.db");
    }
}
