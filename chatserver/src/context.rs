//! Everything a command may use, built once at start-up and shared by all
//! sessions through an `Arc`. No globals.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::Bus;
use crate::directory::Directory;
use crate::guard::Guard;
use crate::hasher::PasswordHasher;
use crate::metrics::Metrics;
use crate::mid::MidGenerator;
use crate::refusals::Refusals;
use crate::registry::Registry;
use crate::store::Store;
use crate::writer::Writer;

/// Per-connection limits, copied out of the config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame: usize,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub login_idle_timeout: Duration,
    pub v2_idle_timeout: Duration,
    pub frame_stall_timeout: Duration,
    /// Least time between two frames written to a v1 connection.
    pub v1_write_gap: Duration,
    /// At shutdown, v2 sessions get GOAWAY at a random point of this period.
    pub drain_period: Duration,
}

pub struct Context {
    pub server_name: String,
    pub limits: Limits,
    pub store: Store,
    /// Stores chat messages and moves inbox cursors, in group commits.
    pub writer: Writer,
    /// How long a login token stays valid.
    pub token_ttl: Duration,
    pub registry: Registry,
    pub directory: Directory,
    pub hasher: PasswordHasher,
    /// Connection, login and signup limits, and the PROXY policy.
    pub guard: Guard,
    /// Every limit's refusals, counted and log-throttled.
    pub refusals: Arc<Refusals>,
    /// Counters and gauges behind the admin server's `/metrics`.
    pub metrics: Metrics,
    /// Set at SIGTERM: `/readyz` answers 503 from then on.
    pub shutting_down: AtomicBool,
    /// The last readiness probe's answer (`readiness`), what PONG reports.
    pub ready: AtomicBool,
    pub mids: MidGenerator,
    /// Other servers: Redis in cluster mode (`--redis-url`), else local only.
    pub bus: Bus,
}
