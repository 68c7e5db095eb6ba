//! Parley's read side: the database handle, the global event log reader, the
//! checkpointed projector runner, and one module per read model holding its projector
//! and the read queries the API uses.
//!
//! Read models are written only by projectors. Their SQL runs unchanged on SQLite and
//! PostgreSQL through `sqlx::Any`, so column types stay within what both map the same
//! way: BIGINT (also for flags, 0/1), TEXT, DOUBLE and BLOB.

pub mod access;
pub mod chain;
pub mod conversations;
pub mod db;
pub mod error;
pub mod log;
pub mod messages;
pub mod moderation;
pub mod notifications;
pub mod page;
pub mod presence;
pub mod runner;
pub mod sessions;
pub mod unread;
pub mod users;

pub use db::{Backend, Db};
pub use error::ProjectionError;
pub use log::{LogPosition, StoredEvent};
pub use runner::{Projections, Projector};

/// The one text form of timestamps in read models: RFC 3339, UTC, sortable.
pub fn format_time(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `$start, $start+1, …` for `count` bind parameters, for `IN (…)` lists.
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
