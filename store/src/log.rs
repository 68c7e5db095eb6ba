//! The global ordered event log: positions, stored events, and the tail reader.
//!
//! On SQLite the rowid (`position`) is commit order, since there is one writer. On
//! PostgreSQL a `bigserial` is taken at insert, not at commit, so a reader ordering by
//! it alone can read position 7 before a slower transaction commits position 6, and
//! skip it forever. Each row therefore also stores its writer's transaction id, the log
//! is ordered by `(txid, position)`, and a reader only returns rows whose transaction id
//! is below every running transaction that is, or may yet be, appending
//! (`parley_log_gate()`, whose migration says how it tells): no row can later appear
//! before what was read, and transactions that do not append (in other databases,
//! analysts' sessions, a rebuild's index builds) do not hold readers back.

use std::borrow::Cow;
use std::fmt;

use parley_aggregates::conversation::{
    fingerprint, ClientRecord, ConversationEvent, LookupFailed, PostedLookup,
};
use parley_aggregates::event::{Event, EventKind};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::{Backend, Db, StoreError};

/// A place in the global order. `tx` is always 0 on SQLite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub tx: i64,
    pub pos: i64,
}

impl LogPosition {
    pub const START: Self = Self { tx: 0, pos: 0 };

    /// The opaque cursor clients see and pass back.
    pub fn to_cursor(self) -> String {
        format!("{}.{}", self.tx, self.pos)
    }

    pub fn from_cursor(cursor: &str) -> Result<Self, StoreError> {
        let (tx, pos) = cursor.split_once('.').ok_or(StoreError::InvalidCursor)?;
        let tx = tx.parse().map_err(|_| StoreError::InvalidCursor)?;
        let pos = pos.parse().map_err(|_| StoreError::InvalidCursor)?;
        if tx < 0 || pos < 0 {
            return Err(StoreError::InvalidCursor);
        }
        Ok(Self { tx, pos })
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx, self.pos)
    }
}

/// One committed event with its envelope, as read from the log.
///
/// The payload is kept as text and decoded on demand, straight into the typed
/// [`Event`] (or into a `serde_json::Value` for those who ask for one): building and
/// freeing a `Value` tree per event was most of what reading the log cost.
#[derive(Debug, Clone, Default)]
pub struct StoredEvent {
    pub position: LogPosition,
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub metadata: Metadata,
    /// The stored payload and metadata exactly as text, for hashing.
    pub payload_text: String,
    pub metadata_text: String,
    /// The per-stream hash written at append (hex).
    pub hash: Option<String>,
    /// For a sealed event ([`crate::keys`]), the payload text with its sealed fields
    /// opened (or emptied, when their key was destroyed).
    pub opened_text: Option<String>,
    /// The payload as a `serde_json::Value`, parsed on first use ([`Self::payload`]).
    pub parsed: std::sync::OnceLock<serde_json::Value>,
    /// The payload as a typed event, decoded on first use: most readers skip most
    /// events (a subscriber, another conversation's) without paying for that.
    pub decoded: std::sync::OnceLock<Option<Event>>,
    /// [`Self::kind`], found once: every projector asks it of every event.
    pub aggregate_kind: std::sync::OnceLock<Option<EventKind>>,
    /// Where [`Self::conversation_id`] lies in `payload_text`, found once: every
    /// subscription asks it of every event.
    pub conversation_at: std::sync::OnceLock<Option<std::ops::Range<usize>>>,
}

/// An event's metadata (`actor_id`, `occurred_at`, `key_id`, …): a handful of string
/// pairs found by a short scan. As a `HashMap` it cost a table, a SipHash per key and an
/// allocation per key for every event read, for nothing at this size; the keys Parley
/// writes are kept as `'static` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(Cow<'static, str>, String)>);

