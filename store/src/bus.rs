//! The command bus: one `PersistedEventRepository` per backend behind one enum, and the
//! bus that loads an aggregate, handles a command and appends its events.

use std::collections::HashMap;
use std::time::Duration;

use crate::{log, Db, LogPosition};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventUpcaster, PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::postgres::PgAppender;
use crate::sqlite::SqliteEventRepository;

/// Events between snapshots; keeps every aggregate load to one snapshot plus a few events.
pub const SNAPSHOT_EVERY: usize = 50;
/// Attempts for a command that loses an optimistic-concurrency race to another node.
const MAX_ATTEMPTS: u32 = 12;
/// Lock stripes serialising commands per aggregate within this process.
const STRIPES: usize = 256;
/// Aggregates kept loaded per bus, most recently used first.
const CACHED_AGGREGATES: usize = 1024;
/// Prometheus counter of appended events, labelled by `event_type`.
pub const EVENTS_APPENDED: &str = "parley_events_appended_total";

/// The event repository of the configured backend.
pub enum Repository {
    /// Loads through postgres-es, appends through Parley's group commit.
    Postgres(PostgresEventRepository, PgAppender),
    Sqlite(SqliteEventRepository),
}

impl Repository {
    pub fn new(db: &Db) -> Self {
        match &db.pg {
            Some(pg) => Self::Postgres(
                PostgresEventRepository::new(pg.clone()),
                PgAppender::new(pg.clone()),
            ),
            None => Self::Sqlite(
                SqliteEventRepository::new(db.write.clone(), db.read.clone())
                    .with_inline(db.inline.clone()),
            ),
        }
    }
}

impl Repository {
    /// Persists, and says where the last event landed in the log.
    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<Option<LogPosition>, PersistenceError> {
        match self {
            Self::Postgres(_, appender) => appender.append::<A>(events, snapshot_update).await,
            Self::Sqlite(repo) => repo.append::<A>(events, snapshot_update).await,
        }
    }
}

impl PersistedEventRepository for Repository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.get_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Self::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.get_snapshot::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Postgres(..) | Self::Sqlite(_) => {
                self.append::<A>(events, snapshot_update).await.map(|_| ())
            }
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.stream_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.stream_all_events::<A>().await,
            Self::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}

/// Who and what caused a command; stored as every resulting event's metadata.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub actor_id: Option<Uuid>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub request_id: Uuid,
    pub at: OffsetDateTime,
}

impl CommandMeta {
    /// A new request's metadata: the request is its own correlation root.
    pub fn new(actor_id: Option<Uuid>, at: OffsetDateTime) -> Self {
        let request_id = Uuid::now_v7();
        Self {
            actor_id,
            correlation_id: request_id,
            causation_id: None,
            request_id,
            at,
        }
    }

    fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("correlation_id".to_owned(), self.correlation_id.to_string()),
            ("request_id".to_owned(), self.request_id.to_string()),
            ("occurred_at".to_owned(), crate::format_time(self.at)),
        ]);
        if let Some(actor) = self.actor_id {
            map.insert("actor_id".to_owned(), actor.to_string());
        }
        if let Some(causation) = self.causation_id {
            map.insert("causation_id".to_owned(), causation.to_string());
        }
        map
    }
}

/// What a command appended, and where its last event sits in the global log.
pub struct Committed<A: Aggregate> {
    pub events: Vec<EventEnvelope<A>>,
    pub position: Option<LogPosition>,
}

/// Executes commands for one aggregate type.
///
/// Loading and committing are done here over the repository rather than through
/// cqrs-es's `PersistedEventStore`: in cqrs-es 0.5 a command's events are applied to the
/// aggregate by `EventSink::write` and then applied again when the store builds its
/// snapshot, and a commit that crosses a snapshot boundary records a `last_sequence`
/// beyond what the snapshot holds, so events after it would never be replayed. Here a
/// snapshot is always the aggregate exactly as of the commit's last event.
pub struct CommandBus<A: Aggregate> {
    /// Commands on one aggregate wait for each other here instead of racing to append
    /// and retrying; only writers on other nodes can still conflict.
    stripes: Vec<tokio::sync::Mutex<()>>,
    repo: Repository,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    snapshot_every: Option<usize>,
    services: A::Services,
    db: Db,
    /// Aggregates as of their last command here. A command takes its aggregate out
    /// (under the aggregate's stripe lock) and reads only the events appended since, so
    /// a busy conversation is not rebuilt from its snapshot for every message; it is
    /// put back only once its events are committed.
    cache: std::sync::Mutex<lru::LruCache<String, Loaded<A>>>,
}

