//! Password hashing with argon2id on a bounded set of blocking threads, so a
//! login storm neither blocks the reactor nor starves other users of CPU.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::HashCost;
use crate::error::StoreError;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: HashCost,
    /// One permit per thread allowed to hash at once; waiters queue here, on
    /// the async side, instead of piling up blocking threads.
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    pub fn new(cost: HashCost, threads: usize) -> Self {
        Self {
            cost,
            permits: Arc::new(Semaphore::new(threads)),
        }
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for a new password.
    pub async fn hash(&self, password: String) -> Result<String, StoreError> {
        let cost = self.cost;
        self.on_pool(move || {
            let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
                .map_err(|e| StoreError::Hash(e.to_string()))?;
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| StoreError::Hash(e.to_string()))
        })
        .await
    }

    /// Checks a password against a stored hash, at the cost the hash was made with.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, StoreError> {
        self.on_pool(move || {
            let parsed = PasswordHash::new(&stored).map_err(|e| StoreError::Hash(e.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Hash("hasher closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| StoreError::Hash(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hasher = PasswordHasher::new(
            HashCost {
                memory_kib: 64,
                iterations: 1,
            },
            1,
        );
        let hash = hasher.hash("s3cret".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(hasher.verify("s3cret".into(), hash.clone()).await.unwrap());
        assert!(!hasher.verify("S3cret".into(), hash).await.unwrap());
    }
}