impl Metadata {
    /// The names Parley writes, borrowed rather than allocated per event.
    const NAMES: [&'static str; 7] = [
        "actor_id",
        "causation_id",
        "correlation_id",
        "key_id",
        "occurred_at",
        "request_id",
        "sealed",
    ];

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(name, _)| name == key) {
            Some((_, old)) => *old = value,
            None => self.0.push((Self::name(key), value)),
        }
    }

    fn name(key: &str) -> Cow<'static, str> {
        match Self::NAMES.iter().find(|name| **name == key) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(key.to_owned()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata, A::Error> {
                let mut pairs = Metadata(Vec::with_capacity(map.size_hint().unwrap_or(8)));
                while let Some(Name(key)) = map.next_key()? {
                    let value: String = map.next_value()?;
                    pairs.insert(&key, value);
                }
                Ok(pairs)
            }
        }
        // A key borrowed from the text where it can be (serde's own `Cow<str>` always
        // allocates).
        struct Name<'de>(Cow<'de, str>);
        impl<'de> serde::Deserialize<'de> for Name<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl<'de> serde::de::Visitor<'de> for Text {
                    type Value = Name<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Borrowed(text)))
                    }
                    fn visit_str<E>(self, text: &str) -> Result<Name<'de>, E> {
                        Ok(Name(Cow::Owned(text.to_owned())))
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

impl StoredEvent {
    /// The typed event; `None` for an aggregate type this release does not know. The one
    /// place a record's aggregate type is read to decide what it holds.
    pub fn event(&self) -> Result<Option<&Event>, StoreError> {
        if let Some(decoded) = self.decoded.get() {
            return Ok(decoded.as_ref());
        }
        let decoded = match self.upcast()? {
            Some(today) => Event::decode(&self.aggregate_type, &today.payload),
            None => Event::decode_text(&self.aggregate_type, self.text()),
        }
        .map_err(|source| self.decode_error(source))?;
        Ok(self.decoded.get_or_init(|| decoded).as_ref())
    }

    /// The payload as JSON text, sealed fields opened.
    pub fn text(&self) -> &str {
        self.opened_text.as_deref().unwrap_or(&self.payload_text)
    }

    /// The payload as a `serde_json::Value`, sealed fields opened.
    pub fn payload(&self) -> Result<&serde_json::Value, StoreError> {
        if let Some(parsed) = self.parsed.get() {
            return Ok(parsed);
        }
        let parsed =
            serde_json::from_str(self.text()).map_err(|source| self.decode_error(source))?;
        Ok(self.parsed.get_or_init(|| parsed))
    }

    fn decode_error(&self, source: serde_json::Error) -> StoreError {
        StoreError::Decode {
            position: self.position.to_cursor(),
            event_type: self.event_type.clone(),
            source,
        }
    }

    /// The record in today's shape (type, version and payload) through the registered
    /// upcasters; `None` when none takes it, so the record already is.
    pub fn upcast(&self) -> Result<Option<cqrs_es::persist::SerializedEvent>, StoreError> {
        let upcasters = crate::upcast::all();
        if !upcasters
            .iter()
            .any(|upcaster| upcaster.can_upcast(&self.event_type, &self.event_version))
        {
            return Ok(None);
        }
        Ok(Some(crate::upcast::upcast(
            cqrs_es::persist::SerializedEvent {
                aggregate_id: self.aggregate_id.clone(),
                sequence: usize::try_from(self.sequence).unwrap_or_default(),
                aggregate_type: self.aggregate_type.clone(),
                event_type: self.event_type.clone(),
                event_version: self.event_version.clone(),
                payload: self.payload()?.clone(),
                metadata: serde_json::Value::Null,
            },
            upcasters,
        )))
    }

    /// Which aggregate the event comes from, without decoding it.
    pub fn kind(&self) -> Option<EventKind> {
        *self
            .aggregate_kind
            .get_or_init(|| EventKind::of(&self.aggregate_type))
    }

    /// The typed event if it comes from one of `kinds`, decoded only then: a reader
    /// never fails on (or pays for) events it does not read.
    pub fn event_of(&self, kinds: &[EventKind]) -> Result<Option<&Event>, StoreError> {
        match self.kind() {
            Some(kind) if kinds.contains(&kind) => self.event(),
            _ => Ok(None),
        }
    }

