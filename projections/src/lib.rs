//! Parley's read side: the checkpointed projector runner and one module per read model
//! holding its projector and the read queries the API uses. The event log they read is
//! `parley-store`'s.
//!
//! Read models are written only by projectors. Their SQL runs unchanged on SQLite and
//! PostgreSQL through `sqlx::Any`, so column types stay within what both map the same
//! way: BIGINT (also for flags, 0/1), TEXT, DOUBLE and BLOB.

pub mod access;
pub mod attachments;
pub mod chain;
pub mod conversations;
pub mod error;
pub mod messages;
pub mod moderation;
pub mod notifications;
pub mod page;
pub mod projector;
pub mod rebuild;
pub mod runner;
pub mod sessions;
pub mod time_travel;
pub mod unread;
pub mod users;

pub use error::ProjectionError;
pub(crate) use parley_store::{format_time, placeholders, Backend, Db, StoredEvent};
pub use projector::Projector;
pub use runner::Projections;

/// How many rows of `columns` bind parameters one multi-row statement carries. sqlx
/// binds a SQLite parameter by asking SQLite for its name, which SQLite finds by
/// scanning the statement's list of names: binding a statement costs the square of its
/// parameter count, so past a few hundred parameters it costs more than the extra
/// statements (one in-process call each) it saves. A PostgreSQL statement is a round
/// trip, so there fewer, larger statements win.
pub(crate) fn rows_per_statement(conn: &sqlx::AnyConnection, columns: usize) -> usize {
    const POSTGRES_ROWS: usize = 200;
    const SQLITE_PARAMETERS: usize = 240;
    if conn.backend_name() == "SQLite" {
        (SQLITE_PARAMETERS / columns.max(1)).max(1)
    } else {
        POSTGRES_ROWS
    }
}
