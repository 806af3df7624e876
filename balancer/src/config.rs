//! The configuration file: TOML text → raw structs (unknown keys rejected) →
//! a validated [`Config`] whose defaults are the named constants below.
//!
//! Errors name the line and the key and never echo the file's contents (a
//! config may hold secrets, and the error reaches `/status`): `toml`'s errors
//! are reduced to their line, the key on it and a kind of problem; errors
//! found after parsing (duplicate backends, zero weights, …) look the line
//! up from the key's span.
//!
//! Reading is bounded too: only regular files (after following symlinks), at
//! most [`MAX_CONFIG_BYTES`], opened without blocking and read on a thread of
//! its own within [`READ_TIMEOUT`], so a FIFO, `/dev/zero` or a hung network
//! mount can neither freeze nor bloat the balancer.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// Default `weight` of a backend.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Highest accepted `weight`; keeps the smooth round-robin sums far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;
/// Default `[health] kind`.
pub const DEFAULT_HEALTH_KIND: HealthKind = HealthKind::Chat;
/// Default `[health] interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Default `[health] timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Default `[health] rise`: consecutive successes that bring a down backend back.
pub const DEFAULT_RISE: u32 = 2;
/// Default `[health] fall`: consecutive failures that take an up backend out.
pub const DEFAULT_FALL: u32 = 3;
/// Default `connect_timeout` for a client connection's backend connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `retries`: further backends tried after the first connect fails.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default `max_connections` per backend (0 = unlimited).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 0;
/// Default `slow_start` (0 = off).
pub const DEFAULT_SLOW_START: Duration = Duration::ZERO;
/// Default `drain_timeout` for connections to a removed backend (0 = wait until they close).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::ZERO;
/// Default `shutdown_grace`: how long connections may finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default `idle_timeout` (0 = off: chat connections sit idle for hours).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::ZERO;
/// Default `response_timeout` (0 = off: a v1 chat message gets no reply, so
/// silence after a client's bytes is normal there).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::ZERO;
/// Default `half_close`: a side's EOF is passed on to the other side as a
/// TCP half-close, and the connection ends once both sides have sent theirs
/// (what a plain TCP connection does; Nginx's `proxy_half_close on`).
pub const DEFAULT_HALF_CLOSE: bool = true;
/// Default `proxy_protocol`: backends get the client's bytes only.
pub const DEFAULT_PROXY_PROTOCOL: bool = false;
/// Largest config file read; a bigger one is refused unread.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// How long reading the config file may take before it is given up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Which health check to run against every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// Send a PING frame and expect a PONG frame back.
    Chat,
    /// A TCP connect that succeeds is enough.
    Tcp,
}

/// Health-check settings (`[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: DEFAULT_HEALTH_KIND,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// One `[[backend]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// `host:port`; also the identity under which health and counters survive reloads.
    pub address: String,
    pub weight: u32,
    /// Connection limit for this backend; `None` means unlimited.
    pub max_connections: Option<u32>,
    /// Send a PROXY protocol v2 header first (global `proxy_protocol`, or the backend's own).
    pub proxy_protocol: bool,
}