    /// The conversation the event belongs to, if any, read without decoding the whole
    /// event: payloads are externally tagged enums (`{"MessagePosted": {…}}`) and every
    /// conversation-scoped event names its `conversation_id` (never sealed).
    pub fn conversation_id(&self) -> Option<&str> {
        #[derive(serde::Deserialize)]
        struct Scoped<'a> {
            #[serde(borrow, default)]
            conversation_id: Option<&'a str>,
        }
        let at = self.conversation_at.get_or_init(|| {
            let outer: std::collections::BTreeMap<&str, Scoped<'_>> =
                serde_json::from_str(&self.payload_text).ok()?;
            let id = outer.into_values().next()?.conversation_id?;
            crate::keys::range_within(&self.payload_text, id)
        });
        self.payload_text.get(at.clone()?)
    }

    /// Whether personal fields of the stored payload are encrypted ([`crate::keys`]);
    /// [`Self::text`] and [`Self::payload`] hold them opened (or emptied, when their key
    /// was destroyed).
    pub fn is_sealed(&self) -> bool {
        self.metadata.contains_key("key_id")
    }

    /// When the event happened, from its `occurred_at` metadata.
    pub fn occurred_at(&self) -> Option<time::OffsetDateTime> {
        self.meta("occurred_at").and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
    }

    /// A metadata value, such as `actor_id` or `occurred_at`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)
    }
}

const COLUMNS: &str = "txid, position, event_id, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, hash";

/// Reads up to `limit` events after `after`, in global order.
pub async fn read_after(
    db: &Db,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let events = match db.backend {
        Backend::Postgres => {
            // The gate comes from a statement of its own, before the read: see the
            // migration that defines it.
            const GATE: &str = "SELECT parley_log_gate()";
            let sql = format!(
                "SELECT {COLUMNS} FROM events_log \
                 WHERE (txid, position) > ($1, $2) AND txid < $3 \
                 ORDER BY txid, position LIMIT $4"
            );
            // Read through the typed pool: `Any` copies every value of every row once
            // more on the way, the largest cost of reading the log (which is what
            // rebuilds and exports do) after parsing the payloads.
            match &db.pg {
                Some(pg) => {
                    let gate: i64 = sqlx::query_scalar(GATE).fetch_one(pg).await?;
                    let rows = sqlx::query(&sql)
                        .bind(after.tx)
                        .bind(after.pos)
                        .bind(gate)
                        .bind(limit)
                        .fetch_all(pg)
                        .await?;
                    rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let gate: i64 = sqlx::query_scalar(GATE).fetch_one(&db.read).await?;
                    let rows = sqlx::query(&sql)
                        .bind(after.tx)
                        .bind(after.pos)
                        .bind(gate)
                        .bind(limit)
                        .fetch_all(&db.read)
                        .await?;
                    rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?
                }
            }
        }
        Backend::Sqlite => {
            let rows = sqlx::query(&sqlite_after())
                .bind(after.pos)
                .bind(limit)
                .fetch_all(&db.read)
                .await?;
            rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?
        }
    };
    open_events(db, events).await
}

/// Like [`read_after`] on SQLite, but through `conn`: inside the transaction that is
/// writing the log, which sees the events it has not committed yet.
pub async fn read_after_in(
    db: &Db,
    conn: &mut sqlx::AnyConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&sqlite_after())
        .bind(after.pos)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    let events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    open_events(db, events).await
}

fn sqlite_after() -> String {
    format!("SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2")
}

/// The log after `after`, `limit` events at a time, until a batch comes back short
/// (the head, as of that read). Each batch is read and decoded on a task of its own
/// while the caller works on the one before, so reading, decoding and whatever the
/// caller does with the events (a rebuild's writes, an export's encoding) overlap.
pub fn batches(
    db: &Db,
    after: LogPosition,
    limit: i64,
) -> impl futures::Stream<Item = Result<Vec<StoredEvent>, StoreError>> + Send + 'static {
    let read = move |db: Db, after: LogPosition| {
        AbortOnDrop(tokio::spawn(
            async move { read_after(&db, after, limit).await },
        ))
    };
    let first = read(db.clone(), after);
    futures::stream::try_unfold((db.clone(), Some(first)), move |(db, pending)| async move {
        let Some(mut pending) = pending else {
            return Ok(None);
        };
        let events = (&mut pending.0)
            .await
            .map_err(|error| StoreError::Reader(error.to_string()))??;
        let next = match events.last() {
            Some(last) if events.len() as i64 >= limit => Some(read(db.clone(), last.position)),
            Some(_) => None,
            None => return Ok(None),
        };
        Ok(Some((events, (db, next))))
    })
}

