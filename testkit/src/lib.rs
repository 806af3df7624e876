//! Test-only helpers shared by every test crate of the workspace, each
//! defined once: a client typed on the `protocol` crate (with raw access for
//! tests that assert bytes), names scoped to the test run (databases, Redis
//! prefixes, temp dirs), starters for servers and binaries that stop on
//! drop, and bounded waits.
//!
//! Every wait is bounded ([`WAIT`] unless a test says otherwise). A test
//! that needs MariaDB, Redis or Nginx fails when it is missing; nothing is
//! skipped. `scripts/test.sh` sets `CHAT_TEST_RUN` (see [`run`]) and removes
//! what its run left behind.
//!
//! Features: `chatserver` adds in-process chat servers ([`server`]),
//! `balancer` an in-process balancer ([`lb`]); tests of a crate that neither
//! feature needs do not build those crates.

pub mod backend;
pub mod bin;
pub mod cli;
pub mod client;
pub mod fake_server;
#[cfg(feature = "balancer")]
pub mod lb;
pub mod nginx;
pub mod redis;
pub mod relay;
pub mod resume;
pub mod run;
#[cfg(feature = "chatserver")]
pub mod server;
pub mod tally;
pub mod wait;
pub mod ws;

use std::time::Duration;

/// Bound on any single expected event: a reply, a connect, a line of output.
pub const WAIT: Duration = Duration::from_secs(10);

pub use client::{json_frame, req, who_serves, Client, ReplyExt};
pub use tally::Tally;
pub use wait::{eventually, free_port, wait_until, Deadline};

/// What most tests import: the client, request builders, the protocol's
/// types and the bounded waits.
pub mod prelude {
    pub use crate::client::{json_frame, req, Client, ReplyExt};
    pub use crate::tally::Tally;
    pub use crate::wait::{eventually, free_port, wait_until, Deadline};
    pub use crate::WAIT;
    pub use protocol::{
        Chat, ChatTarget, Errno, Failure, Friend, Group, Incoming, LoginAck, Member, MsgId, Notice,
        Presence, Reply, Request, Role, ServerFrame, Version,
    };
}
