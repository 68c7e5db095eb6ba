//! The embedded SQLite implementation of cqrs-es's `PersistedEventRepository`.
//!
//! Written here rather than taken from sqlite-es because the store must stamp every
//! event with its own UUIDv7 at append (SQLite has no generator a column default could
//! call), check the snapshot's optimistic lock before committing rather than after, and
//! share the single writer connection the read models use.
//!
//! Appends are group-committed ([`crate::group`]) by one writer task per repository, on
//! SQLite's one write connection. A group is written in a few multi-row statements (the
//! tails of the streams it extends, its events, its snapshots), whatever its size: on
//! SQLite every statement is a hand-off to the connection's worker thread and back, and
//! the one writer serialises every append and every read-model batch, so its statements
//! per append bound the whole write path. The writer keeps the last hash it committed
//! to each stream it wrote lately, so a stream a group extends again is not read back.
//! A group that conflicts (another node or the CLI moved a stream or a snapshot on) is
//! rolled back and written again with one savepoint per append, so only the stale
//! append fails.

use std::collections::HashMap;

use crate::group::{
    is_connection, map_error, sequence_i64, Append, Committer, EventRow, Failed, Outcome, Writer,
};
use crate::hash as chain;
use crate::inline::Inline;
use crate::LogPosition;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection as _, Row as _};
use uuid::Uuid;

pub struct SqliteEventRepository {
    read: AnyPool,
    writer: Writer<SqliteCommitter>,
}

/// Writes groups on the one write connection.
struct SqliteCommitter {
    write: AnyPool,
    hashing: bool,
    /// Run inside each group's transaction once its events are written.
    inline: Inline,
    /// The last committed event of the streams written lately, whose hash the next
    /// event of each chains from: a group reads only the tails it has not got.
    heads: Heads,
}

/// Streams whose last committed hash the writer keeps.
const CACHED_HEADS: usize = 16_384;

/// Committed stream heads: (aggregate type, aggregate id) → (sequence, hash). An entry
/// is only ever a committed event's, which the log never changes, and is used only for
/// the sequence it names; a stream another process extended meanwhile is read as before
/// (and its append conflicts), so a stale entry costs a read, never a wrong hash.
struct Heads(std::sync::Mutex<lru::LruCache<(String, String), (i64, String)>>);

impl Default for Heads {
    fn default() -> Self {
        Self(std::sync::Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(CACHED_HEADS).unwrap_or(std::num::NonZeroUsize::MIN),
        )))
    }
}

impl Heads {
    /// The hash of `stream`'s event at `sequence`, if that is the head kept.
    fn get(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Option<String> {
        let mut heads = self.0.lock().ok()?;
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        match heads.get(&key) {
            Some((head, hash)) if *head == sequence => Some(hash.clone()),
            _ => None,
        }
    }

    /// Keeps the heads a committed group left.
    fn extend(&self, written: Written) {
        if let Ok(mut heads) = self.0.lock() {
            for (stream, head) in written {
                heads.put(stream, head);
            }
        }
    }
}

impl SqliteEventRepository {
    pub fn new(write: AnyPool, read: AnyPool) -> Self {
        Self {
            read,
            writer: Writer::new(
                SqliteCommitter {
                    write,
                    hashing: true,
                    inline: Inline::default(),
                    heads: Heads::default(),
                },
                1,
            ),
        }
    }

    /// Runs what is installed in `inline` inside each group's transaction.
    pub fn with_inline(self, inline: Inline) -> Self {
        let committer = self.writer.committer();
        Self {
            writer: Writer::new(
                SqliteCommitter {
                    write: committer.write.clone(),
                    hashing: committer.hashing,
                    inline,
                    heads: Heads::default(),
                },
                1,
            ),
            read: self.read,
        }
    }

    /// Appends without stream hashes, only to measure what hashing costs (benchmarks);
    /// `parley audit verify` reports such events as altered.
    pub fn without_hashing(self) -> Self {
        Self {
            read: self.read,
            writer: Writer::new(
                SqliteCommitter {
                    write: self.writer.committer().write.clone(),
                    hashing: false,
                    inline: self.writer.committer().inline.clone(),
                    heads: Heads::default(),
                },
                1,
            ),
        }
    }

    async fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
             ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after_sequence)
        .fetch_all(&self.read)
        .await
        .map_err(map_error)?;
        rows.iter().map(decode_event).collect()
    }
}

