//! Who is logged in on this server, and how to reach their session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::mailbox::SessionHandle;

/// A cloneable handle; the lock is held only to copy a handle in or out.
#[derive(Clone, Default)]
pub struct Registry {
    sessions: Arc<Mutex<HashMap<i64, SessionHandle>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, SessionHandle>> {
        self.sessions.lock().expect("registry lock poisoned")
    }

    /// Registers a session for a user; `false` when the user is already
    /// logged in (here), which the caller answers with errno 2.
    pub fn claim(&self, user_id: i64, handle: SessionHandle) -> bool {
        let mut sessions = self.lock();
        if sessions.contains_key(&user_id) {
            return false;
        }
        sessions.insert(user_id, handle);
        true
    }

    /// Removes the user's entry if it still belongs to that connection.
    pub fn release(&self, user_id: i64, conn_id: u64) -> bool {
        let mut sessions = self.lock();
        if sessions.get(&user_id).is_some_and(|h| h.conn_id == conn_id) {
            sessions.remove(&user_id);
            return true;
        }
        false
    }

    pub fn get(&self, user_id: i64) -> Option<SessionHandle> {
        self.lock().get(&user_id).cloned()
    }

    pub fn is_online(&self, user_id: i64) -> bool {
        self.lock().contains_key(&user_id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn users(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::mailbox;

    #[test]
    fn one_session_per_user_and_release_checks_the_owner() {
        let registry = Registry::default();
        let (first, _a) = mailbox(1, 4, 1024);
        let (second, _b) = mailbox(2, 4, 1024);
        assert!(registry.claim(7, first));
        assert!(!registry.claim(7, second));
        assert!(!registry.release(7, 2));
        assert!(registry.is_online(7));
        assert!(registry.release(7, 1));
        assert!(registry.is_empty());
    }
}