/// A task that stops when its handle is dropped: a reader whose consumer went away
/// (or failed) does not go on reading.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn count_after(db: &Db, after: LogPosition) -> Result<u64, StoreError> {
    let count: i64 = match db.backend {
        Backend::Sqlite => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE position > $1")
                .bind(after.pos)
                .fetch_one(&db.read)
                .await?
        }
        Backend::Postgres => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events_log WHERE (txid, position) > ($1, $2)")
                .bind(after.tx)
                .bind(after.pos)
                .fetch_one(&db.read)
                .await?
        }
    };
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Every event of one stream, oldest first, straight from the log (no read model).
pub async fn stream(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        log_table(db.backend)
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(&db.read)
    .await?;
    decode_rows(db, &rows).await
}

/// Whether a stream has any event: whether its aggregate exists, from the log itself
/// (one probe of the stream index), for when a read model may not show it yet.
pub async fn stream_exists(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT sequence FROM {} WHERE aggregate_type = $1 AND aggregate_id = $2 LIMIT 1",
        log_table(db.backend)
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(&db.read)
    .await?;
    Ok(found.is_some())
}

/// One stream's events of the given types, in stream order.
pub async fn stream_of_types(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    event_types: &[&str],
) -> Result<Vec<StoredEvent>, StoreError> {
    if event_types.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE aggregate_type = $1 AND aggregate_id = $2 AND event_type IN ({}) ORDER BY sequence",
        log_table(db.backend),
        crate::placeholders(3, event_types.len())
    );
    let mut query = sqlx::query(&sql).bind(aggregate_type).bind(aggregate_id);
    for event_type in event_types {
        query = query.bind(*event_type);
    }
    let rows = query.fetch_all(&db.read).await?;
    decode_rows(db, &rows).await
}

/// Every event of one type, in global order. The type is written into the statement
/// (it is always one of the code's own names, never input), so that both databases use
/// the partial index of rare types (`events_rare_types`) instead of scanning the log.
pub async fn of_type(
    db: &Db,
    aggregate_type: &str,
    event_type: &'static str,
) -> Result<Vec<StoredEvent>, StoreError> {
    if !event_type.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE event_type = '{event_type}' AND aggregate_type = $1 \
         ORDER BY txid, position",
        log_table(db.backend)
    ))
    .bind(aggregate_type)
    .fetch_all(&db.read)
    .await?;
    decode_rows(db, &rows).await
}

/// The ids of every erased account (their `AccountErased` events), for readers of the
/// log that must show nothing of them, such as exports and audit replays.
pub async fn erased_users(db: &Db) -> Result<std::collections::HashSet<String>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT aggregate_id FROM {} WHERE event_type = 'AccountErased' AND aggregate_type = 'User'",
        log_table(db.backend)
    ))
    .fetch_all(&db.read)
    .await?;
    Ok(ids.into_iter().collect())
}

/// The query of [`post_by_client_id`] (`$1` conversation, `$2` client message id, `$3`
/// author): the posts under this id, usually none or one, straight from the partial
/// index. No `MAX` or `ORDER BY sequence`, which planners answer by walking the whole
/// conversation backwards.
pub fn post_by_client_id_sql(backend: Backend) -> String {
    let (columns, client, author) = match backend {
        Backend::Sqlite => (
            COLUMNS,
            "json_extract(payload, '$.MessagePosted.client_message_id')",
            "json_extract(payload, '$.MessagePosted.author_id')",
        ),
        Backend::Postgres => (
            "txid, position, event_id::text AS event_id, aggregate_type, aggregate_id, \
             sequence, event_type, event_version, payload::text AS payload, \
             metadata::text AS metadata, hash",
            "(payload->'MessagePosted'->>'client_message_id')",
            "(payload->'MessagePosted'->>'author_id')",
        ),
    };
    format!(
        "SELECT {columns} FROM events \
          WHERE aggregate_type = 'Conversation' AND aggregate_id = $1 \
            AND event_type = 'MessagePosted' AND {client} IS NOT NULL \
            AND {client} = $2 AND {author} = $3"
    )
}

/// An author's latest post in a conversation under `client_message_id`, opened; found
/// through the partial index `events_client_message_ids`, so the cost does not grow
/// with the conversation.
pub async fn post_by_client_id(
    db: &Db,
    conversation_id: &str,
    author_id: &str,
    client_message_id: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let rows = sqlx::query(&post_by_client_id_sql(db.backend))
        .bind(conversation_id)
        .bind(client_message_id)
        .bind(author_id)
        .fetch_all(&db.read)
        .await?;
    let mut posts = decode_rows(db, &rows).await?;
    posts.sort_by_key(|post| post.sequence);
    Ok(posts.pop())
}