fn decode_event(row: &AnyRow) -> Result<SerializedEvent, PersistenceError> {
    let text = |column: &str| -> Result<String, PersistenceError> {
        row.try_get(column)
            .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
    };
    let sequence: i64 = row
        .try_get("sequence")
        .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
    Ok(SerializedEvent::new(
        text("aggregate_id")?,
        usize::try_from(sequence)
            .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?,
        text("aggregate_type")?,
        text("event_type")?,
        text("event_version")?,
        serde_json::from_str(&text("payload")?)?,
        serde_json::from_str(&text("metadata")?)?,
    ))
}

impl SqliteEventRepository {
    /// Appends like `persist`, and answers with the log position of the last event
    /// written: the writer knows it, so the caller need not ask the database again.
    pub async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<Option<LogPosition>, PersistenceError> {
        let (append, answer) = Append::new(A::TYPE, events, snapshot_update)?;
        self.writer.submit(append, answer).await
    }
}

impl PersistedEventRepository for SqliteEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(A::TYPE, aggregate_id, sequence_i64(last_sequence)?)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let row = sqlx::query(
            "SELECT last_sequence, current_snapshot, payload FROM snapshots \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&self.read)
        .await
        .map_err(map_error)?;
        let Some(row) = row else { return Ok(None) };
        let get = |column: &str| -> Result<i64, PersistenceError> {
            row.try_get(column)
                .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
        };
        let payload: String = row
            .try_get("payload")
            .map_err(|e| PersistenceError::DeserializationError(Box::new(e)))?;
        let to_usize = |value: i64| {
            usize::try_from(value).map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
        };
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: serde_json::from_str(&payload)?,
            current_sequence: to_usize(get("last_sequence")?)?,
            current_snapshot: to_usize(get("current_snapshot")?)?,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        self.append::<A>(events, snapshot_update).await.map(|_| ())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(replay(events).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata \
             FROM events WHERE aggregate_type = $1 ORDER BY position",
        )
        .bind(A::TYPE)
        .fetch_all(&self.read)
        .await
        .map_err(map_error)?;
        let events = rows
            .iter()
            .map(decode_event)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(replay(events).await)
    }
}

async fn replay(events: Vec<SerializedEvent>) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        if feed.push(Ok(event)).await.is_err() {
            break;
        }
    }
    stream
}

/// Writes every append of `group` in one durable transaction; the outer error means
/// nothing was committed, an inner one that only that append was rolled back.
impl Committer for SqliteCommitter {
    async fn commit(&self, group: &[Append]) -> Result<Vec<Outcome>, sqlx::Error> {
        match write_group(self, group).await {
            Ok(positions) => return Ok(positions.into_iter().map(Ok).collect()),
            Err(Failed::Sql(error)) if is_connection(&error) => return Err(error),
            Err(Failed::Conflict) => {
                tracing::debug!(
                    appends = group.len(),
                    "group conflicted; appending one by one"
                )
            }
            Err(Failed::Sql(error)) => {
                tracing::debug!(%error, "group failed; appending one by one")
            }
        }
        commit_group(&self.write, self.hashing, &self.heads, group).await
    }
}

/// A stream of the log: (aggregate type, aggregate id).
type Stream<'a> = (&'a str, &'a str);

/// Writes the whole group in one durable transaction, with whatever is installed to
/// run inside it ([`crate::inline`]); answers each append with its last event's place.
/// All or nothing.
async fn write_group(
    committer: &SqliteCommitter,
    group: &[Append],
) -> Result<Vec<Option<LogPosition>>, Failed> {
    let started = std::time::Instant::now();
    let mut conn = committer.write.acquire().await?;
    let acquired = started.elapsed();
    // Read models may relax the connection's durability for their own (rebuildable)
    // writes; events are always committed with a full sync. One hand-off for both.
    let mut tx = conn.begin_with("PRAGMA synchronous = FULL; BEGIN").await?;
    let (positions, heads) =
        write_rows(&mut tx, committer.hashing, &committer.heads, group).await?;
    let written = started.elapsed();
    let last = positions.iter().flatten().max().copied();
    let settle = match (committer.inline.current(), last) {
        (Some(work), Some(last)) => work.run(&mut tx, last.pos).await,
        _ => None,
    };
    let projected = started.elapsed();
    let committed = tx.commit().await;
    // What a profile of the write path needs: group sizes, and where a group's time
    // goes (waiting for the connection, appending, applying read models, committing).
    tracing::debug!(
        appends = group.len(),
        inline = settle.is_some(),
        acquire_us = acquired.as_micros() as u64,
        append_us = (written - acquired).as_micros() as u64,
        inline_us = (projected - written).as_micros() as u64,
        commit_us = (started.elapsed() - projected).as_micros() as u64,
        "group committed"
    );
    if let Some(settle) = settle {
        settle(committed.is_ok());
    }
    committed?;
    committer.heads.extend(heads);
    Ok(positions)
}