/// A value kept out of logs, `Debug` output and `/status`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[tls]`: terminate TLS on `listen` with this certificate chain and key
/// (PEM files, relative to the working directory). Both files are watched
/// and reloaded on change; open connections keep the certificate they
/// were set up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: String,
    pub admin: Option<String>,
    /// Bearer token the admin server requires; `None`: open (loopback only).
    pub admin_token: Option<Secret>,
    pub connect_timeout: Duration,
    pub retries: u32,
    /// `None`: off.
    pub slow_start: Option<Duration>,
    /// `None`: connections to a removed backend run until they close.
    pub drain_timeout: Option<Duration>,
    pub shutdown_grace: Duration,
    /// `None`: off.
    pub idle_timeout: Option<Duration>,
    /// A client sent bytes and the backend answered none within this: a
    /// backend failure. `None`: off.
    pub response_timeout: Option<Duration>,
    /// `false`: the first EOF from either side closes both (Nginx's
    /// default, `proxy_half_close off`). Chat clients never half-close, and
    /// not waiting for the backend's own EOF saves a wake-up, a read and a
    /// `shutdown` per connection.
    pub half_close: bool,
    pub health: HealthConfig,
    /// `None`: plain TCP on `listen`.
    pub tls: Option<TlsConfig>,
    pub backends: Vec<BackendConfig>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, too big, or too slow to read.
    #[error("refusing to read {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    /// Bad TOML, a wrong type, an unknown key: `toml`'s message names the line.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value that parsed but makes no sense.
    #[error("{path}: {line}, key `{key}`: {reason}", line = DisplayLine(*.line))]
    Invalid {
        path: String,
        line: Option<usize>,
        key: String,
        reason: String,
    },
}

struct DisplayLine(Option<usize>);

impl fmt::Display for DisplayLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}"),
            None => f.write_str("(whole file)"),
        }
    }
}

/// A duration written as a string such as `"500ms"` or `"2s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("off") {
            return Ok(Dur(Duration::ZERO));
        }
        humantime::parse_duration(text).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write it like \"500ms\", \"2s\" or \"1m\""
            ))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<String>,
    admin: Option<Spanned<String>>,
    admin_token: Option<Spanned<String>>,
    response_timeout: Option<Dur>,
    proxy_protocol: Option<bool>,
    half_close: Option<bool>,
    connect_timeout: Option<Spanned<Dur>>,
    retries: Option<u32>,
    max_connections: Option<u32>,
    slow_start: Option<Dur>,
    drain_timeout: Option<Dur>,
    shutdown_grace: Option<Dur>,
    idle_timeout: Option<Dur>,
    health: Option<RawHealth>,
    tls: Option<RawTls>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Option<HealthKind>,
    interval: Option<Spanned<Dur>>,
    timeout: Option<Spanned<Dur>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<String>,
    weight: Option<Spanned<u32>>,
    max_connections: Option<u32>,
    proxy_protocol: Option<bool>,
}

