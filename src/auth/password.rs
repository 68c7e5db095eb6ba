//! argon2id password hashing with one of OWASP's recommended parameter sets (12 MiB,
//! t=3, p=1), which it rates as strong as its first choice (19 MiB, t=2): one more
//! pass over less memory, for about the same CPU. Memory held per hash is what bounds
//! a server's footprint in a burst of sign-ups and sign-ins. Hashes made with other
//! parameters (earlier releases used 19 MiB, t=2) verify with their own.
//!
//! Each hash fills 12 MiB of working memory (argon2's `hash_password_into_with_memory`,
//! so the PHC string is assembled here), at most one hash per core at a time. Allocated
//! plainly, on whichever blocking thread runs it, glibc keeps that memory in the
//! thread's own arena after it is freed, so a burst of registrations left hundreds of
//! MB resident for good; a fixed pool of buffers kept 38 MiB resident while idle. Each
//! hash's memory is instead reserved past glibc's largest mmap threshold (32 MiB on
//! 64-bit), which glibc always serves with a mapping of its own and unmaps when freed:
//! only the blocks the hash writes become resident, and they go back to the system when
//! freed. During a burst, hashes hand their memory on to the ones waiting (mapping
//! fresh pages costs a few milliseconds a hash); the last hash of a burst frees it all,
//! so an idle server holds none.

use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parley_aggregates::user::PasswordHasher;
use tokio::sync::Semaphore;

/// Salt length in bytes: the PHC recommendation.
const SALT_LEN: usize = 16;

/// Hashes on the blocking pool, a few at a time: each hash holds 12 MiB and tens of
/// milliseconds of CPU, and a burst of logins must not starve the async runtime.
#[derive(Clone)]
pub struct Argon2Hasher {
    permits: Arc<Semaphore>,
    /// Working memory handed on within a burst; empty between bursts.
    memory: Arc<Mutex<Memory>>,
    params: Params,
    /// A real hash of a random password, verified against when a login names an
    /// unknown user so that an unknown user costs the same as a wrong password.
    dummy_hash: Arc<str>,
}

impl Argon2Hasher {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_params(Self::recommended()?)
    }

    /// OWASP's 12 MiB, t=3, p=1 (see the module docs).
    pub fn recommended() -> anyhow::Result<Params> {
        Params::new(12 * 1024, 3, 1, None).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))
    }

    /// Cheaper parameters, for tests only.
    pub fn with_params(params: Params) -> anyhow::Result<Self> {
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut hasher = Self {
            permits: Arc::new(Semaphore::new(parallelism)),
            memory: Arc::new(Mutex::new(Memory::default())),
            params,
            dummy_hash: Arc::from(""),
        };
        let random: [u8; 32] = rand::random();
        hasher.dummy_hash = hasher
            .hash_blocking(&random)
            .map_err(|e| anyhow::anyhow!("cannot hash the dummy password: {e}"))?
            .into();
        Ok(hasher)
    }

    /// Spends the same work as verifying a real password, and always fails.
    pub async fn verify_dummy(&self, password: &str) {
        let hash = self.dummy_hash.clone();
        let _ = self.verify(password, &hash).await;
    }

    /// Runs argon2 in working memory handed on by an earlier hash of the burst, or of
    /// its own, and hands it on.
    fn compute(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), String> {
        /// Blocks past glibc's largest mmap threshold (see the module docs).
        const RESERVED: usize = (32 << 20) / std::mem::size_of::<Block>() + 1;
        let blocks = params.block_count();
        let handed_on = self.memory.lock().ok().and_then(|mut pool| pool.free.pop());
        let mut memory = handed_on.unwrap_or_else(|| Vec::with_capacity(blocks.max(RESERVED)));
        memory.resize(blocks, Block::default());
        let result = Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, &mut memory[..])
            .map_err(|e| e.to_string());
        if let Ok(mut pool) = self.memory.lock() {
            // The burst's last hash frees it (see `Busy`); outside any, free it now.
            if pool.busy > 0 {
                pool.free.push(memory);
            }
        }
        result
    }

    fn hash_blocking(&self, password: &[u8]) -> Result<String, String> {
        let salt: [u8; SALT_LEN] = rand::random();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.compute(
            Algorithm::Argon2id,
            Version::V0x13,
            self.params.clone(),
            password,
            &salt,
            &mut out,
        )?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| e.to_string())?,
            salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(hash.to_string())
    }

    fn verify_blocking(&self, password: &[u8], hash: &str) -> bool {
        let Ok(hash) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
            return false;
        };
        let version = match hash.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(version)) => version,
            Some(Err(_)) => return false,
        };
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if self
            .compute(algorithm, version, params, password, salt, &mut out)
            .is_err()
        {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(&out).is_ok_and(|computed| &computed == expected)
    }
}

