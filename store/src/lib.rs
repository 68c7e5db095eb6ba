//! Parley's event log: the database handle and migrations, appending events on both
//! backends (hashed at append), snapshots, the global ordered log with its positions
//! and typed decoding, the command bus that loads an aggregate, handles a command and
//! appends what it decided, and presence leases (node state kept beside the log, not a
//! projection of it).
//!
//! Everything that reads or writes the `events` table lives here; read models live in
//! `parley-projections`, which builds on this crate.

pub mod announce;
pub mod bus;
pub mod db;
pub mod error;
mod group;
pub mod hash;
pub mod inline;
pub mod keys;
pub mod log;
pub mod postgres;
pub mod presence;
pub mod sqlite;
pub mod upcast;

pub use announce::Announcer;
pub use bus::{CommandBus, CommandMeta, Committed, Repository};
pub use db::{Backend, Db};
pub use error::StoreError;
pub use keys::{Keyring, MasterKey};
pub use log::{LogPosition, StoredEvent};

/// The one text form of timestamps in stored rows and read models: RFC 3339, UTC,
/// sortable.
pub fn format_time(at: time::OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How many rows of `columns` bind parameters one multi-row statement carries. sqlx
/// binds a SQLite parameter by asking SQLite for its name, which SQLite finds by
/// scanning the statement's list of names: binding a statement costs the square of its
/// parameter count, so past a few hundred parameters it costs more than the extra
/// statements (one in-process call each) it saves. A PostgreSQL statement is a round
/// trip, so there fewer, larger statements win.
pub fn rows_per_statement(conn: &sqlx::AnyConnection, columns: usize) -> usize {
    const POSTGRES_ROWS: usize = 200;
    const SQLITE_PARAMETERS: usize = 240;
    if conn.backend_name() == "SQLite" {
        (SQLITE_PARAMETERS / columns.max(1)).max(1)
    } else {
        POSTGRES_ROWS
    }
}

/// `($1, $2), ($3, $4), …`: `rows` tuples of `columns` bind parameters, for a
/// multi-row `VALUES` list.
pub fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(1 + row * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$start, $start+1, …` for `count` bind parameters, for `IN (…)` lists.
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
