//! PostgreSQL appends, group-committed ([`crate::group`]); loads and snapshots are read
//! through postgres-es.
//!
//! postgres-es writes an append as one transaction of one statement per event and
//! answers without the event's place in the log, so a command cost its own BEGIN,
//! INSERTs, COMMIT and a query for its position: five round trips, none shared. Here a
//! group of appends is one transaction of two statements at most (every event of the
//! group in one `INSERT … SELECT FROM unnest(…) RETURNING` its position, every snapshot in
//! one upsert), whatever its size, and several writers commit groups concurrently so
//! one group's fsync overlaps the next one's statements.
//!
//! A group is all or nothing: when any append in it conflicts (another node appended to
//! the same stream first, or replaced the snapshot), the group is rolled back and its
//! appends are retried each in its own transaction, so only the stale one fails.
//! Conflicts happen only between nodes, so the retry is rare.

use std::collections::HashMap;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::Aggregate;
use futures::future::join_all;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::group::{
    is_connection, last_positions, map_error, Append, Committer, Failed, Outcome, Writer,
};
use crate::LogPosition;

/// Writer tasks: enough to keep one group in its fsync while the next is written.
const WRITERS: usize = 3;

/// The group-commit appender of one PostgreSQL database.
pub struct PgAppender {
    writer: Writer<PgCommitter>,
}

impl PgAppender {
    pub fn new(pool: PgPool) -> Self {
        Self {
            writer: Writer::new(PgCommitter { pool }, WRITERS),
        }
    }

    /// Appends and answers with the log position of the last event written.
    pub async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Outcome {
        let (append, answer) = Append::new(A::TYPE, events, snapshot_update)?;
        self.writer.submit(append, answer).await
    }
}

struct PgCommitter {
    pool: PgPool,
}

impl Committer for PgCommitter {
    async fn commit(&self, group: &[Append]) -> Result<Vec<Outcome>, sqlx::Error> {
        if group.len() > 1 {
            match write_group(&self.pool, group).await {
                Ok(positions) => return Ok(positions.into_iter().map(Ok).collect()),
                Err(Failed::Conflict) => {
                    tracing::debug!(
                        appends = group.len(),
                        "group conflicted; appending one by one"
                    )
                }
                Err(Failed::Sql(error)) if is_connection(&error) => return Err(error),
                Err(Failed::Sql(error)) => {
                    tracing::debug!(%error, "group failed; appending one by one")
                }
            }
        }
        let alone = group
            .iter()
            .map(|append| write_group(&self.pool, std::slice::from_ref(append)));
        Ok(join_all(alone)
            .await
            .into_iter()
            .map(|written| match written {
                Ok(mut positions) => Ok(positions.pop().flatten()),
                Err(Failed::Conflict) => Err(PersistenceError::OptimisticLockError),
                Err(Failed::Sql(error)) => Err(map_error(error)),
            })
            .collect())
    }
}

/// Writes `group` in one transaction; answers each append with its last event's place.
async fn write_group(pool: &PgPool, group: &[Append]) -> Result<Vec<Option<LogPosition>>, Failed> {
    let events = group.iter().flat_map(|append| {
        append
            .events
            .iter()
            .map(move |event| (append.aggregate_type.as_str(), event))
    });
    let count = group.iter().map(|append| append.events.len()).sum();
    let mut columns = EventColumns::with_capacity(count);
    for (aggregate_type, event) in events {
        columns.push(aggregate_type, event);
    }
    let mut tx = pool.begin().await?;
    // Rows are inserted in array order (`ORDER BY n`), so the stream-hash trigger of a
    // stream's second event in the group already sees its first.
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata) \
         SELECT e, t, a, s, et, ev, p::jsonb, m::jsonb \
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                       $6::text[], $7::text[], $8::text[]) \
                WITH ORDINALITY AS u(e, t, a, s, et, ev, p, m, n) \
          ORDER BY n \
         RETURNING aggregate_type, aggregate_id, sequence, txid, position",
    )
    .bind(&columns.event_id)
    .bind(&columns.aggregate_type)
    .bind(&columns.aggregate_id)
    .bind(&columns.sequence)
    .bind(&columns.event_type)
    .bind(&columns.event_version)
    .bind(&columns.payload)
    .bind(&columns.metadata)
    .fetch_all(&mut *tx)
    .await?;
    let snapshots: Vec<_> = group
        .iter()
        .filter_map(|append| Some((append.aggregate_type.as_str(), append.snapshot.as_ref()?)))
        .collect();
    if !snapshots.is_empty() {
        let column = |f: fn(&(&str, &crate::group::Snapshot)) -> String| {
            snapshots.iter().map(f).collect::<Vec<String>>()
        };
        let updated = sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
                                    current_snapshot, payload) \
             SELECT t, a, l, c, p::jsonb \
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
                    AS u(t, a, l, c, p) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
             SET last_sequence = excluded.last_sequence, \
                 current_snapshot = excluded.current_snapshot, payload = excluded.payload \
             WHERE snapshots.current_snapshot = excluded.current_snapshot - 1",
        )
        .bind(column(|(t, _)| (*t).to_owned()))
        .bind(column(|(_, s)| s.aggregate_id.clone()))
        .bind(
            snapshots
                .iter()
                .map(|(_, s)| s.last_sequence)
                .collect::<Vec<i64>>(),
        )
        .bind(
            snapshots
                .iter()
                .map(|(_, s)| s.current)
                .collect::<Vec<i64>>(),
        )
        .bind(column(|(_, s)| s.payload.clone()))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != snapshots.len() as u64 {
            // A snapshot was replaced meanwhile: its aggregate is stale.
            return Err(Failed::Conflict);
        }
    }
    tx.commit().await?;
    let placed: HashMap<(String, String, i64), LogPosition> = rows
        .into_iter()
        .map(|(aggregate_type, aggregate_id, sequence, tx, pos)| {
            (
                (aggregate_type, aggregate_id, sequence),
                LogPosition { tx, pos },
            )
        })
        .collect();
    Ok(last_positions(group, &placed))
}

/// A group's events as one array per column, for `unnest`.
struct EventColumns {
    event_id: Vec<Uuid>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<String>,
    metadata: Vec<String>,
}

impl EventColumns {
    fn with_capacity(count: usize) -> Self {
        Self {
            event_id: Vec::with_capacity(count),
            aggregate_type: Vec::with_capacity(count),
            aggregate_id: Vec::with_capacity(count),
            sequence: Vec::with_capacity(count),
            event_type: Vec::with_capacity(count),
            event_version: Vec::with_capacity(count),
            payload: Vec::with_capacity(count),
            metadata: Vec::with_capacity(count),
        }
    }

    fn push(&mut self, aggregate_type: &str, event: &crate::group::EventRow) {
        self.event_id.push(Uuid::now_v7());
        self.aggregate_type.push(aggregate_type.to_owned());
        self.aggregate_id.push(event.aggregate_id.clone());
        self.sequence.push(event.sequence);
        self.event_type.push(event.event_type.clone());
        self.event_version.push(event.event_version.clone());
        self.payload.push(event.payload.clone());
        self.metadata.push(event.metadata.clone());
    }
}