/// The heads a group left, (aggregate type, aggregate id) → (sequence, hash), to keep
/// once it commits.
type Written = HashMap<(String, String), (i64, String)>;

/// Writes `appends` in a few multi-row statements whatever their number (the tails of
/// the streams they extend that `heads` lacks, their events, their snapshots), inside
/// the caller's transaction; answers each with its last event's place, and returns the
/// heads it left. Fails whole, with `Failed::Conflict` when a stream or a snapshot had
/// moved on.
async fn write_rows(
    conn: &mut AnyConnection,
    hashing: bool,
    heads: &Heads,
    appends: &[Append],
) -> Result<(Vec<Option<LogPosition>>, Written), Failed> {
    let events: Vec<(&str, &EventRow)> = appends
        .iter()
        .flat_map(|append| {
            let aggregate_type = append.aggregate_type.as_str();
            append
                .events
                .iter()
                .map(move |event| (aggregate_type, event))
        })
        .collect();
    let hashes = if hashing {
        let tails = stream_tails(conn, heads, &events).await?;
        Some(stream_hashes(&events, &tails))
    } else {
        None
    };
    let mut placed: HashMap<(String, String, i64), LogPosition> =
        HashMap::with_capacity(events.len());
    let rows = crate::rows_per_statement(conn, 9);
    for (chunk, start) in events.chunks(rows).zip((0..).step_by(rows)) {
        let sql = format!(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, \
             event_type, event_version, payload, metadata, hash) VALUES {} \
             RETURNING aggregate_type, aggregate_id, sequence, position",
            crate::values(chunk.len(), 9)
        );
        let mut query = sqlx::query(&sql);
        for (offset, (aggregate_type, event)) in chunk.iter().enumerate() {
            query = query
                .bind(Uuid::now_v7().to_string())
                .bind(*aggregate_type)
                .bind(&event.aggregate_id)
                .bind(event.sequence)
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(&event.payload)
                .bind(&event.metadata)
                .bind(hashes.as_ref().map(|hashes| &hashes[start + offset]));
        }
        for row in query.fetch_all(&mut *conn).await? {
            placed.insert(
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                LogPosition {
                    tx: 0,
                    pos: row.try_get(3)?,
                },
            );
        }
    }
    let snapshots: Vec<(&str, &crate::group::Snapshot)> = appends
        .iter()
        .filter_map(|append| Some((append.aggregate_type.as_str(), append.snapshot.as_ref()?)))
        .collect();
    for chunk in snapshots.chunks(crate::rows_per_statement(conn, 5)) {
        let sql = format!(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, \
             current_snapshot, payload) VALUES {} \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
             SET last_sequence = excluded.last_sequence, \
                 current_snapshot = excluded.current_snapshot, payload = excluded.payload \
             WHERE snapshots.current_snapshot = max(excluded.current_snapshot - 1, 0)",
            crate::values(chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (aggregate_type, snapshot) in chunk {
            query = query
                .bind(*aggregate_type)
                .bind(&snapshot.aggregate_id)
                .bind(snapshot.last_sequence)
                .bind(snapshot.current)
                .bind(&snapshot.payload);
        }
        if query.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
            // A snapshot was replaced meanwhile: its aggregate is stale.
            return Err(Failed::Conflict);
        }
    }
    let mut written = Written::new();
    if let Some(hashes) = &hashes {
        for ((aggregate_type, event), hash) in events.iter().zip(hashes) {
            written.insert(
                ((*aggregate_type).to_owned(), event.aggregate_id.clone()),
                (event.sequence, hash.clone()),
            );
        }
    }
    Ok((crate::group::last_positions(appends, &placed), written))
}

