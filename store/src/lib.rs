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
    const SQLITE_PARAMETERS: usize = 240;
    if conn.backend_name() == "SQLite" {
        (SQLITE_PARAMETERS / columns.max(1)).max(1)
    } else {
        POSTGRES_ROWS_PER_STATEMENT
    }
}

/// Rows per multi-row statement on PostgreSQL (see [`rows_per_statement`]).
pub const POSTGRES_ROWS_PER_STATEMENT: usize = 200;

/// `($1, $2), ($3, $4), …`: `rows` tuples of `columns` bind parameters, for a
/// multi-row `VALUES` list.
pub fn values(rows: usize, columns: usize) -> String {
    // Built in one buffer: a rebuild makes one of these per statement, thousands of
    // parameters each, and a string per parameter showed in its profile.
    let mut out = String::with_capacity(rows * (columns * 7 + 4));
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        push_placeholders(&mut out, 1 + row * columns, columns);
        out.push(')');
    }
    out
}

/// `$start, $start+1, …` for `count` bind parameters, for `IN (…)` lists.
pub fn placeholders(start: usize, count: usize) -> String {
    let mut out = String::with_capacity(count * 7);
    push_placeholders(&mut out, start, count);
    out
}

fn push_placeholders(out: &mut String, start: usize, count: usize) {
    use std::fmt::Write as _;
    for i in start..start + count {
        if i > start {
            out.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "${i}");
    }
}

#[cfg(test)]
mod tests {
    use super::{placeholders, values};

    #[test]
    fn bind_lists_number_every_parameter_once_in_order() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 0), "");
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values(1, 1), "($1)");
        assert_eq!(values(0, 4), "");
    }
}
