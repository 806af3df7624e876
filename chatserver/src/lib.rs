//! The ChatChat chat server as a library: `main.rs` parses options and calls
//! [`Server::start`] and [`Server::serve`]; tests do the same on port 0.

#![forbid(unsafe_code)]

mod admin;
mod admission;
pub mod bus;
pub mod calls;
pub mod command;
pub mod config;
pub mod connection_limits;
pub mod context;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod guard;
pub mod hasher;
mod inbound;
pub mod login_limit;
pub mod mailbox;
pub mod metrics;
pub mod mid;
pub mod notices;
pub mod proxy_header;
pub mod rate_limit;
mod readiness;
pub mod refusals;
pub mod registry;
mod retention;
mod server;
mod session;
pub mod signup_limit;
pub mod store;
pub mod tokens;
mod transport;
pub mod web;
pub mod writer;

pub use config::{Args, Config};
pub use error::{BusError, ConfigError, HashError, StartError, StoreError, Unavailable};
pub use server::{run, Server};
