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
}