/// Earlier posts by `clientMessageId`, for the conversation rules: read from the log.
pub struct PostsInLog(pub Db);

#[async_trait::async_trait]
impl PostedLookup for PostsInLog {
    async fn find(
        &self,
        conversation_id: Uuid,
        author_id: Uuid,
        client_message_id: &str,
    ) -> Result<Option<ClientRecord>, LookupFailed> {
        let failed = |error: StoreError| LookupFailed(error.to_string());
        let Some(stored) = post_by_client_id(
            &self.0,
            &conversation_id.to_string(),
            &author_id.to_string(),
            client_message_id,
        )
        .await
        .map_err(failed)?
        else {
            return Ok(None);
        };
        match stored.event().map_err(failed)? {
            Some(Event::Conversation(ConversationEvent::MessagePosted {
                message_id,
                body,
                reply_to_id,
                attachment_ids,
                posted_at,
                ..
            })) => Ok(Some(ClientRecord {
                message_id: *message_id,
                fingerprint: fingerprint(body, *reply_to_id, attachment_ids),
                posted_at: *posted_at,
            })),
            _ => Ok(None),
        }
    }
}

fn log_table(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "events",
        Backend::Postgres => "events_log",
    }
}

/// The position of one stored event, by stream and sequence.
pub async fn position_of(
    pool: &AnyPool,
    backend: Backend,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<LogPosition>, StoreError> {
    let table = match backend {
        Backend::Sqlite => "events",
        Backend::Postgres => "events_log",
    };
    let row = sqlx::query(&format!(
        "SELECT txid, position FROM {table} \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(LogPosition {
            tx: row.try_get(0)?,
            pos: row.try_get(1)?,
        })
    })
    .transpose()
}

/// The last committed position, for "now" in read-your-writes and status output.
pub async fn head(db: &Db) -> Result<LogPosition, StoreError> {
    let sql = match db.backend {
        Backend::Sqlite => "SELECT 0, COALESCE(MAX(position), 0) FROM events",
        Backend::Postgres => {
            "SELECT txid, position FROM events_log ORDER BY txid DESC, position DESC LIMIT 1"
        }
    };
    let row = sqlx::query(sql).fetch_optional(&db.read).await?;
    Ok(match row {
        Some(row) => LogPosition {
            tx: row.try_get(0)?,
            pos: row.try_get(1)?,
        },
        None => LogPosition::START,
    })
}

/// Decodes rows and opens their sealed content ([`crate::keys`]).
async fn decode_rows(db: &Db, rows: &[sqlx::any::AnyRow]) -> Result<Vec<StoredEvent>, StoreError> {
    let events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    open_events(db, events).await
}

/// Opens the sealed content of decoded events ([`crate::keys`]).
async fn open_events(
    db: &Db,
    mut events: Vec<StoredEvent>,
) -> Result<Vec<StoredEvent>, StoreError> {
    if events
        .iter()
        .any(|event| crate::keys::SHREDDING_EVENTS.contains(&event.event_type.as_str()))
    {
        // Another node may have destroyed keys this one still holds.
        db.keys.forget();
    }
    let (at, sealed): (Vec<usize>, Vec<crate::keys::SealedText<'_>>) = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| {
            Some((
                index,
                crate::keys::SealedText {
                    text: &event.payload_text,
                    key_id: event.meta("key_id")?,
                    fields: event.meta("sealed")?,
                },
            ))
        })
        .unzip();
    let opened = db.keys.open_texts(&db.read, &sealed).await?;
    drop(sealed);
    for (index, text) in at.into_iter().zip(opened) {
        if let Some(event) = events.get_mut(index) {
            event.opened_text = Some(text);
        }
    }
    Ok(events)
}

