/// A failure on the read side: storage, or an event that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] parley_store::StoreError),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("page sizes must not be negative")]
    InvalidPageSize,
    #[error("a rebuild of {0} is already running")]
    RebuildRunning(&'static str),
    #[error("an in-memory database cannot be rebuilt beside itself")]
    RebuildInMemory,
    #[error("rebuild: {0}")]
    Rebuild(String),
}