/// Maps byte offsets of the source to 1-based line numbers.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: Range<usize>) -> Option<usize> {
        let end = span.start.min(self.text.len());
        Some(self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1)
    }

    fn invalid(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.name.to_string(),
            line: span.and_then(|s| self.line(s)),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

fn nonzero(d: Option<Dur>, default: Duration) -> Option<Duration> {
    let d = d.map_or(default, |d| d.0);
    (!d.is_zero()).then_some(d)
}

/// Checks that `address` looks like `host:port` with a numeric port.
fn valid_address(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// True for `127.x.x.x:port`, `[::1]:port` and `localhost:port`.
fn is_loopback(address: &str) -> bool {
    let Some((host, _)) = address.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads `path` under the rules above, on the calling thread; the callers
/// put it on a thread of its own.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refused = |reason: String| ConfigError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO for reading would wait for a writer.
    let kind = |m: &std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        }
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(refused(format!(
            "it is {}, not a regular file",
            kind(&meta)
        )));
    }
    // Non-blocking, in case it was swapped for a FIFO since; checked again
    // on the open handle, which cannot change any more.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(refused(format!(
            "it is {}, not a regular file",
            kind(&meta)
        )));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(refused(format!(
            "it is larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size may grow while we read: never take more than the bound.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(refused(format!(
            "it is larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    Ok(bytes)
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| ConfigError::Refused {
        path: path.to_path_buf(),
        reason: format!(
            "it is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// The reads one reader (the reloader, the TLS reloader) has running: a
/// read stuck in the kernel keeps its thread, and while it does, that
/// reader starts no other, so a hung mount costs one thread, not one per
/// file change.
#[derive(Debug, Clone, Default)]
pub struct Reads(std::sync::Arc<()>);

impl Reads {
    fn busy(&self) -> bool {
        std::sync::Arc::strong_count(&self.0) > 1
    }
}

/// Reads a small file (config, certificate, key) under the same rules as
/// the config: a regular file of at most [`MAX_CONFIG_BYTES`], on a thread
/// of its own, within [`READ_TIMEOUT`]; the runtime only awaits.
pub async fn read_file_async(path: &Path, reads: &Reads) -> Result<Vec<u8>, ConfigError> {
    if reads.busy() {
        return Err(ConfigError::Refused {
            path: path.to_path_buf(),
            reason: "an earlier read is still hanging".to_string(),
        });
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let running = reads.0.clone();
    read_on_thread(path, move |r| {
        drop(running);
        let _ = tx.send(r);
    })?;
    match tokio::time::timeout(READ_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        _ => Err(timed_out(path)),
    }
}

/// [`read_file_async`] for callers outside the runtime (start-up).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    read_on_thread(path, move |r| {
        let _ = tx.send(r);
    })?;
    rx.recv_timeout(READ_TIMEOUT).map_err(|_| timed_out(path))?
}

/// Runs [`read_bounded`] on a detached thread that hands the result to
/// `send`, so a read stuck in the kernel holds that thread only, never a
/// runtime thread or shutdown.
fn read_on_thread(
    path: &Path,
    send: impl FnOnce(Result<Vec<u8>, ConfigError>) + Send + 'static,
) -> Result<(), ConfigError> {
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("config-read".into())
        .spawn(move || send(read_bounded(&owned)))
        .map(drop)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn timed_out(path: &Path) -> ConfigError {
    ConfigError::Refused {
        path: path.to_path_buf(),
        reason: format!("reading took more than {READ_TIMEOUT:?}"),
    }
}

impl Config {
    /// Reads and validates the file at `path`, blocking the calling thread
    /// for at most [`READ_TIMEOUT`] (plus parsing). For start-up; a running
    /// balancer uses [`Config::load_async`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = utf8(path, read_file(path)?)?;
        Config::parse(&text, &path.display().to_string())
    }

    /// [`Config::load`] without blocking a runtime thread.
    pub async fn load_async(path: &Path, reads: &Reads) -> Result<Config, ConfigError> {
        let text = utf8(path, read_file_async(path, reads).await?)?;
        let name = path.display().to_string();
        // Parsing 1 MiB of TOML takes milliseconds, but not on a runtime thread.
        tokio::task::spawn_blocking(move || Config::parse(&text, &name))
            .await
            .unwrap_or_else(|_| Err(timed_out(path)))
    }

    /// Parses and validates TOML text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: describe_toml_error(&e, text),
        })?;
        let src = Source { name, text };

        let listen = raw.listen.get_ref().trim().to_string();
        if !valid_address(&listen) {
            return Err(src.invalid(Some(raw.listen.span()), "listen", "expected host:port"));
        }
        let admin = match raw.admin {
            Some(a) if !valid_address(a.get_ref().trim()) => {
                return Err(src.invalid(Some(a.span()), "admin", "expected host:port"));
            }
            Some(a) => Some(a.into_inner().trim().to_string()),
            None => None,
        };
        let admin_token = match raw.admin_token {
            Some(t) if t.get_ref().trim().len() < 16 => {
                return Err(src.invalid(
                    Some(t.span()),
                    "admin_token",
                    "must be at least 16 characters",
                ));
            }
            Some(t) => Some(Secret::new(t.into_inner().trim())),
            None => None,
        };
        if let (Some(a), None) = (&admin, &admin_token) {
            if !is_loopback(a) {
                return Err(src.invalid(
                    None,
                    "admin",
                    "an admin address beyond loopback needs `admin_token`",
                ));
            }
        }

        let connect_timeout = match raw.connect_timeout {
            Some(d) if d.get_ref().0.is_zero() => {
                return Err(src.invalid(Some(d.span()), "connect_timeout", "must be more than 0"));
            }
            Some(d) => d.into_inner().0,
            None => DEFAULT_CONNECT_TIMEOUT,
        };

        let health = match raw.health {
            None => HealthConfig::default(),
            Some(h) => {
                let mut cfg = HealthConfig::default();
                if let Some(kind) = h.kind {
                    cfg.kind = kind;
                }
                let timeout_span = h.timeout.as_ref().map(|t| t.span());
                for (key, value, slot) in [
                    ("health.interval", h.interval, &mut cfg.interval),
                    ("health.timeout", h.timeout, &mut cfg.timeout),
                ] {
                    if let Some(v) = value {
                        if v.get_ref().0.is_zero() {
                            return Err(src.invalid(Some(v.span()), key, "must be more than 0"));
                        }
                        *slot = v.into_inner().0;
                    }
                }
                for (key, value, slot) in [
                    ("health.rise", h.rise, &mut cfg.rise),
                    ("health.fall", h.fall, &mut cfg.fall),
                ] {
                    if let Some(v) = value {
                        if *v.get_ref() == 0 {
                            return Err(src.invalid(Some(v.span()), key, "must be at least 1"));
                        }
                        *slot = v.into_inner();
                    }
                }
                if timeout_span.is_none() {
                    // The default timeout shrinks to fit a short interval.
                    cfg.timeout = cfg.timeout.min(cfg.interval);
                } else if cfg.timeout > cfg.interval {
                    return Err(src.invalid(
                        timeout_span,
                        "health.timeout",
                        "must not be longer than health.interval",
                    ));
                }
                cfg
            }
        };

        let tls = match raw.tls {
            None => None,
            Some(t) => {
                for (key, v) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                    if v.get_ref().trim().is_empty() {
                        return Err(src.invalid(Some(v.span()), key, "must name a file"));
                    }
                }
                Some(TlsConfig {
                    cert: PathBuf::from(t.cert.into_inner().trim()),
                    key: PathBuf::from(t.key.into_inner().trim()),
                })
            }
        };

        if raw.backend.is_empty() {
            return Err(src.invalid(None, "backend", "at least one [[backend]] is needed"));
        }
        let default_max = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let default_pp = raw.proxy_protocol.unwrap_or(DEFAULT_PROXY_PROTOCOL);
        let mut seen = HashSet::new();
        let mut backends = Vec::with_capacity(raw.backend.len());
        for b in raw.backend {
            let span = b.address.span();
            let address = b.address.into_inner().trim().to_string();
            if !valid_address(&address) {
                return Err(src.invalid(Some(span), "backend.address", "expected host:port"));
            }
            if !seen.insert(address.clone()) {
                return Err(src.invalid(
                    Some(span),
                    "backend.address",
                    "this address is listed twice",
                ));
            }
            let weight = match b.weight {
                Some(w) if !(1..=MAX_WEIGHT).contains(w.get_ref()) => {
                    return Err(src.invalid(
                        Some(w.span()),
                        "backend.weight",
                        format!("must be between 1 and {MAX_WEIGHT}"),
                    ));
                }
                Some(w) => w.into_inner(),
                None => DEFAULT_WEIGHT,
            };
            let max = b.max_connections.unwrap_or(default_max);
            backends.push(BackendConfig {
                address,
                weight,
                max_connections: (max > 0).then_some(max),
                proxy_protocol: b.proxy_protocol.unwrap_or(default_pp),
            });
        }

        Ok(Config {
            listen,
            admin,
            admin_token,
            connect_timeout,
            retries: raw.retries.unwrap_or(DEFAULT_RETRIES),
            slow_start: nonzero(raw.slow_start, DEFAULT_SLOW_START),
            drain_timeout: nonzero(raw.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
            shutdown_grace: raw.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0),
            idle_timeout: nonzero(raw.idle_timeout, DEFAULT_IDLE_TIMEOUT),
            response_timeout: nonzero(raw.response_timeout, DEFAULT_RESPONSE_TIMEOUT),
            half_close: raw.half_close.unwrap_or(DEFAULT_HALF_CLOSE),
            health,
            tls,
            backends,
        })
    }
}

