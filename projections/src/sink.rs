//! Where a batch's writes go: the `AnyConnection` the runner hands every projector (both
//! backends), or the typed PostgreSQL connection a rebuild gives a projector that loads
//! its new rows with `COPY`. The same statements run on either; only the loading of
//! rows differs.
//!
//! `COPY` takes a row for about 2.4 times less of PostgreSQL's CPU than a multi-row
//! `INSERT` (measured in the README), and its rows are encoded here into one text buffer
//! rather than bound one parameter at a time through `sqlx::Any`. `AnyConnection` has
//! no `COPY` and does not give up its inner connection, hence the second kind of sink.

use std::io::Write as _;

use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::{AnyConnection, Arguments as _, Encode, FromRow, PgConnection, Type};

use crate::ProjectionError;

/// A connection a projector writes a batch through.
pub enum Sink<'c> {
    /// The runner's, or a rebuild's on SQLite (and for its last events, under the
    /// switch's lock): new rows are inserted with `ON CONFLICT … DO NOTHING`.
    Any(&'c mut AnyConnection),
    /// A PostgreSQL rebuild's shadow, which holds nothing past the checkpoint committed
    /// with its rows: rows new to a table are loaded with `COPY`.
    Load(&'c mut PgConnection),
}

/// A bind parameter: the types read models are made of.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Arg::Text(text)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(text: &'a String) -> Self {
        Arg::Text(text)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Arg::MaybeText(text)
    }
}

impl Sink<'_> {
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Sink::Any(conn) if conn.backend_name() == "SQLite")
    }

    /// Rows per multi-row statement (see [`parley_store::rows_per_statement`]).
    pub fn rows_per_statement(&self, columns: usize) -> usize {
        match self {
            Sink::Any(conn) => crate::rows_per_statement(conn, columns),
            Sink::Load(_) => parley_store::POSTGRES_ROWS_PER_STATEMENT,
        }
    }

    /// Runs one statement with its parameters, in order.
    pub async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<(), ProjectionError> {
        match self {
            Sink::Any(conn) => {
                sqlx::query_with(sql, arguments::<sqlx::Any>(args)?)
                    .execute(&mut **conn)
                    .await?;
            }
            Sink::Load(conn) => {
                sqlx::query_with(sql, arguments::<sqlx::Postgres>(args)?)
                    .execute(&mut **conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Runs one query with its parameters and returns its rows.
    pub async fn fetch_all<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, ProjectionError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow> + for<'r> FromRow<'r, PgRow>,
    {
        Ok(match self {
            Sink::Any(conn) => {
                sqlx::query_as_with(sql, arguments::<sqlx::Any>(args)?)
                    .fetch_all(&mut **conn)
                    .await?
            }
            Sink::Load(conn) => {
                sqlx::query_as_with(sql, arguments::<sqlx::Postgres>(args)?)
                    .fetch_all(&mut **conn)
                    .await?
            }
        })
    }

    /// Adds rows of `columns` to `table` (`args` holds them one after another), keeping
    /// a row already there whose `conflict` key a new one repeats. A loading sink copies
    /// them in: its table holds none of them yet, and a repeated key fails the batch.
    pub async fn insert_new(
        &mut self,
        table: &str,
        columns: &[&str],
        conflict: &str,
        args: &[Arg<'_>],
    ) -> Result<(), ProjectionError> {
        if args.is_empty() || columns.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Any(_) => {
                let per_statement = self.rows_per_statement(columns.len()) * columns.len();
                for chunk in args.chunks(per_statement) {
                    let sql = format!(
                        "INSERT INTO {table} ({}) VALUES {} ON CONFLICT ({conflict}) DO NOTHING",
                        columns.join(", "),
                        parley_store::values(chunk.len() / columns.len(), columns.len())
                    );
                    self.execute(&sql, chunk).await?;
                }
            }
            Sink::Load(conn) => {
                let sql = format!("COPY {table} ({}) FROM STDIN", columns.join(", "));
                let text = copy_text(columns.len(), args);
                let mut copy = conn.copy_in_raw(&sql).await?;
                if let Err(error) = copy.send(text).await {
                    // The connection must leave copy mode before anything else runs.
                    let _ = copy.abort(error.to_string()).await;
                    return Err(error.into());
                }
                copy.finish().await?;
            }
        }
        Ok(())
    }
}

/// The parameters of one statement, for either database.
fn arguments<'q, DB>(args: &[Arg<'q>]) -> Result<DB::Arguments<'q>, ProjectionError>
where
    DB: sqlx::Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    let mut out = DB::Arguments::default();
    for arg in args {
        match *arg {
            Arg::Text(text) => out.add(text),
            Arg::MaybeText(text) => out.add(text),
            Arg::Int(int) => out.add(int),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

/// Rows in `COPY`'s text format: columns split by tabs, rows ended by newlines, `\N`
/// for NULL, and a backslash before each of backslash, tab, newline and carriage return
/// inside a value.
fn copy_text(columns: usize, args: &[Arg<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.len() * 24);
    for (index, arg) in args.iter().enumerate() {
        match *arg {
            Arg::Text(text) | Arg::MaybeText(Some(text)) => escape_into(&mut out, text),
            Arg::MaybeText(None) => out.extend_from_slice(b"\\N"),
            Arg::Int(int) => {
                // Writing to a `Vec` cannot fail.
                let _ = write!(out, "{int}");
            }
        }
        out.push(if (index + 1) % columns == 0 {
            b'\n'
        } else {
            b'\t'
        });
    }
    out
}

/// Copies the runs between special bytes whole: a push per byte was a twentieth of
/// Parley's CPU in a rebuild.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..at]);
        out.extend_from_slice(escaped);
        run = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_its_format_gives_meaning_to() {
        let args = [
            Arg::Text("a\tb\nc\\d\re"),
            Arg::MaybeText(None),
            Arg::Int(-7),
            Arg::Text("\\N"),
            Arg::MaybeText(Some("héllo 👍")),
            Arg::Int(0),
        ];
        assert_eq!(
            String::from_utf8(copy_text(3, &args)).expect("utf-8"),
            "a\\tb\\nc\\\\d\\re\t\\N\t-7\n\\\\N\théllo 👍\t0\n"
        );
    }
}
