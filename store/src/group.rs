//! Group commit, shared by both backends: `Writer` queues appends for writer tasks,
//! each of which takes every append waiting at that moment into one transaction and
//! answers each append with its own outcome once that transaction is durable.
//!
//! Under load many appends share one commit (one fsync and, on PostgreSQL, one round
//! trip per statement instead of per append); alone, an append commits as soon as it
//! arrives. How a group is written, and how one append's conflict is kept from failing
//! the others, is the backend's part (`Committer`).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::LogPosition;

/// Most appends one transaction takes; bounds how long the first of them waits.
const MAX_GROUP: usize = 256;
/// Appends queued for the writers before `submit` waits for room.
const QUEUE: usize = 1024;

/// What an append learns: where its last event landed, when the backend knows.
pub(crate) type Outcome = Result<Option<LogPosition>, PersistenceError>;

/// One `persist` call, serialized by the caller's task, waiting for its group.
pub(crate) struct Append {
    pub aggregate_type: String,
    pub events: Vec<EventRow>,
    pub snapshot: Option<Snapshot>,
    done: oneshot::Sender<Outcome>,
}

/// An event as stored, its JSON already rendered.
pub(crate) struct EventRow {
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// The aggregate as of the append's last event, replacing snapshot `current - 1`.
pub(crate) struct Snapshot {
    pub aggregate_id: String,
    pub last_sequence: i64,
    pub current: i64,
    pub payload: String,
}

/// A database error as the event store reports it: a unique violation is a lost race
/// for a stream's next sequence.
pub(crate) fn map_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            PersistenceError::OptimisticLockError
        }
        _ if is_connection(&error) => PersistenceError::ConnectionError(Box::new(error)),
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

/// Each append's answer: the place of its last event, from the places the group's
/// insert returned, keyed by (aggregate type, aggregate id, sequence).
pub(crate) fn last_positions(
    group: &[Append],
    placed: &std::collections::HashMap<(String, String, i64), LogPosition>,
) -> Vec<Option<LogPosition>> {
    group
        .iter()
        .map(|append| {
            let last = append.events.last()?;
            placed
                .get(&(
                    append.aggregate_type.clone(),
                    last.aggregate_id.clone(),
                    last.sequence,
                ))
                .copied()
        })
        .collect()
}

/// Why a group written as a whole was rolled back.
pub(crate) enum Failed {
    /// A stream or snapshot had moved on: some append of the group is stale, and the
    /// group is written again one append at a time so only that one fails.
    Conflict,
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Sql(error),
        }
    }
}

/// The database could not be reached: nothing was written, whatever was asked.
pub(crate) fn is_connection(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}

pub(crate) fn sequence_i64(sequence: usize) -> Result<i64, PersistenceError> {
    i64::try_from(sequence).map_err(|e| PersistenceError::UnknownError(Box::new(e)))
}

impl Append {
    /// Renders one append; the receiver answers once its group committed (or failed).
    pub fn new(
        aggregate_type: &str,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(Self, oneshot::Receiver<Outcome>), PersistenceError> {
        let events = events
            .iter()
            .map(|event| {
                Ok(EventRow {
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: sequence_i64(event.sequence)?,
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload: serde_json::to_string(&event.payload)?,
                    metadata: serde_json::to_string(&event.metadata)?,
                })
            })
            .collect::<Result<Vec<EventRow>, PersistenceError>>()?;
        let snapshot = match snapshot_update {
            Some((aggregate_id, aggregate, current)) => Some(Snapshot {
                aggregate_id,
                last_sequence: events.last().map_or(0, |row| row.sequence),
                current: sequence_i64(current)?,
                payload: serde_json::to_string(&aggregate)?,
            }),
            None => None,
        };
        let (done, answer) = oneshot::channel();
        Ok((
            Self {
                aggregate_type: aggregate_type.to_owned(),
                events,
                snapshot,
                done,
            },
            answer,
        ))
    }
}

/// A backend's way of writing one group in one transaction.
pub(crate) trait Committer: Send + Sync + 'static {
    /// Writes `group`; the outer error means nothing was committed, an inner one that
    /// only that append was not.
    fn commit(
        &self,
        group: &[Append],
    ) -> impl Future<Output = Result<Vec<Outcome>, sqlx::Error>> + Send;
}

/// The queue in front of a backend's writer tasks, started by the first append (so
/// inside the runtime).
pub(crate) struct Writer<C> {
    committer: Arc<C>,
    tasks: usize,
    queue: OnceLock<mpsc::Sender<Append>>,
}

/// The writers stopped or the group's transaction failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("the group commit failed: {0}")]
struct GroupFailed(String);

impl<C: Committer> Writer<C> {
    /// `tasks` writers commit groups concurrently: one for SQLite's single writer, a
    /// few for PostgreSQL so one group's fsync overlaps the next group's statements.
    pub fn new(committer: C, tasks: usize) -> Self {
        Self {
            committer: Arc::new(committer),
            tasks: tasks.max(1),
            queue: OnceLock::new(),
        }
    }

    pub fn committer(&self) -> &C {
        &self.committer
    }

    /// Queues `append` and waits for its group's outcome.
    pub async fn submit(&self, append: Append, answer: oneshot::Receiver<Outcome>) -> Outcome {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.tasks {
                tokio::spawn(write_groups(self.committer.clone(), receiver.clone()));
            }
            sender
        });
        let gone = || {
            PersistenceError::ConnectionError(Box::new(GroupFailed("the writer stopped".into())))
        };
        queue.send(append).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// One writer task: takes what is waiting, commits it, answers, repeats.
async fn write_groups<C: Committer>(committer: Arc<C>, queue: Arc<Mutex<mpsc::Receiver<Append>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        // Only the collecting is under the lock: another writer takes the next group
        // while this one commits.
        let received = queue.lock().await.recv_many(&mut group, MAX_GROUP).await;
        if received == 0 {
            return;
        }
        match committer.commit(&group).await {
            Ok(outcomes) => {
                for (append, outcome) in group.drain(..).zip(outcomes) {
                    // The caller may have gone (a dropped request); its events stand.
                    let _ = append.done.send(outcome);
                }
            }
            Err(error) => {
                let message = error.to_string();
                for append in group.drain(..) {
                    let failed = GroupFailed(message.clone());
                    let _ = append
                        .done
                        .send(Err(PersistenceError::ConnectionError(Box::new(failed))));
                }
            }
        }
    }
}
