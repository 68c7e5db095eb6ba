/// A failure on the read side: storage, or an event that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("event {position} ({event_type}) cannot be decoded: {source}")]
    Decode {
        position: String,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("page sizes must not be negative")]
    InvalidPageSize,
}