#[async_trait::async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &str) -> Result<String, String> {
        let _busy = Busy::new(&self.memory);
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let password = password.to_owned();
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash_blocking(password.as_bytes()))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        let _busy = Busy::new(&self.memory);
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let hash = hash.to_owned();
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.verify_blocking(password.as_bytes(), &hash))
            .await
            .unwrap_or(false)
    }
}

/// Working memory and the hashes that may use it.
#[derive(Default)]
struct Memory {
    /// Hashes asked for and not finished, running or waiting for a permit.
    busy: usize,
    free: Vec<Vec<Block>>,
}

/// Counts a hash as asked for until it is dropped (finished, failed or cancelled); the
/// last of a burst frees the working memory. Counted under the same lock as the
/// memory, so no buffer can be handed on to a burst already over.
struct Busy(Arc<Mutex<Memory>>);

impl Busy {
    fn new(memory: &Arc<Mutex<Memory>>) -> Self {
        if let Ok(mut memory) = memory.lock() {
            memory.busy += 1;
        }
        Self(Arc::clone(memory))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut memory) = self.0.lock() {
            memory.busy = memory.busy.saturating_sub(1);
            if memory.busy == 0 {
                memory.free.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier as _;

    fn cheap() -> Argon2Hasher {
        let params = Params::new(64, 1, 1, None).expect("valid parameters");
        Argon2Hasher::with_params(params).expect("hasher")
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_that_argon2_itself_verifies() {
        let hasher = cheap();
        let hash = hasher.hash("correct horse").await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        let reference = Argon2::default();
        assert!(reference
            .verify_password(b"correct horse", hash.as_str())
            .is_ok());
        assert!(reference
            .verify_password(b"wrong horse", hash.as_str())
            .is_err());
    }

    /// Nothing is held once a burst is over, however its hashes interleaved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn working_memory_is_freed_once_a_burst_is_over() {
        let hasher = cheap();
        let hashes = (0..16).map(|i| {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(&format!("password {i}")).await })
        });
        for hash in futures::future::join_all(hashes).await {
            let hash = hash.expect("task").expect("hash");
            assert!(hash.starts_with("$argon2id$"), "{hash}");
        }
        let memory = hasher.memory.lock().expect("memory");
        assert_eq!(memory.busy, 0);
        assert_eq!(memory.free.len(), 0, "buffers held after the burst");
    }

    #[tokio::test]
    async fn the_server_hashes_with_owasp_parameters_and_still_verifies_older_hashes() {
        use argon2::password_hash::PasswordHasher as _;
        let hasher = Argon2Hasher::new().expect("hasher");
        let hash = hasher.hash("correct horse").await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"),
            "{hash}"
        );
        assert!(hasher.verify("correct horse", &hash).await);
        // What earlier releases stored (argon2's defaults, 19 MiB, t=2).
        let older = Argon2::default()
            .hash_password(b"battery staple")
            .expect("hash")
            .to_string();
        assert!(
            older.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{older}"
        );
        assert!(hasher.verify("battery staple", &older).await);
        assert!(!hasher.verify("battery stapler", &older).await);
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_argon2_itself_with_other_parameters() {
        use argon2::password_hash::PasswordHasher as _;
        let hasher = cheap();
        let params = Params::new(256, 2, 1, None).expect("valid parameters");
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"battery staple")
            .expect("hash")
            .to_string();
        assert!(hasher.verify("battery staple", &other).await);
        assert!(!hasher.verify("battery stapler", &other).await);
        assert!(!hasher.verify("battery staple", "not a hash").await);
        assert!(!hasher.verify("battery staple", "").await);
    }
}
