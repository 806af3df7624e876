//! Everything that protects the server from its clients, built once from
//! the config: connection slots, the PROXY protocol policy, and the login
//! and signup limits. One field of the context, so commands reach it the
//! way they reach everything else.

use std::sync::Arc;

use crate::bus::RedisBus;
use crate::config::Config;
use crate::connection_limits::ConnectionLimits;
use crate::login_limit::LoginLimiter;
use crate::proxy_header::ProxyPolicy;
use crate::signup_limit::SignupLimiter;

#[derive(Default)]
pub struct Guard {
    pub connections: ConnectionLimits,
    pub proxy: ProxyPolicy,
    pub logins: LoginLimiter,
    pub signups: SignupLimiter,
}

impl Guard {
    /// `cluster`: in cluster mode, the Redis bus that shares the login
    /// ceiling per account.
    pub fn new(config: &Config, cluster: Option<Arc<RedisBus>>) -> Self {
        Self {
            connections: ConnectionLimits::new(&config.abuse),
            proxy: ProxyPolicy::new(config.proxy_protocol_from.clone()),
            logins: LoginLimiter::new(
                &config.abuse,
                cluster.map(|redis| (redis, config.redis_prefix.clone())),
            ),
            signups: SignupLimiter::new(&config.abuse),
        }
    }
}
