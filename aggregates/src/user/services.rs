use std::sync::Arc;

/// Password hashing, injected so the aggregate stays free of CPU-heavy crypto and of
/// the thread pool that runs it.
#[async_trait::async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &str) -> Result<String, String>;
    /// Constant-time with respect to the password.
    async fn verify(&self, password: &str, hash: &str) -> bool;
}

/// The `User` aggregate's services.
#[derive(Clone)]
pub struct UserServices {
    pub hasher: Arc<dyn PasswordHasher>,
}

impl UserServices {
    pub fn new(hasher: Arc<dyn PasswordHasher>) -> Self {
        Self { hasher }
    }
}
