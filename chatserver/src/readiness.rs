//! Whether this server should get new clients: the database answers, Redis
//! too in cluster mode, and it is not shutting down. `/readyz` asks
//! [`not_ready`] on each request; PONG (and so the balancer's chat health
//! check) reads the last answer of a probe that runs every second, so a
//! heartbeat never waits for the database.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// How long a readiness check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the probe behind PONG's `ready` runs.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why the server should not get new clients now, if it should not.
pub async fn not_ready(ctx: &Context) -> Option<String> {
    if ctx.shutting_down.load(Ordering::Relaxed) {
        return Some("shutting down".into());
    }
    if let Err(error) = ctx.store.ping(CHECK_TIMEOUT).await {
        return Some(format!("database unreachable: {error}"));
    }
    if !ctx.bus.reachable() {
        return Some("redis unreachable".into());
    }
    None
}

/// What PONG says: the last probe's answer, and not while shutting down.
pub fn is_ready(ctx: &Context) -> bool {
    !ctx.shutting_down.load(Ordering::Relaxed) && ctx.ready.load(Ordering::Relaxed)
}

/// Probes every second until `stop` or the shutdown (from then on PONG
/// says not ready anyway), logging each change.
pub async fn probe(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        if ctx.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let reason = tokio::select! {
            _ = stop.cancelled() => return,
            reason = not_ready(&ctx) => reason,
        };
        let was = ctx.ready.swap(reason.is_none(), Ordering::Relaxed);
        match (was, reason) {
            (true, Some(reason)) => {
                tracing::warn!(%reason, "not ready: PING now answers ready:false")
            }
            (false, None) => tracing::info!("ready again"),
            _ => {}
        }
    }
}