/// An aggregate as loaded: its state, last sequence and stored snapshot version.
struct Loaded<A> {
    aggregate: A,
    sequence: usize,
    snapshot_version: Option<usize>,
}

impl<A> CommandBus<A>
where
    A: Aggregate,
    A::Command: Clone,
{
    pub fn new(db: &Db, services: A::Services) -> Self {
        Self::with_snapshots(db, services, SNAPSHOT_EVERY)
    }

    /// Snapshots every `every` events (at least 1).
    pub fn with_snapshots(db: &Db, services: A::Services, every: usize) -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            repo: Repository::new(db),
            upcasters: crate::upcast::registered(),
            snapshot_every: Some(every.max(1)),
            services,
            db: db.clone(),
            cache: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHED_AGGREGATES)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    /// A bus that replays every event on load; for comparisons with snapshot loads.
    pub fn without_snapshots(db: &Db, services: A::Services) -> Self {
        Self {
            snapshot_every: None,
            ..Self::with_snapshots(db, services, 1)
        }
    }

    /// Replaces the registered upcasters (tests of older shapes).
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = upcasters;
        self
    }

    fn deserialize(
        &self,
        event: SerializedEvent,
    ) -> Result<EventEnvelope<A>, AggregateError<A::Error>> {
        let event = crate::upcast::upcast(event, &self.upcasters);
        Ok(EventEnvelope::try_from(event)?)
    }

    /// Decrypts the sealed content of loaded events ([`crate::keys`]).
    async fn open(&self, events: &mut [SerializedEvent]) -> Result<(), AggregateError<A::Error>> {
        self.db
            .keys
            .open_serialized(&self.db.read, events)
            .await
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))
    }

    /// Takes the aggregate out of the cache; the caller must hold its stripe lock.
    fn take_cached(&self, aggregate_id: &str) -> Option<Loaded<A>> {
        self.snapshot_every?;
        self.cache.lock().ok()?.pop(aggregate_id)
    }

    fn put_cached(&self, aggregate_id: &str, loaded: Loaded<A>) {
        if self.snapshot_every.is_none() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(aggregate_id.to_owned(), loaded);
        }
    }

    /// Loads the aggregate: `cached` as it is when given (the append's sequence check
    /// catches a stream another process moved on), otherwise from its snapshot and the
    /// events appended after it.
    async fn load_state(
        &self,
        aggregate_id: &str,
        cached: Option<Loaded<A>>,
    ) -> Result<Loaded<A>, AggregateError<A::Error>> {
        if let Some(cached) = cached {
            return Ok(cached);
        }
        let mut loaded = Loaded {
            aggregate: A::default(),
            sequence: 0,
            snapshot_version: None,
        };
        if self.snapshot_every.is_some() {
            if let Some(snapshot) = self.repo.get_snapshot::<A>(aggregate_id).await? {
                loaded.snapshot_version = Some(snapshot.current_snapshot);
                match serde_json::from_value::<A>(snapshot.aggregate) {
                    Ok(aggregate) => {
                        loaded.aggregate = aggregate;
                        loaded.sequence = snapshot.current_sequence;
                    }
                    // The aggregate's shape changed since the snapshot: replay instead.
                    Err(error) => tracing::debug!(
                        aggregate = A::TYPE,
                        aggregate_id,
                        %error,
                        "snapshot unreadable; replaying from the first event"
                    ),
                }
            }
        }
        let mut events = self
            .repo
            .get_last_events::<A>(aggregate_id, loaded.sequence)
            .await?;
        self.open(&mut events).await?;
        for event in events {
            let envelope = self.deserialize(event)?;
            loaded.sequence = envelope.sequence;
            loaded.aggregate.apply(envelope.payload);
        }
        Ok(loaded)
    }

    /// The aggregate's current state.
    pub async fn load(&self, aggregate_id: &str) -> Result<A, AggregateError<A::Error>> {
        Ok(self.load_state(aggregate_id, None).await?.aggregate)
    }

    /// Every event of one aggregate, oldest first.
    pub async fn events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let mut events = self.repo.get_events::<A>(aggregate_id).await?;
        self.open(&mut events).await?;
        events
            .into_iter()
            .map(|event| self.deserialize(event))
            .collect()
    }

    /// Handles `command`, retrying from a fresh load when a concurrent writer appended
    /// to the same aggregate first. Domain errors are never retried.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let stripe = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::hash::DefaultHasher::new();
            aggregate_id.hash(&mut hasher);
            (hasher.finish() % STRIPES as u64) as usize
        };
        let _turn = self.stripes[stripe].lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_execute(aggregate_id, command.clone(), meta).await {
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    // Exponential backoff with full jitter keeps racing nodes from
                    // colliding again in lockstep.
                    let ceiling = 2_u64.pow(attempt.min(7)) * 2;
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=ceiling)))
                        .await;
                }
                result => return result,
            }
        }
    }

    async fn try_execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let mut cached = self.take_cached(aggregate_id);
        let (aggregate, sequence, snapshot_version, events) = loop {
            let from_cache = cached.is_some();
            let Loaded {
                mut aggregate,
                sequence,
                snapshot_version,
            } = self.load_state(aggregate_id, cached.take()).await?;
            let sink = EventSink::default();
            // `handle` applies each event it writes, so afterwards `aggregate` is the
            // state as of the command's last event.
            let handled = aggregate
                .handle(command.clone(), &self.services, &sink)
                .await;
            let events = sink.collect().await;
            // A cached aggregate is only checked for staleness when its events are
            // appended; a refusal or a no-op decided on it is decided again on a fresh
            // load, so another node's or process's appends are never overlooked.
            if from_cache && (handled.is_err() || events.is_empty()) {
                continue;
            }
            handled.map_err(AggregateError::UserError)?;
            break (aggregate, sequence, snapshot_version, events);
        };
        if events.is_empty() {
            self.put_cached(
                aggregate_id,
                Loaded {
                    aggregate,
                    sequence,
                    snapshot_version,
                },
            );
            return Ok(Committed {
                events: Vec::new(),
                position: None,
            });
        }
        let metadata = meta.to_map();
        let envelopes: Vec<EventEnvelope<A>> = events
            .into_iter()
            .zip(sequence + 1..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let mut serialized = envelopes
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // Keys are written through the write pool: on SQLite that is the one writer
        // connection, so a new key never waits on (or deadlocks with) a reader.
        self.db
            .keys
            .seal(&self.db.write, &mut serialized)
            .await
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        let last = sequence + envelopes.len();
        let snapshot = match self.snapshot_every {
            Some(every) if last / every > sequence / every => Some((
                aggregate_id.to_owned(),
                serde_json::to_value(&aggregate)?,
                snapshot_version.map_or(1, |version| version + 1),
            )),
            _ => None,
        };
        let snapshot_version = snapshot
            .as_ref()
            .map_or(snapshot_version, |(_, _, version)| Some(*version));
        let appended = self.repo.append::<A>(&serialized, snapshot).await?;
        self.db.announcer.committed();
        for event in &serialized {
            metrics::counter!(EVENTS_APPENDED, "event_type" => event.event_type.clone())
                .increment(1);
        }
        self.put_cached(
            aggregate_id,
            Loaded {
                aggregate,
                sequence: last,
                snapshot_version,
            },
        );
        let last = i64::try_from(last).map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        let position = match appended {
            Some(position) => Some(position),
            // Read through the read pool: on SQLite the write connection is the
            // group-commit writer's, and this must not queue behind other appends.
            None => log::position_of(&self.db.read, self.db.backend, A::TYPE, aggregate_id, last)
                .await
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
        };
        Ok(Committed {
            events: envelopes,
            position,
        })
    }
}
