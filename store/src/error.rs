/// A failure of the event store: storage, migrations, or a record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    #[error("reading the log stopped: {0}")]
    Reader(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("PARLEY_MASTER_KEY does not open this database's data keys (it is not the key they were sealed with)")]
    WrongMasterKey,
    #[error("sealed content cannot be read: {0}")]
    Crypto(String),
}

impl StoreError {
    pub(crate) fn crypto(reason: impl std::fmt::Display) -> Self {
        Self::Crypto(reason.to_string())
    }
}