/// `toml`'s error as "line N, key `K`: what", without the excerpt of the
/// file `toml` would print and without any value from it.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let line_no = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let line_text = line_no.and_then(|n| text.lines().nth(n - 1)).unwrap_or("");
    let message = e.message();
    let first = message.lines().next().unwrap_or("").trim();
    // A missing key's span is the table it is missing from, whose first
    // line names another key.
    let key = line_no
        .filter(|_| !first.starts_with("missing field"))
        .and_then(|n| key_at(text, n));
    let expected = || {
        first
            .rsplit_once(", expected ")
            .map(|(_, x)| format!(", expected {x}"))
            .unwrap_or_default()
    };
    let what = if first.starts_with("unknown field") {
        "unknown key".to_string()
    } else if let Some(rest) = first.strip_prefix("missing field ") {
        format!("missing key {rest}")
    } else if first.starts_with("invalid type") {
        format!("wrong type{}", expected())
    } else if first.starts_with("invalid value") || first.starts_with("unknown variant") {
        format!("invalid value{}", expected())
    } else if first.starts_with("invalid duration") {
        "invalid duration; write it like \"500ms\", \"2s\" or \"1m\"".to_string()
    } else if first.starts_with("duplicate key") {
        "duplicate key".to_string()
    } else if leaks(first, line_text) {
        "syntax error".to_string()
    } else {
        format!("syntax error: {first}")
    };
    let mut out = match line_no {
        Some(n) => format!("line {n}"),
        None => "(whole file)".to_string(),
    };
    if let Some(key) = key {
        out += &format!(", key `{key}`");
    }
    out + ": " + &what
}

