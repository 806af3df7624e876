//! The configuration file: TOML text → raw structs (unknown keys rejected) →
//! a validated [`Config`] whose defaults are the named constants below.
//!
//! Errors name the line and the key: syntax and type errors come from `toml`,
//! which prints the line; errors found after parsing (duplicate backends,
//! zero weights, …) look the line up from the key's span.

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
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: String,
    pub admin: Option<String>,
    pub connect_timeout: Duration,
    pub retries: u32,
    /// `None`: off.
    pub slow_start: Option<Duration>,
    /// `None`: connections to a removed backend run until they close.
    pub drain_timeout: Option<Duration>,
    pub shutdown_grace: Duration,
    /// `None`: off.
    pub idle_timeout: Option<Duration>,
    pub health: HealthConfig,
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
    connect_timeout: Option<Spanned<Dur>>,
    retries: Option<u32>,
    max_connections: Option<u32>,
    slow_start: Option<Dur>,
    drain_timeout: Option<Dur>,
    shutdown_grace: Option<Dur>,
    idle_timeout: Option<Dur>,
    health: Option<RawHealth>,
    #[serde(default)]
    backend: Vec<RawBackend>,
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

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            message: e.to_string().trim_end().to_string(),
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
                cfg
            }
        };

        if raw.backend.is_empty() {
            return Err(src.invalid(None, "backend", "at least one [[backend]] is needed"));
        }
        let default_max = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
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
                    format!("{address} is listed twice"),
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
            });
        }

        Ok(Config {
            listen,
            admin,
            connect_timeout,
            retries: raw.retries.unwrap_or(DEFAULT_RETRIES),
            slow_start: nonzero(raw.slow_start, DEFAULT_SLOW_START),
            drain_timeout: nonzero(raw.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
            shutdown_grace: raw.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0),
            idle_timeout: nonzero(raw.idle_timeout, DEFAULT_IDLE_TIMEOUT),
            health,
            backends,
        })
    }
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
                    max_connections: None
                },
                BackendConfig {
                    address: "127.0.0.1:6002".into(),
                    weight: 1,
                    max_connections: None
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
}