/// One row of [`COLUMNS`], in that order, from either kind of row.
fn decode_row<'r, R>(row: &'r R) -> Result<StoredEvent, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let position = LogPosition {
        tx: row.try_get(0)?,
        pos: row.try_get(1)?,
    };
    let event_type: String = row.try_get(6)?;
    let payload_text: String = row.try_get(8)?;
    let metadata_text: String = row.try_get(9)?;
    let metadata = serde_json::from_str(&metadata_text).map_err(|source| StoreError::Decode {
        position: position.to_cursor(),
        event_type: event_type.clone(),
        source,
    })?;
    Ok(StoredEvent {
        position,
        event_id: row.try_get(2)?,
        aggregate_type: row.try_get(3)?,
        aggregate_id: row.try_get(4)?,
        sequence: row.try_get(5)?,
        event_type,
        event_version: row.try_get(7)?,
        metadata,
        payload_text,
        metadata_text,
        hash: row.try_get(10)?,
        ..StoredEvent::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_like_positions() {
        let a = LogPosition { tx: 5, pos: 9 };
        let b = LogPosition { tx: 6, pos: 2 };
        assert!(a < b);
        assert_eq!(LogPosition::from_cursor(&a.to_cursor()).ok(), Some(a));
        for bad in ["", "1", "a.b", "1.-2", "1.2.3"] {
            assert!(LogPosition::from_cursor(bad).is_err(), "{bad}");
        }
    }
    fn event(payload: serde_json::Value) -> StoredEvent {
        StoredEvent {
            position: LogPosition { tx: 0, pos: 1 },
            aggregate_type: "Message".to_owned(),
            sequence: 1,
            event_version: "1".to_owned(),
            payload_text: payload.to_string(),
            ..StoredEvent::default()
        }
    }

    #[test]
    fn an_events_conversation_is_read_from_its_payload() {
        let scoped =
            event(serde_json::json!({ "MessageEdited": { "conversation_id": "c1", "body": "x" } }));
        assert_eq!(scoped.conversation_id(), Some("c1"));
        let unscoped = event(serde_json::json!({ "UserRegistered": { "user_id": "u1" } }));
        assert_eq!(unscoped.conversation_id(), None);
        assert_eq!(event(serde_json::json!("Unit")).conversation_id(), None);
        let nested = event(serde_json::json!({ "MessagePosted": {
            "a": { "conversation_id": "not this" }, "conversation_id": "c2", "z": [1]
        } }));
        assert_eq!(nested.conversation_id(), Some("c2"));
        assert_eq!(nested.conversation_id(), Some("c2"));
        let unset = event(serde_json::json!({ "MessagePosted": { "conversation_id": null } }));
        assert_eq!(unset.conversation_id(), None);
        let spaced = StoredEvent {
            payload_text: r#"{"MessageEdited": {"body": "x", "conversation_id": "c3"}}"#.to_owned(),
            ..StoredEvent::default()
        };
        assert_eq!(spaced.conversation_id(), Some("c3"));
    }

    #[test]
    fn metadata_reads_like_the_object_it_was_written_as() {
        let text = r#"{"actor_id": "a", "sealed": "body:s", "custom": "c\u00e9", "actor_id": "b"}"#;
        let metadata: Metadata = serde_json::from_str(text).expect("metadata");
        assert_eq!(metadata.get("actor_id"), Some("b"));
        assert_eq!(metadata.get("custom"), Some("cé"));
        assert!(metadata.contains_key("sealed"));
        assert_eq!(metadata.get("key_id"), None);
        assert!(serde_json::from_str::<Metadata>(r#"{"actor_id": 1}"#).is_err());
        assert!(serde_json::from_str::<Metadata>("[]").is_err());
    }

    #[test]
    fn the_payload_reads_opened_when_sealed() {
        let mut sealed = event(serde_json::json!({ "MessageEdited": { "body": "c2VhbGVk" } }));
        assert_eq!(
            sealed.payload().ok(),
            Some(&serde_json::json!({ "MessageEdited": { "body": "c2VhbGVk" } }))
        );
        sealed.opened_text = Some(r#"{"MessageEdited": {"body": "hello"}}"#.to_owned());
        sealed.parsed = std::sync::OnceLock::new();
        assert_eq!(sealed.text(), r#"{"MessageEdited": {"body": "hello"}}"#);
        assert_eq!(
            sealed.payload().ok(),
            Some(&serde_json::json!({ "MessageEdited": { "body": "hello" } }))
        );
        let broken = StoredEvent {
            payload_text: "{".to_owned(),
            ..StoredEvent::default()
        };
        assert!(matches!(broken.payload(), Err(StoreError::Decode { .. })));
    }
}