/// Whether `message` repeats part of the value on `line`.
fn leaks(message: &str, line: &str) -> bool {
    let value = line.split_once('=').map_or(line, |(_, v)| v);
    value
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.len() >= 3)
        .any(|w| message.contains(w))
}

/// The dotted key defined on 1-based line `n` (with its table's name in
/// front), when the line is a plain `key = value` or a table header.
fn key_at(text: &str, n: usize) -> Option<String> {
    let bare = |k: &str| {
        let k = k.trim();
        (!k.is_empty()
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .then(|| k.to_string())
    };
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(n - 1)?.trim();
    if let Some(header) = line.strip_prefix('[') {
        return bare(header.trim_start_matches('[').split(']').next()?);
    }
    let key = bare(line.split_once('=')?.0)?;
    let table = lines[..n - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|h| bare(h.trim_start_matches('[').split(']').next()?))
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
listen = "0.0.0.0:8000"
admin = "127.0.0.1:9100"          # metrics and status; optional
[health]
kind = "chat"                      # "chat" (PING/PONG) or "tcp" (connect)
interval = "1s"
timeout = "500ms"
rise = 2
fall = 3
[[backend]]
address = "127.0.0.1:6000"
weight = 3
[[backend]]
address = "127.0.0.1:6002"
weight = 1
"#;

    #[test]
    fn issue_sample_parses() {
        let c = Config::parse(SAMPLE, "lb.toml").unwrap();
        assert_eq!(c.listen, "0.0.0.0:8000");
        assert_eq!(c.admin.as_deref(), Some("127.0.0.1:9100"));
        assert_eq!(c.health, HealthConfig::default());
        assert_eq!(
            c.backends,
            vec![
                BackendConfig {
                    address: "127.0.0.1:6000".into(),
                    weight: 3,
                    max_connections: None,
                    proxy_protocol: false,
                },
                BackendConfig {
                    address: "127.0.0.1:6002".into(),
                    weight: 1,
                    max_connections: None,
                    proxy_protocol: false,
                },
            ]
        );
    }

    #[test]
    fn shipped_lb_toml_parses() {
        let text = include_str!("../../config/lb.toml");
        let c = Config::parse(text, "config/lb.toml").unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[0].weight, 3);
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:1\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.admin, None);
        assert_eq!(c.backends[0].weight, DEFAULT_WEIGHT);
        assert_eq!(c.backends[0].max_connections, None);
        assert_eq!(c.health.kind, HealthKind::Chat);
        assert_eq!(c.health.interval, Duration::from_secs(1));
        assert_eq!(c.health.timeout, Duration::from_millis(500));
        assert_eq!((c.health.rise, c.health.fall), (2, 3));
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert_eq!(c.slow_start, None);
        assert_eq!(c.drain_timeout, None);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    }

    #[test]
    fn durations_and_limits() {
        let c = Config::parse(
            r#"
listen = "127.0.0.1:0"
connect_timeout = "250ms"
slow_start = "1m"
drain_timeout = "30s"
idle_timeout = "off"
shutdown_grace = "1h 2m"
max_connections = 100
[health]
kind = "tcp"
interval = "2s"
[[backend]]
address = "a:1"
[[backend]]
address = "b:2"
max_connections = 5
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.slow_start, Some(Duration::from_secs(60)));
        assert_eq!(c.drain_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3720));
        assert_eq!(c.health.kind, HealthKind::Tcp);
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(c.health.timeout, DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(c.backends[0].max_connections, Some(100));
        assert_eq!(c.backends[1].max_connections, Some(5));
    }

    fn err(text: &str) -> String {
        Config::parse(text, "lb.toml").unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_key() {
        let e = err("listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\nwieght = 2\n");
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("wieght"), "{e}");
        let e = err("listen = \"127.0.0.1:0\"\n[health]\nkind = \"tcp\"\nrize = 2\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 4") && e.contains("rize"), "{e}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let e = err("listen = \"127.0.0.1:0\"\n[health]\ninterval = \"soon\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 3") && e.contains("interval"), "{e}");
        let e = err(
            "listen = \"127.0.0.1:0\"\n[health]\ninterval = 5\n[[backend]]\naddress = \"a:1\"\n",
        );
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let e = err("listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\nweight = 0\n");
        assert_eq!(
            e,
            "lb.toml: line 4, key `backend.weight`: must be between 1 and 10000"
        );
        let e = err("listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(
            e.contains("line 5") && e.contains("backend.address") && e.contains("twice"),
            "{e}"
        );
        let e =
            err("listen = \"127.0.0.1:0\"\n[health]\nfall = 0\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 3") && e.contains("health.fall"), "{e}");
        let e = err("listen = \"nowhere\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 1") && e.contains("listen"), "{e}");
        let e = err("listen = \"127.0.0.1:0\"\n");
        assert!(e.contains("backend"), "{e}");
        let e = err(
            "listen = \"127.0.0.1:0\"\nconnect_timeout = \"0s\"\n[[backend]]\naddress = \"a:1\"\n",
        );
        assert!(e.contains("line 2") && e.contains("connect_timeout"), "{e}");
    }

    #[test]
    fn errors_never_echo_the_file() {
        // The issue's case: a stray secret line must show only line and key.
        for text in [
            "listen = \"127.0.0.1:0\"\nsecret_token = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n",
            "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\nweight = \"hunter2\"\n",
            "listen = \"127.0.0.1:0\"\n[health]\nkind = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n",
            "listen = \"127.0.0.1:0\"\nidle_timeout = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n",
            "listen = \"127.0.0.1:0\"\nadmin_token = \"hunter2 = \n[[backend]]\naddress = \"a:1\"\n",
            "listen = \"127.0.0.1:0\"\nadmin_token = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n",
        ] {
            let e = err(text);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("line 2") || e.contains("line 4") || e.contains("line 3"), "{e}");
        }
        let e = err("listen = \"127.0.0.1:0\"\nsecret_token = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n");
        assert_eq!(e, "lb.toml: line 2, key `secret_token`: unknown key");
        let e = err("listen = \"127.0.0.1:0\"\n[health]\nkind = \"hunter2\"\n[[backend]]\naddress = \"a:1\"\n");
        assert_eq!(
            e,
            "lb.toml: line 3, key `health.kind`: invalid value, expected `chat` or `tcp`"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:9100\"\nadmin_token = \"0123456789abcdef-secret\"\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.admin_token.as_ref().unwrap().expose(),
            "0123456789abcdef-secret"
        );
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
    }

    #[test]
    fn admin_beyond_loopback_needs_a_token() {
        let e = err(
            "listen = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:9100\"\n[[backend]]\naddress = \"a:1\"\n",
        );
        assert!(e.contains("admin_token"), "{e}");
        for ok in ["127.0.0.1:0", "[::1]:9100", "localhost:9100"] {
            Config::parse(
                &format!(
                    "listen = \"127.0.0.1:0\"\nadmin = \"{ok}\"\n[[backend]]\naddress = \"a:1\"\n"
                ),
                "t",
            )
            .unwrap();
        }
    }

    #[test]
    fn half_close_defaults_to_on_and_can_be_turned_off() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        assert!(c.half_close);
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\nhalf_close = false\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        assert!(!c.half_close);
        let e =
            err("listen = \"127.0.0.1:0\"\nhalf_close = \"no\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("half_close"), "{e}");
    }

    #[test]
    fn proxy_protocol_global_and_per_backend() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\nproxy_protocol = true\nresponse_timeout = \"3s\"\n\
             [[backend]]\naddress = \"a:1\"\n[[backend]]\naddress = \"b:1\"\nproxy_protocol = false\n",
            "t",
        )
        .unwrap();
        assert!(c.backends[0].proxy_protocol);
        assert!(!c.backends[1].proxy_protocol);
        assert_eq!(c.response_timeout, Some(Duration::from_secs(3)));
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        assert!(!c.backends[0].proxy_protocol);
        assert_eq!(c.response_timeout, None);
    }

    #[test]
    fn check_timeout_may_not_exceed_the_interval() {
        let e = err("listen = \"127.0.0.1:0\"\n[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 4") && e.contains("health.timeout"), "{e}");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = temp_dir("kinds");
        let fifo = dir.join("fifo.toml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let zero = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, "# x\n".repeat(300_000)).unwrap();
        for (path, want) in [
            (&fifo, "a FIFO"),
            (&link, "a FIFO"),
            (&zero, "a character device"),
            (&dir, "a directory"),
            (&big, "larger than 1024 KiB"),
        ] {
            let started = std::time::Instant::now();
            let e = Config::load(path).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_section() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[backend]]\naddress = \"a:1\"\n",
            "t",
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.cert, tls.key),
            (PathBuf::from("c.pem"), PathBuf::from("k.pem"))
        );
        let e = err(
            "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"c.pem\"\n[[backend]]\naddress = \"a:1\"\n",
        );
        assert!(e.contains("key"), "{e}");
        let e = err("listen = \"127.0.0.1:0\"\n[tls]\ncert = \"\"\nkey = \"k\"\n[[backend]]\naddress = \"a:1\"\n");
        assert!(e.contains("line 3") && e.contains("tls.cert"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_read_holds_off_further_reads() {
        let dir = temp_dir("reads");
        let file = dir.join("lb.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        let reads = Reads::default();
        let stuck = reads.0.clone(); // as a thread stuck in read(2) would
        let e = read_file_async(&file, &reads)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("still hanging"), "{e}");
        drop(stuck);
        assert_eq!(read_file_async(&file, &reads).await.unwrap(), b"x = 1\n");
        assert!(!reads.busy(), "the finished thread let go");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
