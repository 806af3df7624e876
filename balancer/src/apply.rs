//! Applying a validated config to the running balancer: diff it against the
//! current snapshot, carry backend states over by address, start and stop
//! health tasks, swap the snapshot, and let removed backends drain.
//!
//! Established connections hold their backend's state, not the snapshot, so
//! a swap never touches them; only a drain timeout may end them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{BackendState, Snapshot};
use crate::config::Config;
use crate::diff::{diff, Diff};
use crate::health;
use crate::shared::Shared;

/// Applies `new` and returns what changed. `listen` and `admin` keep their
/// old values: the sockets are bound once, so a change needs a restart.
pub fn apply(shared: &Arc<Shared>, mut new: Config) -> Diff {
    let old = shared.snapshot();
    let d = diff(&old.config, &new);
    shared.reloads.record_ok();
    if d.is_empty() {
        return d;
    }
    if d.listen_changed {
        warn!(old = %old.config.listen, new = %new.listen, "`listen` changed: restart to use it; keeping the old address");
        new.listen = old.config.listen.clone();
    }
    if d.admin_changed {
        warn!(old = ?old.config.admin, new = ?new.admin, "`admin` changed: restart to use it; keeping the old address");
        new.admin = old.config.admin.clone();
    }
    if d.tls_toggled {
        warn!("`[tls]` switched on or off: restart to use it; keeping the old setting");
        new.tls = old.config.tls.clone();
    }
    for (address, from, to) in &d.reweighted {
        info!(backend = %address, from, to, "weight changed");
    }
    // Health tasks are spawned once the lock is released and the new
    // snapshot is out, so their first read already sees the new config.
    let mut to_spawn = Vec::new();
    let snapshot = {
        let mut reg = shared.registry.lock().unwrap();
        for address in &d.removed {
            if let Some((state, stop)) = reg.current.remove(address) {
                stop.cancel();
                let generation = state.mark_removed();
                info!(backend = %address, active = state.active(), "backend removed; its connections carry on");
                if let Some(drain) = new.drain_timeout {
                    spawn_drain_timer(state.clone(), generation, drain, shared.hard_stop.clone());
                }
                reg.draining.push(state);
            }
        }
        for address in &d.added {
            // A backend removed and re-added before it drained keeps its
            // state: its counters and open connections carry on.
            let state = match reg.draining.iter().position(|s| &s.address == address) {
                Some(i) => reg.draining.swap_remove(i),
                None => BackendState::new(address),
            };
            state.mark_added();
            let stop = shared.shutdown.child_token();
            to_spawn.push((state.clone(), stop.clone()));
            info!(backend = %address, "backend added");
            reg.current.insert(address.clone(), (state, stop));
        }
        reg.draining.retain(|s| s.active() > 0);
        let generation = old.generation + 1;
        Snapshot::build(Arc::new(new), generation, |b| {
            reg.current[&b.address].0.clone()
        })
    };
    shared.replace_snapshot(snapshot);
    for (state, stop) in to_spawn {
        tokio::spawn(health::run_checker(shared.clone(), state, stop));
    }
    d
}

/// After `drain`, ends the connections a removed backend still has, unless
/// it was re-added meanwhile (the generation says so) or shutdown's own
/// deadline takes over first.
fn spawn_drain_timer(
    state: Arc<BackendState>,
    generation: u64,
    drain: Duration,
    hard_stop: CancellationToken,
) {
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(drain) => {
                if state.expire_drain(generation) && state.active() > 0 {
                    warn!(backend = %state.address, "drain timeout: closing its remaining connections");
                }
            }
            _ = hard_stop.cancelled() => {}
        }
    });
}
