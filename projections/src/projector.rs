//! What a projector is: the trait every read model's builder implements, the tables
//! it owns, and the lock key that keeps one builder per projector across nodes.

use sqlx::AnyConnection;

use crate::ProjectionError;
use parley_store::log::StoredEvent;

/// A read-model builder: a small, idempotent function of (rows, event).
#[async_trait::async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Checkpoint name; stable across releases.
    fn name(&self) -> &'static str;
    /// Bumping it makes the node running it rebuild its tables from the start of the
    /// log, beside the live ones, and switch them in when caught up.
    fn version(&self) -> i64 {
        1
    }
    /// The tables this projector alone writes, which a rebuild makes afresh.
    fn tables(&self) -> &'static [&'static str];
    /// Tables that exist only on one backend (such as SQLite's full-text index).
    fn backend_tables(&self, _backend: crate::Backend) -> &'static [&'static str] {
        &[]
    }
    /// Secondary indexes and unique constraints (beside primary keys) its writes look
    /// rows up by or conflict on. A rebuild builds every other index of the shadow
    /// tables, and checks every other unique constraint, only once the replay is done,
    /// in one pass, rather than row by row as it goes.
    fn write_indexes(&self) -> &'static [&'static str] {
        &[]
    }
    /// Applies one event. Must be idempotent: the same event twice changes nothing.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
    /// Applies a batch, in order, with the same outcome as `apply` on each event. A
    /// projector whose events arrive in bulk overrides it to write them in a few
    /// multi-row statements: on PostgreSQL every statement is a round trip, and the
    /// runner's round trips per event bound how fast every mutation returns.
    async fn apply_all(
        &self,
        conn: &mut AnyConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }
    /// Whether a rebuild on PostgreSQL applies this projector's batches through
    /// [`Projector::load_all`].
    fn loads(&self) -> bool {
        false
    }
    /// Applies a batch to a rebuild's shadow on PostgreSQL through a typed connection,
    /// with the same outcome as `apply_all`, loading rows new to a table with `COPY`
    /// (which `AnyConnection` lacks). The shadow holds nothing past the checkpoint that
    /// commits with these rows, so such rows are new whatever was interrupted before.
    async fn load_all(
        &self,
        _conn: &mut sqlx::PgConnection,
        _events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        Err(ProjectionError::Rebuild(format!(
            "{} has no loader for rebuilds",
            self.name()
        )))
    }
}

/// Every table the projector writes on `backend`.
pub fn all_tables(projector: &dyn Projector, backend: crate::Backend) -> Vec<&'static str> {
    let mut tables = projector.tables().to_vec();
    tables.extend_from_slice(projector.backend_tables(backend));
    tables
}

/// An advisory-lock key, the same on every node.
pub(crate) fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("parley:projector:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
