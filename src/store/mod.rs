//! Event-store wiring: one `PersistedEventRepository` per backend behind one enum, and
//! the command bus that loads an aggregate, handles a command and appends its events.

mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use parley_projections::{log, Db, LogPosition};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use sqlite::SqliteEventRepository;

/// Events between snapshots; keeps every aggregate load to one snapshot plus a few events.
pub const SNAPSHOT_EVERY: usize = 50;
/// Attempts for a command that loses an optimistic-concurrency race.
const MAX_ATTEMPTS: usize = 8;

/// The event repository of the configured backend.
pub enum Repository {
    Postgres(PostgresEventRepository),
    Sqlite(SqliteEventRepository),
}

impl Repository {
    pub fn new(db: &Db) -> Self {
        match &db.pg {
            Some(pg) => Self::Postgres(PostgresEventRepository::new(pg.clone())),
            None => Self::Sqlite(SqliteEventRepository::new(
                db.write.clone(),
                db.read.clone(),
            )),
        }
    }
}

impl PersistedEventRepository for Repository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Self::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.persist::<A>(events, snapshot_update).await,
            Self::Sqlite(repo) => repo.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo) => repo.stream_all_events::<A>().await,
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
            (
                "occurred_at".to_owned(),
                parley_projections::format_time(self.at),
            ),
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
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<Repository, A>,
    services: A::Services,
    db: Db,
}

impl<A> CommandBus<A>
where
    A: Aggregate,
    A::Command: Clone,
{
    pub fn new(db: &Db, services: A::Services) -> Self {
        Self::with_snapshots(db, services, SNAPSHOT_EVERY)
    }

    pub fn with_snapshots(db: &Db, services: A::Services, every: usize) -> Self {
        Self {
            store: PersistedEventStore::new_snapshot_store(Repository::new(db), every),
            services,
            db: db.clone(),
        }
    }

    /// Installs upcasters for older event shapes.
    pub fn with_upcasters(
        mut self,
        upcasters: Vec<Box<dyn cqrs_es::persist::EventUpcaster>>,
    ) -> Self {
        self.store = self.store.with_upcasters(upcasters);
        self
    }

    /// The aggregate's current state.
    pub async fn load(&self, aggregate_id: &str) -> Result<A, AggregateError<A::Error>> {
        let mut context = self.store.load_aggregate(aggregate_id).await?;
        Ok(std::mem::take(context.aggregate()))
    }

    /// Every event of one aggregate, oldest first.
    pub async fn events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.store.load_events(aggregate_id).await
    }

    /// Handles `command`, retrying from a fresh load when a concurrent writer appended
    /// to the same aggregate first. Domain errors are never retried.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_execute(aggregate_id, command.clone(), meta).await {
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    // Jitter keeps racing writers from colliding again in lockstep.
                    let jitter = rand::random_range(0..(5 * attempt as u64));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
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
        let mut context = self.store.load_aggregate(aggregate_id).await?;
        let sink = cqrs_es::event_sink::EventSink::default();
        context
            .aggregate()
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Committed {
                events: Vec::new(),
                position: None,
            });
        }
        let events = self.store.commit(events, context, meta.to_map()).await?;
        let position = match events.last() {
            Some(last) => {
                let sequence = i64::try_from(last.sequence)
                    .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
                log::position_of(
                    &self.db.write,
                    self.db.backend,
                    A::TYPE,
                    aggregate_id,
                    sequence,
                )
                .await
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?
            }
            None => None,
        };
        Ok(Committed { events, position })
    }
}

/// Shared handle to a command bus.
pub type Bus<A> = Arc<CommandBus<A>>;