/// The stored hash of the event before each stream's first event in `events` (streams
/// that start in the group have none).
async fn stream_tails<'a>(
    conn: &mut AnyConnection,
    heads: &Heads,
    events: &[(&'a str, &'a EventRow)],
) -> Result<HashMap<(String, String, i64), String>, Failed> {
    let mut seen: std::collections::HashSet<Stream<'a>> = std::collections::HashSet::new();
    let wanted: Vec<(&str, &str, i64)> = events
        .iter()
        .filter(|(aggregate_type, event)| {
            seen.insert((aggregate_type, event.aggregate_id.as_str())) && event.sequence > 1
        })
        .map(|(aggregate_type, event)| {
            (
                *aggregate_type,
                event.aggregate_id.as_str(),
                event.sequence - 1,
            )
        })
        .collect();
    let mut tails = HashMap::with_capacity(wanted.len());
    let wanted: Vec<(&str, &str, i64)> = wanted
        .into_iter()
        .filter(|&(aggregate_type, aggregate_id, sequence)| {
            let Some(hash) = heads.get(aggregate_type, aggregate_id, sequence) else {
                return true;
            };
            tails.insert(
                (aggregate_type.to_owned(), aggregate_id.to_owned(), sequence),
                hash,
            );
            false
        })
        .collect();
    for chunk in wanted.chunks(crate::rows_per_statement(conn, 3)) {
        let matches = (0..chunk.len())
            .map(|i| {
                format!(
                    "(aggregate_type = ${} AND aggregate_id = ${} AND sequence = ${})",
                    3 * i + 1,
                    3 * i + 2,
                    3 * i + 3
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT aggregate_type, aggregate_id, sequence, hash FROM events WHERE {matches}"
        );
        let mut query = sqlx::query(&sql);
        for (aggregate_type, aggregate_id, sequence) in chunk {
            query = query
                .bind(*aggregate_type)
                .bind(*aggregate_id)
                .bind(*sequence);
        }
        for row in query.fetch_all(&mut *conn).await? {
            if let Some(hash) = row.try_get::<Option<String>, _>(3)? {
                tails.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?), hash);
            }
        }
    }
    Ok(tails)
}

/// Each event's stream hash, chained through the group in order: a stream's second
/// event in the group links to its first.
fn stream_hashes(
    events: &[(&str, &EventRow)],
    tails: &HashMap<(String, String, i64), String>,
) -> Vec<String> {
    let mut heads: HashMap<Stream<'_>, (i64, [u8; 32])> = HashMap::new();
    events
        .iter()
        .map(|(aggregate_type, event)| {
            let stream = (*aggregate_type, event.aggregate_id.as_str());
            let prev = match heads.get(&stream) {
                Some((sequence, hash)) if *sequence == event.sequence - 1 => *hash,
                // A predecessor not in the log means another writer's view of the
                // stream differs from ours: the insert will conflict, so any value
                // will do here.
                _ => tails
                    .get(&(
                        (*aggregate_type).to_owned(),
                        event.aggregate_id.clone(),
                        event.sequence - 1,
                    ))
                    .and_then(|hash| chain::from_hex(hash))
                    .unwrap_or(chain::ZERO),
            };
            let hash = chain::stream_hash(
                &prev,
                aggregate_type,
                &event.aggregate_id,
                event.sequence,
                &event.event_type,
                &event.event_version,
                &event.payload,
                &event.metadata,
            );
            heads.insert(stream, (event.sequence, hash));
            chain::to_hex(&hash)
        })
        .collect()
}

/// Writes the group with a savepoint per append, so a conflict rolls back only its
/// own append: the way back when the group as a whole conflicted.
async fn commit_group(
    pool: &AnyPool,
    hashing: bool,
    heads: &Heads,
    group: &[Append],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("PRAGMA synchronous = FULL; BEGIN").await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for append in group {
        let mut savepoint = tx.begin().await?;
        match write_rows(&mut savepoint, hashing, heads, std::slice::from_ref(append)).await {
            Ok((mut position, _)) => {
                savepoint.commit().await?;
                outcomes.push(Ok(position.pop().flatten()));
            }
            Err(failed) => {
                savepoint.rollback().await?;
                outcomes.push(Err(match failed {
                    Failed::Conflict => PersistenceError::OptimisticLockError,
                    Failed::Sql(error) => map_error(error),
                }));
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}
