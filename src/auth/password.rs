//! argon2id password hashing with OWASP's recommended parameters (19 MiB, t=2, p=1).

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use parley_aggregates::user::PasswordHasher;
use tokio::sync::Semaphore;

/// Hashes on the blocking pool, a few at a time: each hash holds 19 MiB and tens of
/// milliseconds of CPU, and a burst of logins must not starve the async runtime.
#[derive(Clone)]
pub struct Argon2Hasher {
    permits: Arc<Semaphore>,
    params: Params,
    /// A real hash of a random password, verified against when a login names an
    /// unknown user so that an unknown user costs the same as a wrong password.
    dummy_hash: Arc<str>,
}

impl Argon2Hasher {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_params(Params::default())
    }

    /// Cheaper parameters, for tests only.
    pub fn with_params(params: Params) -> anyhow::Result<Self> {
        let argon = argon2(&params);
        let random: [u8; 32] = rand::random();
        let dummy_hash = argon
            .hash_password(&random)
            .map_err(|e| anyhow::anyhow!("cannot hash the dummy password: {e}"))?
            .to_string();
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallelism)),
            params,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Spends the same work as verifying a real password, and always fails.
    pub async fn verify_dummy(&self, password: &str) {
        let hash = self.dummy_hash.clone();
        let _ = self.verify(password, &hash).await;
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

#[async_trait::async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &str) -> Result<String, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let password = password.to_owned();
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            argon2(&params)
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let hash = hash.to_owned();
        let params = self.params.clone();
        // argon2's verifier compares digests in constant time.
        tokio::task::spawn_blocking(move || {
            argon2(&params)
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}
