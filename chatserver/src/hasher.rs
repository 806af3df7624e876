//! Password hashing with argon2id on a fixed pool of threads, so a login
//! storm neither blocks the reactor nor starves other users of CPU, and
//! memory stays bounded: each thread reuses one argon2 work area for every
//! verification instead of allocating (and fragmenting) 19 MiB per login.

use std::sync::{mpsc, Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{oneshot, Semaphore};

use crate::config::HashCost;
use crate::error::HashError;
use crate::metrics::HashMetrics;

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Clone)]
pub struct PasswordHasher {
    cost: HashCost,
    /// A hash of nothing anybody knows, at the configured cost, made at the
    /// first use: what a LOGIN for a missing id is checked against.
    decoy: Arc<tokio::sync::OnceCell<String>>,
    /// One permit per pool thread: waiters queue here, on the async side,
    /// so the job queue never holds more than the threads can take.
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    /// Queue length and times, for `/metrics`.
    metrics: Option<HashMetrics>,
}

impl PasswordHasher {
    /// Starts `threads` hashing threads at nice value `nice` (see
    /// [`lower_priority`]); they end when the last clone is dropped.
    pub fn new(cost: HashCost, threads: usize, nice: i32) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("hasher-{index}"))
                .spawn(move || {
                    lower_priority(nice);
                    let mut memory = Vec::new();
                    loop {
                        let job = queue.lock().expect("hasher queue lock").recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a hashing thread");
            }
        }
        Self {
            cost,
            decoy: Arc::default(),
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            metrics: None,
        }
    }

    /// Reports queue length and times to `metrics`.
    pub fn observed(mut self, metrics: HashMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for a new password.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let cost = self.cost;
        // In the thread's own work area, as verifications: argon2's
        // `hash_password` allocates its 19 MiB per call, and after a storm
        // of registrations the allocator kept hundreds of MB of them.
        self.on_pool(move |memory| {
            let params =
                Params::new(cost.memory_kib, cost.iterations, 1, None).map_err(hash_error)?;
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let salt = SaltString::generate(&mut OsRng);
            let output_len = argon
                .params()
                .output_len()
                .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
            let output = compute(
                memory,
                &argon,
                password.as_bytes(),
                salt.as_salt(),
                output_len,
            )?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(argon.params()).map_err(hash_error)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            };
            Ok(phc.to_string())
        })
        .await
    }

    /// Checks a password against a stored hash, at the cost the hash was made with.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, HashError> {
        self.on_pool(move |memory| verify_with(memory, password.as_bytes(), &stored))
            .await
    }

    /// The work of [`verify`](Self::verify) against no account, so that a
    /// LOGIN for an id that does not exist takes as long as a wrong password.
    pub async fn verify_decoy(&self, password: String) -> Result<(), HashError> {
        let decoy = self
            .decoy
            .get_or_try_init(|| {
                let random: [u8; 16] = rand::random();
                self.hash(format!("{random:x?}"))
            })
            .await?
            .clone();
        self.verify(password, decoy).await.map(|_| ())
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let asked = std::time::Instant::now();
        let queued = Queued::enter(self.metrics.as_ref());
        let permit = self.permits.acquire().await;
        drop(queued);
        let _permit = permit.map_err(|_| HashError("hasher closed".into()))?;
        let started = std::time::Instant::now();
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| HashError("hashing threads are gone".into()))?;
        let result = result
            .await
            .map_err(|_| HashError("hashing thread failed".into()))?;
        if let Some(m) = &self.metrics {
            m.observe(started - asked, started.elapsed());
        }
        result
    }
}

