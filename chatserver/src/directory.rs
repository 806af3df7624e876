//! Caches of data that chat delivery reads on every message: user names
//! (users are never renamed or deleted, so a cached name never goes stale)
//! and group members (invalidated on every join).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::store::Store;

#[derive(Default)]
struct GroupCache {
    /// Bumped by every invalidation, so a load that raced with a join does
    /// not put the member list it read before the join back into the cache.
    generation: u64,
    members: HashMap<i64, (Arc<[i64]>, Instant)>,
}

#[derive(Clone)]
pub struct Directory {
    store: Store,
    names: Arc<Mutex<HashMap<i64, Arc<str>>>>,
    groups: Arc<Mutex<GroupCache>>,
    /// In a cluster, joins on other servers are announced over Redis; this
    /// bounds staleness when such an announcement is lost in an outage.
    group_ttl: Option<Duration>,
}

impl Directory {
    pub fn new(store: Store, group_ttl: Option<Duration>) -> Self {
        Self {
            store,
            names: Arc::default(),
            groups: Arc::default(),
            group_ttl,
        }
    }

    /// The user's name, or `None` when no such user exists.
    pub async fn user_name(&self, user_id: i64) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(name) = self.names.lock().expect("names lock").get(&user_id) {
            return Ok(Some(name.clone()));
        }
        let Some(name) = self.store.user_name(user_id).await? else {
            return Ok(None);
        };
        let name: Arc<str> = name.into();
        self.remember_name(user_id, name.clone());
        Ok(Some(name))
    }

    pub fn remember_name(&self, user_id: i64, name: Arc<str>) {
        self.names.lock().expect("names lock").insert(user_id, name);
    }

    /// The group's member ids (sorted), or `None` when no such group exists.
    pub async fn group_members(&self, group_id: i64) -> Result<Option<Arc<[i64]>>, StoreError> {
        let generation = {
            let groups = self.groups.lock().expect("groups lock");
            if let Some((members, loaded)) = groups.members.get(&group_id) {
                if self.group_ttl.is_none_or(|ttl| loaded.elapsed() < ttl) {
                    return Ok(Some(members.clone()));
                }
            }
            groups.generation
        };
        let Some(members) = self.store.group_members(group_id).await? else {
            return Ok(None);
        };
        let members: Arc<[i64]> = members.into();
        let mut groups = self.groups.lock().expect("groups lock");
        if groups.generation == generation {
            groups
                .members
                .insert(group_id, (members.clone(), Instant::now()));
        }
        Ok(Some(members))
    }

    /// Forgets every cached membership (after missing cluster announcements).
    pub fn clear_groups(&self) {
        let mut groups = self.groups.lock().expect("groups lock");
        groups.generation += 1;
        groups.members.clear();
    }

    /// Forgets a group's members after someone joined it.
    pub fn invalidate_group(&self, group_id: i64) {
        let mut groups = self.groups.lock().expect("groups lock");
        groups.generation += 1;
        groups.members.remove(&group_id);
    }
}