/// Makes the calling (hashing) thread count `nice` less for the kernel's
/// scheduler than the threads serving connections (10 weighs about a tenth
/// of 0; `--hash-nice`). A login storm then takes the CPU chat leaves idle
/// rather than the CPU chat needs (measured in docs/BENCHMARKS.md: it
/// helps, but the storm's own database work still slows chat). Within the
/// server hashing is never starved; other busy processes on the host do
/// come first, hence the option. On Linux `setpriority` with a thread id
/// applies to that thread alone; lowering one's own priority needs no
/// privilege.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // Relative to the server's own nice value: setpriority sets, not adds.
        let thread = Some(rustix::thread::gettid());
        let current = rustix::process::getpriority_process(thread).unwrap_or(0);
        if let Err(error) = rustix::process::setpriority_process(thread, (current + nice).min(19)) {
            tracing::warn!(%error, "cannot lower the priority of a hashing thread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Counts a job in the queue gauge while it waits, even if its future is
/// dropped while waiting.
struct Queued<'a>(Option<&'a HashMetrics>);

impl<'a> Queued<'a> {
    fn enter(metrics: Option<&'a HashMetrics>) -> Self {
        if let Some(m) = metrics {
            m.queued.inc();
        }
        Queued(metrics)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.queued.dec();
        }
    }
}

fn hash_error(error: impl std::fmt::Display) -> HashError {
    HashError(error.to_string())
}

/// Recomputes the stored hash with the caller's work area and compares in
/// constant time.
fn verify_with(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(stored).map_err(hash_error)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hash_error)?;
    let version = match parsed.version {
        Some(number) => Version::try_from(number).map_err(hash_error)?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(hash_error)?;
    let expected = parsed
        .hash
        .ok_or_else(|| hash_error("stored hash has no output"))?;
    let salt = parsed
        .salt
        .ok_or_else(|| hash_error("stored hash has no salt"))?;
    let argon = Argon2::new(algorithm, version, params);
    let computed = compute(memory, &argon, password, salt, expected.len())?;
    Ok(computed == expected)
}

/// Runs `argon` in the hashing thread's work area `memory`, grown to the
/// cost's size and kept for the next job: the one place argon2 gets its
/// memory, for new hashes and verifications alike.
fn compute(
    memory: &mut Vec<Block>,
    argon: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    output_len: usize,
) -> Result<Output, HashError> {
    let mut salt_buffer = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buffer).map_err(hash_error)?;
    memory.resize(argon.params().block_count(), Block::default());
    let mut output = [0u8; Output::MAX_LENGTH];
    let output = output
        .get_mut(..output_len)
        .ok_or_else(|| hash_error("hash output too long"))?;
    argon
        .hash_password_into_with_memory(password, salt, output, &mut memory[..])
        .map_err(hash_error)?;
    Output::new(output).map_err(hash_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher as _;
    use argon2::PasswordVerifier;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority_than_the_runtime() {
        let hasher = PasswordHasher::new(
            HashCost {
                memory_kib: 64,
                iterations: 1,
            },
            2,
            10,
        );
        let ours = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        for _ in 0..4 {
            let theirs = hasher
                .on_pool(|_| {
                    let tid = rustix::thread::gettid();
                    Ok(rustix::process::getpriority_process(Some(tid)).unwrap())
                })
                .await
                .unwrap();
            assert_eq!(theirs, (ours + 10).min(19));
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hasher = PasswordHasher::new(
            HashCost {
                memory_kib: 64,
                iterations: 1,
            },
            1,
            0,
        );
        let hash = hasher.hash("s3cret".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        // Readable by argon2's own verifier, not only ours.
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default()
            .verify_password(b"s3cret", &parsed)
            .is_ok());
        assert!(hasher.verify("s3cret".into(), hash.clone()).await.unwrap());
        assert!(!hasher.verify("S3cret".into(), hash.clone()).await.unwrap());
        assert!(!hasher.verify(String::new(), hash).await.unwrap());
        assert!(hasher
            .verify("x".into(), "not a hash".into())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn verifies_hashes_made_elsewhere_at_another_cost() {
        // The reference implementation's own hash, at the default cost.
        let salt = SaltString::generate(&mut OsRng);
        let reference = Argon2::default()
            .hash_password(b"pa55", &salt)
            .unwrap()
            .to_string();
        let parsed = PasswordHash::new(&reference).unwrap();
        assert!(Argon2::default().verify_password(b"pa55", &parsed).is_ok());
        let hasher = PasswordHasher::new(HashCost::default(), 2, 0);
        assert!(hasher
            .verify("pa55".into(), reference.clone())
            .await
            .unwrap());
        assert!(!hasher.verify("pa56".into(), reference).await.unwrap());
    }
}
