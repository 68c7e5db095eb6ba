//! Catch-up projector runners.
//!
//! Each projector tails the global log from its checkpoint. A batch applies its events
//! and moves the checkpoint in one transaction, so a crash anywhere in a batch leaves
//! neither rows nor checkpoint behind and the batch is simply applied again: nothing
//! is applied twice or skipped. One runner per node reads the log once per round and
//! applies it to every projector in one transaction (one commit for all read models,
//! not one each); a projector that fails drops out of that shared batch and runs
//! alone until it is well, so it holds no other back. On SQLite the writer usually applies
//! a group of appends itself, inside the transaction that appends it ([`InlineBatches`]),
//! and the runner catches up only what it did not. Progress is published on a
//! watch channel per projector so mutations can wait until every projector has seen
//! their events (read-your-writes).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parley_store::inline::{InTransaction, Settle};
use sqlx::{AnyConnection, Connection as _, Executor as _, Row};
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::projector::lock_key;
pub use crate::projector::{all_tables, Projector};
use crate::{Db, ProjectionError};
use parley_store::announce::{EVENTS_CHANNEL, PROGRESS_CHANNEL};
use parley_store::log::{self, LogPosition, StoredEvent};

const BATCH: i64 = 500;
/// Failures in a row at one position before a projector is marked failed.
const FAIL_AFTER: u32 = 3;
/// How often a failed projector tries again (it may have been a passing fault).
const FAILED_RETRY: Duration = Duration::from_secs(10);
/// Fallback poll while idle; the in-process wake-up makes the common case immediate.
const IDLE_POLL: Duration = Duration::from_millis(250);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// How long a background rebuild that could not finish waits before trying again.
const REBUILD_RETRY: Duration = Duration::from_secs(30);
/// How often a standby node checks the owner's checkpoint and tries for the lock.
const STANDBY_POLL: Duration = Duration::from_millis(100);

/// A projector's stored checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: i64,
    pub position: LogPosition,
}

pub async fn load_checkpoint(db: &Db, name: &str) -> Result<Option<Checkpoint>, ProjectionError> {
    let row =
        sqlx::query("SELECT version, txid, position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.write)
            .await?;
    row.map(|row| {
        Ok(Checkpoint {
            version: row.try_get(0)?,
            position: LogPosition {
                tx: row.try_get(1)?,
                pos: row.try_get(2)?,
            },
        })
    })
    .transpose()
}

async fn save_checkpoint(
    conn: &mut AnyConnection,
    name: &str,
    checkpoint: Checkpoint,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version, txid, position) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
             txid = excluded.txid, position = excluded.position",
    )
    .bind(name)
    .bind(checkpoint.version)
    .bind(checkpoint.position.tx)
    .bind(checkpoint.position.pos)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves every one of `projectors`' checkpoints to `position` in one statement.
async fn save_checkpoints(
    conn: &mut AnyConnection,
    projectors: impl Iterator<Item = &dyn Projector>,
    position: LogPosition,
) -> Result<(), ProjectionError> {
    let projectors: Vec<&dyn Projector> = projectors.collect();
    if projectors.is_empty() {
        return Ok(());
    }
    // Never backwards, and never the version: a rebuild that switched its tables in
    // while this batch ran set both, and this runner, resuming from behind it, only
    // applies again what the new tables hold. The version of an existing checkpoint is
    // that of the tables' builder, which only a rebuild or a reset changes.
    let sql = format!(
        "INSERT INTO projection_checkpoints (name, version, txid, position) VALUES {} \
         ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, position = excluded.position \
         WHERE (projection_checkpoints.txid, projection_checkpoints.position) \
             < (excluded.txid, excluded.position)",
        parley_store::values(projectors.len(), 4)
    );
    let mut query = sqlx::query(&sql);
    for projector in projectors {
        query = query
            .bind(projector.name())
            .bind(projector.version())
            .bind(position.tx)
            .bind(position.pos);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Empties the projector's tables and starts its checkpoint over, atomically.
pub async fn reset(db: &Db, projector: &dyn Projector) -> Result<(), ProjectionError> {
    let mut tx = db.write.begin().await?;
    for table in all_tables(projector, db.backend) {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    save_checkpoint(
        &mut tx,
        projector.name(),
        Checkpoint {
            version: projector.version(),
            position: LogPosition::START,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Brings the checkpoint to the projector's version, resetting it on a version change.
pub async fn prepare(db: &Db, projector: &dyn Projector) -> Result<LogPosition, ProjectionError> {
    match load_checkpoint(db, projector.name()).await? {
        Some(checkpoint) if checkpoint.version == projector.version() => Ok(checkpoint.position),
        Some(checkpoint) => {
            tracing::info!(
                projector = projector.name(),
                from = checkpoint.version,
                to = projector.version(),
                "projector version changed; rebuilding from the start of the log"
            );
            reset(db, projector).await?;
            Ok(LogPosition::START)
        }
        None => Ok(LogPosition::START),
    }
}

/// Applies one batch after `after`; returns the new position, or `None` when caught up.
pub async fn run_batch(
    db: &Db,
    projector: &dyn Projector,
    after: LogPosition,
    limit: i64,
) -> Result<Option<LogPosition>, ProjectionError> {
    let events = log::read_after(db, after, limit).await?;
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(None);
    };
    apply_batch(db, &[(projector, after)], &events).await?;
    Ok(Some(last))
}

/// Applies `events` to each projector past its own position and moves every one's
/// checkpoint to the last event, all in one transaction.
pub(crate) async fn apply_batch(
    db: &Db,
    work: &[(&dyn Projector, LogPosition)],
    events: &[StoredEvent],
) -> Result<(), ProjectionError> {
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut conn = db.write.acquire().await?;
    // A read model is a function of the log, and its checkpoint commits with its rows:
    // a batch lost to a crash is lost whole and applied again from the durable log. So
    // its commit need not wait for the disk; the events it applies already did. Said
    // with the BEGIN, in the same round trip.
    let mut tx = conn
        .begin_with(match db.backend {
            crate::Backend::Sqlite => "PRAGMA synchronous = NORMAL; BEGIN",
            crate::Backend::Postgres => "BEGIN; SET LOCAL synchronous_commit = off",
        })
        .await?;
    for (projector, after) in work {
        let unseen: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| event.position > *after)
            .collect();
        projector.apply_all(&mut tx, &unseen).await?;
    }
    save_checkpoints(&mut tx, work.iter().map(|(projector, _)| *projector), last).await?;
    let applied = started.elapsed();
    tx.commit().await?;
    if db.backend == crate::Backend::Sqlite {
        // Whatever else borrows the writer gets the default back; appends set it anyway.
        conn.execute("PRAGMA synchronous = FULL").await?;
    }
    // What a profile of the write path needs: batch sizes, and where a batch's time
    // goes (applying its rows, or committing them).
    tracing::debug!(
        projectors = work.len(),
        first = work.first().map(|(projector, _)| projector.name()),
        events = events.len(),
        apply_us = applied.as_micros() as u64,
        commit_us = (started.elapsed() - applied).as_micros() as u64,
        "batch applied"
    );
    Ok(())
}

/// Runs batches until the projector has applied everything currently readable.
pub async fn catch_up(db: &Db, projector: &dyn Projector) -> Result<LogPosition, ProjectionError> {
    let mut position = prepare(db, projector).await?;
    while let Some(next) = run_batch(db, projector, position, BATCH).await? {
        position = next;
    }
    Ok(position)
}

/// How far a projector got, and whether it is stuck on the event after that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub position: LogPosition,
    /// Why it keeps failing, once marked failed.
    pub failure: Option<String>,
}

/// A projector marked failed: which event stopped it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: LogPosition,
    pub error: String,
    pub failed_at: String,
}

pub async fn load_failure(db: &Db, name: &str) -> Result<Option<Failure>, ProjectionError> {
    let row = sqlx::query(
        "SELECT txid, position, error, failed_at FROM projection_failures WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&db.read)
    .await?;
    row.map(|row| {
        Ok(Failure {
            position: LogPosition {
                tx: row.try_get(0)?,
                pos: row.try_get(1)?,
            },
            error: row.try_get(2)?,
            failed_at: row.try_get(3)?,
        })
    })
    .transpose()
}

async fn record_failure(
    db: &Db,
    name: &str,
    at: LogPosition,
    error: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_failures (name, txid, position, error, failed_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, \
         position = excluded.position, error = excluded.error, failed_at = excluded.failed_at",
    )
    .bind(name)
    .bind(at.tx)
    .bind(at.pos)
    .bind(error)
    .bind(crate::format_time(time::OffsetDateTime::now_utc()))
    .execute(&db.write)
    .await?;
    Ok(())
}

async fn clear_failure(db: &Db, name: &str) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM projection_failures WHERE name = $1")
        .bind(name)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// A projector's state as stored in the database, for operators' status reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub name: &'static str,
    /// The version this release's projector has.
    pub version: i64,
    /// `live`; `failed` (stuck on the event after `position`, see `error`); or
    /// `rebuilding` (a rebuild is under way, see `rebuild`, or its tables are of
    /// another version, which the node running it rebuilds in the background).
    pub state: &'static str,
    /// Cursor of the last event it applied (`0.0` before the first).
    pub position: String,
    /// Cursor of the last event in the log.
    pub head: String,
    /// Events in the log after `position`.
    pub lag: u64,
    pub error: Option<String>,
    pub failed_at: Option<String>,
    /// A rebuild beside the live tables: running, or interrupted (then `updated_at`
    /// stays behind; run the rebuild again to resume it, or discard it).
    pub rebuild: Option<crate::rebuild::Report>,
}

/// Each projector's stored checkpoint and failure mark against the head of the log.
pub async fn status(
    db: &Db,
    projectors: &[Arc<dyn Projector>],
) -> Result<Vec<Status>, ProjectionError> {
    let head = log::head(db).await?;
    let mut report = Vec::with_capacity(projectors.len());
    for projector in projectors {
        let name = projector.name();
        let checkpoint = load_checkpoint(db, name).await?;
        let position = checkpoint.map_or(LogPosition::START, |c| c.position);
        // Marked by the node running it; cleared as soon as it gets past the event.
        let failure = load_failure(db, name)
            .await?
            .filter(|failure| failure.position >= position);
        let rebuild = crate::rebuild::report(db, name).await?;
        let state = match (&failure, checkpoint) {
            (Some(_), _) => "failed",
            (None, Some(c)) if c.version != projector.version() => "rebuilding",
            _ if rebuild.is_some() => "rebuilding",
            _ => "live",
        };
        let lag = if position >= head {
            0
        } else {
            log::count_after(db, position).await?
        };
        report.push(Status {
            name,
            version: projector.version(),
            state,
            position: position.to_cursor(),
            head: head.to_cursor(),
            lag,
            error: failure.as_ref().map(|f| f.error.clone()),
            failed_at: failure.map(|f| f.failed_at),
            rebuild,
        });
    }
    Ok(report)
}

/// One projector in its node's runner: where it stands, and whether it is well.
struct Member {
    projector: Arc<dyn Projector>,
    progress: watch::Sender<Progress>,
    /// On PostgreSQL, whether this node holds the projector's own advisory lock.
    locked: bool,
    /// Its checkpoint, once this node runs it; `None` while another node does.
    owned: Option<LogPosition>,
    /// Failed batches in a row; a projector that just failed runs alone until well.
    in_a_row: u32,
    /// When a projector that failed may try again.
    retry_at: Option<Instant>,
}

impl Member {
    fn new(projector: Arc<dyn Projector>, progress: watch::Sender<Progress>) -> Self {
        Self {
            projector,
            progress,
            locked: false,
            owned: None,
            in_a_row: 0,
            retry_at: None,
        }
    }

    fn name(&self) -> &'static str {
        self.projector.name()
    }

    fn failed(&self) -> bool {
        self.progress.borrow().failure.is_some()
    }

    fn due(&self, now: Instant) -> bool {
        self.owned.is_some() && self.retry_at.is_none_or(|at| now >= at)
    }

    /// Whether its next batch may share the group's transaction: not while it is
    /// failing, so that one projector's bad event cannot hold the others back.
    fn well(&self) -> bool {
        self.in_a_row == 0 && !self.failed()
    }

    /// Loads its checkpoint to start running it. Returns whether its tables were built
    /// by another version of it: they keep being served, and kept up to date, while a
    /// rebuild makes new ones beside them (blue/green).
    async fn take_over(&mut self, db: &Db) -> bool {
        match load_checkpoint(db, self.name()).await {
            Ok(checkpoint) => {
                let position = checkpoint.map_or(LogPosition::START, |c| c.position);
                self.owned = Some(position);
                self.progress.send_modify(|seen| seen.position = position);
                checkpoint.is_some_and(|c| c.version != self.projector.version())
            }
            Err(error) => {
                tracing::error!(projector = self.name(), %error, "cannot load checkpoint");
                false
            }
        }
    }

    /// Follows the checkpoint another node's runner writes, and whether it is stuck.
    async fn follow(&self, db: &Db) {
        let name = self.name();
        let Ok(Some(checkpoint)) = load_checkpoint(db, name).await else {
            return;
        };
        let failure = load_failure(db, name)
            .await
            .ok()
            .flatten()
            .filter(|failure| failure.position >= checkpoint.position)
            .map(|failure| failure.error);
        self.progress.send_if_modified(|seen| {
            let changed = checkpoint.position > seen.position || failure != seen.failure;
            if changed {
                seen.position = seen.position.max(checkpoint.position);
                seen.failure = failure;
            }
            changed
        });
    }

    /// Runs one batch in a transaction of its own; returns whether it moved on.
    async fn alone(&mut self, db: &Db) -> bool {
        let Some(position) = self.owned else {
            return false;
        };
        match run_batch(db, self.projector.as_ref(), position, BATCH).await {
            Ok(Some(next)) => {
                self.went_on(db, next).await;
                true
            }
            Ok(None) => {
                if self.in_a_row > 0 || self.failed() {
                    self.went_on(db, position).await;
                }
                false
            }
            Err(error) => {
                self.stumbled(db, position, &error).await;
                false
            }
        }
    }

    /// A batch went through: clears a failure.
    async fn went_on(&mut self, db: &Db, position: LogPosition) {
        let was_failed = self.failed();
        self.moved_to(position);
        if was_failed {
            tracing::info!(projector = self.name(), "projector recovered");
            if let Err(error) = clear_failure(db, self.name()).await {
                tracing::warn!(projector = self.name(), %error, "cannot clear the failure mark");
            }
        }
    }

    /// Its batch up to `position` committed: tells whoever waits for it.
    fn moved_to(&mut self, position: LogPosition) {
        self.owned = Some(position);
        self.in_a_row = 0;
        self.retry_at = None;
        self.progress.send_replace(Progress {
            position,
            failure: None,
        });
    }

    /// A batch failed: tries again after a pause, and marks it failed after a few.
    async fn stumbled(&mut self, db: &Db, position: LogPosition, error: &ProjectionError) {
        let name = self.name();
        self.in_a_row += 1;
        if self.in_a_row < FAIL_AFTER {
            tracing::error!(projector = name, %position, %error, "projector batch failed; retrying");
            self.retry_at = Some(Instant::now() + ERROR_BACKOFF);
            return;
        }
        if !self.failed() {
            tracing::error!(projector = name, %position, %error,
                "projector keeps failing on the event after its checkpoint; marked failed");
            let message = error.to_string();
            if let Err(error) = record_failure(db, name, position, &message).await {
                tracing::warn!(projector = name, %error, "cannot record the failure");
            }
            self.progress
                .send_modify(|progress| progress.failure = Some(message));
        }
        self.retry_at = Some(Instant::now() + FAILED_RETRY);
    }
}

/// One round of a node's runner: a batch for every well projector it runs, read once
/// and applied in one transaction, then a batch alone for each one that is failing.
/// Returns the projectors that moved on.
async fn round(db: &Db, members: &mut [Member]) -> Vec<&'static str> {
    let now = Instant::now();
    let (group, mut alone): (Vec<usize>, Vec<usize>) = (0..members.len())
        .filter(|&i| members[i].due(now))
        .partition(|&i| members[i].well());
    let mut moved = Vec::new();
    if let Some(from) = group.iter().filter_map(|&i| members[i].owned).min() {
        match group_batch(db, members, &group, from).await {
            Ok(Some((last, advanced))) => {
                for i in advanced {
                    members[i].went_on(db, last).await;
                    moved.push(members[i].name());
                }
            }
            Ok(None) => {}
            Err(error) => {
                // Which projector failed is found by running each alone.
                tracing::warn!(%error, "a shared projector batch failed; applying each alone");
                alone.extend(group);
            }
        }
    }
    for i in alone {
        if members[i].alone(db).await {
            moved.push(members[i].name());
        }
    }
    moved
}

/// Reads the log once after `from` and applies it to every member of `group` behind its
/// end; returns that end and the members moved to it, or `None` when all are caught up.
async fn group_batch(
    db: &Db,
    members: &[Member],
    group: &[usize],
    from: LogPosition,
) -> Result<Option<(LogPosition, Vec<usize>)>, ProjectionError> {
    let events = log::read_after(db, from, BATCH).await?;
    let Some(last) = events.last().map(|event| event.position) else {
        return Ok(None);
    };
    let behind: Vec<usize> = group
        .iter()
        .copied()
        .filter(|&i| members[i].owned.is_some_and(|position| position < last))
        .collect();
    let work: Vec<(&dyn Projector, LogPosition)> = behind
        .iter()
        .filter_map(|&i| Some((members[i].projector.as_ref(), members[i].owned?)))
        .collect();
    apply_batch(db, &work, &events).await?;
    Ok(Some((last, behind)))
}

/// The running set of projectors of one node.
pub struct Projections {
    progress: Vec<(&'static str, watch::Receiver<Progress>)>,
    /// Wakes the runner: events were committed, or another node's runner moved on.
    wake: Arc<Notify>,
    /// Notified whenever events commit anywhere (in process, or on another node).
    commits: Arc<Notify>,
    /// The runner, and the wake-up tasks: in-process commits, and on PostgreSQL the
    /// announcer and listener.
    tasks: Vec<JoinHandle<()>>,
    /// On SQLite, the batches the writer applies inside its groups' transactions.
    inline: Option<(parley_store::inline::Inline, Arc<dyn InTransaction>)>,
}

impl Projections {
    /// Starts the node's runner, which applies every projector's batches together.
    pub fn start(db: Db, projectors: Vec<Arc<dyn Projector>>) -> Self {
        let (members, progress): (Vec<Member>, Vec<_>) = projectors
            .into_iter()
            .map(|projector| {
                let (sender, receiver) = watch::channel(Progress::default());
                let name = projector.name();
                (Member::new(projector, sender), (name, receiver))
            })
            .unzip();
        let names: Vec<&'static str> = progress.iter().map(|(name, _)| *name).collect();
        let wake = Arc::new(Notify::new());
        let commits = Arc::new(Notify::new());
        let (runner, inline) = match db.backend {
            crate::Backend::Postgres => (
                tokio::spawn(run_shared(db.clone(), members, wake.clone())),
                None,
            ),
            crate::Backend::Sqlite => {
                let members = Arc::new(Mutex::new(members));
                let batches: Arc<dyn InTransaction> = Arc::new(InlineBatches {
                    db: db.clone(),
                    members: members.clone(),
                });
                db.inline.install(batches.clone());
                let seen = progress.iter().map(|(_, seen)| seen.clone()).collect();
                (
                    tokio::spawn(run(db.clone(), members, seen, wake.clone())),
                    Some((db.inline.clone(), batches)),
                )
            }
        };
        let mut tasks = vec![
            runner,
            tokio::spawn(wake_on_commits(
                db.announcer.commits(),
                wake.clone(),
                commits.clone(),
            )),
        ];
        if let Some(pool) = db.pg.clone() {
            tasks.push(tokio::spawn(db.announcer.clone().run(pool.clone())));
            tasks.push(tokio::spawn(listen(
                pool,
                db.announcer.node().to_string(),
                names,
                wake.clone(),
                commits.clone(),
            )));
        }
        Self {
            progress,
            wake,
            commits,
            tasks,
            inline,
        }
    }

    /// Woken when events commit, here or on another node; for the live tail.
    pub fn commits(&self) -> Arc<Notify> {
        self.commits.clone()
    }

    /// Tells the runner that new events were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until every projector has applied `position`. Returns false on timeout,
    /// and at once when a projector that has not is marked failed: it is stuck, and
    /// waiting would only hold the caller up.
    pub async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        self.wake();
        let all = futures::future::join_all(self.progress.iter().map(|(_, progress)| {
            let mut progress = progress.clone();
            async move {
                progress
                    .wait_for(|seen| seen.position >= position || seen.failure.is_some())
                    .await
                    .is_ok_and(|seen| seen.position >= position)
            }
        }));
        match tokio::time::timeout(timeout, all).await {
            Ok(results) => results.into_iter().all(|reached| reached),
            Err(_) => false,
        }
    }

    /// Each projector's name and progress as this node knows it.
    pub fn positions(&self) -> Vec<(&'static str, Progress)> {
        self.progress
            .iter()
            .map(|(name, progress)| (*name, progress.borrow().clone()))
            .collect()
    }

    /// Stops the runner; a batch in flight is rolled back, never half-applied.
    pub fn stop(&self) {
        if let Some((inline, batches)) = &self.inline {
            inline.remove(batches);
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Projections {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wakes the runner and the live tail whenever this process commits events.
async fn wake_on_commits(
    mut committed: watch::Receiver<u64>,
    wake: Arc<Notify>,
    commits: Arc<Notify>,
) {
    while committed.changed().await.is_ok() {
        committed.mark_unchanged();
        wake.notify_one();
        commits.notify_one();
    }
}

/// One LISTEN session per node for the log: every commit on another node wakes this
/// node's runner and live tail, and another node's progress on one of our projectors
/// wakes the runner, which follows that node's checkpoints.
async fn listen(
    pool: sqlx::PgPool,
    node: String,
    names: Vec<&'static str>,
    wake: Arc<Notify>,
    commits: Arc<Notify>,
) {
    loop {
        let listener = parley_store::db::listener(&pool).await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for commits; polling instead");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Err(error) = listener
            .listen_all([EVENTS_CHANNEL, PROGRESS_CHANNEL])
            .await
        {
            tracing::warn!(%error, "cannot listen for commits; polling instead");
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        }
        while let Ok(notification) = listener.recv().await {
            if notification.channel() == PROGRESS_CHANNEL {
                // Standbys here follow the owner now rather than at their next poll,
                // so the live tail delivers without delay.
                if notification
                    .payload()
                    .split(',')
                    .any(|name| names.contains(&name))
                {
                    wake.notify_one();
                }
                continue;
            }
            if notification.payload() == node {
                // Our own commit: this node's runner was woken in process already.
                continue;
            }
            wake.notify_one();
            commits.notify_one();
        }
        tokio::time::sleep(ERROR_BACKOFF).await;
    }
}

/// The lock a node's whole runner holds on PostgreSQL.
const GROUP_LOCK: &str = "*";

async fn try_lock(session: &mut sqlx::PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(name))
        .fetch_one(session)
        .await
}

/// Runs the projectors on PostgreSQL, where several nodes share one database: exactly
/// one node holds the runner's advisory lock (on a session of its own) and applies
/// batches; the others follow its checkpoints, so their read-your-writes waits still
/// see progress, and take over within about a second when the holder's session ends.
/// The holder also takes each projector's own lock before running it, which keeps a
/// node of an older release, which runs projectors one lock each, from running the
/// same projector during a rolling upgrade.
async fn run_shared(db: Db, mut members: Vec<Member>, wake: Arc<Notify>) {
    use sqlx::postgres::PgConnection;
    let Some(pool) = db.pg.clone() else { return };
    // Dropped, and so stopped, with the runner.
    let mut rebuilds = JoinSet::new();
    loop {
        for member in &mut members {
            member.locked = false;
            member.owned = None;
        }
        let mut session = match PgConnection::connect_with(&pool.connect_options()).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%error, "cannot open the projector lock session");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let mut owner = false;
        loop {
            match try_lock(&mut session, GROUP_LOCK).await {
                Ok(true) => {
                    owner = true;
                    break;
                }
                Ok(false) => {
                    for member in &members {
                        member.follow(&db).await;
                    }
                    let _ = tokio::time::timeout(STANDBY_POLL, wake.notified()).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "lost the projector lock session");
                    break;
                }
            }
        }
        if !owner {
            continue;
        }
        tracing::info!("this node now runs the projectors");
        loop {
            for member in members.iter_mut().filter(|member| member.owned.is_none()) {
                if !member.locked {
                    match try_lock(&mut session, member.name()).await {
                        Ok(locked) => member.locked = locked,
                        Err(_) => break,
                    }
                }
                if member.locked {
                    if member.take_over(&db).await {
                        rebuilds.spawn(rebuild_in_background(db.clone(), member.projector.clone()));
                    }
                } else {
                    member.follow(&db).await;
                }
            }
            let moved = round(&db, &mut members).await;
            for name in &moved {
                // Standbys on other nodes wait on these checkpoints; tell them.
                db.announcer.progressed(name);
            }
            // Still the owner? A dead lock session means another node may own it now.
            if session.ping().await.is_err() {
                tracing::warn!("projector lock session lost; standing by");
                break;
            }
            if moved.is_empty() {
                let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            }
        }
    }
}

/// Runs the projectors of a node that has its database to itself (SQLite). The writer
/// applies most batches inside its own transactions ([`InlineBatches`]); this runner
/// catches up whatever it did not (at start, after a failure, what the CLI appended),
/// and retries failing projectors.
async fn run(
    db: Db,
    members: Arc<Mutex<Vec<Member>>>,
    progress: Vec<watch::Receiver<Progress>>,
    wake: Arc<Notify>,
) {
    // Dropped, and so stopped, with the runner.
    let mut rebuilds = JoinSet::new();
    loop {
        if caught_up(&db, &progress).await {
            let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            continue;
        }
        let moved = {
            let mut members = members.lock().await;
            for member in members.iter_mut().filter(|member| member.owned.is_none()) {
                member.locked = true;
                if member.take_over(&db).await {
                    rebuilds.spawn(rebuild_in_background(db.clone(), member.projector.clone()));
                }
            }
            round(&db, &mut members).await
        };
        if moved.is_empty() {
            let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
        }
    }
}

/// Whether every projector has applied the whole log, as their progress says: without
/// taking the members, which the writer's inline batch skips while the runner holds
/// them. (A projector not yet taken over, or failing, is behind the head.)
async fn caught_up(db: &Db, progress: &[watch::Receiver<Progress>]) -> bool {
    let Some(applied) = progress.iter().map(|seen| seen.borrow().position).min() else {
        return true;
    };
    log::head(db).await.is_ok_and(|head| applied >= head)
}

/// Most events an inline batch applies: a whole group of appends, and what the runner
/// had not applied before it; further behind, the runner catches up on its own.
const INLINE_BATCH: i64 = 1024;

/// The node's projectors as the SQLite writer runs them inside each group's
/// transaction ([`parley_store::inline`]): when the runner is not in a batch of its own
/// and every projector is well and at the same place, the group is applied to every
/// read model there, in a savepoint, and the projectors move on once it commits. The
/// group's callers then wait for one commit instead of two, and the next group does
/// not queue behind a projector batch for the one write connection.
struct InlineBatches {
    db: Db,
    members: Arc<Mutex<Vec<Member>>>,
}

impl InTransaction for InlineBatches {
    fn run<'c>(&'c self, conn: &'c mut AnyConnection, last: i64) -> BoxFuture<'c, Option<Settle>> {
        let last = LogPosition { tx: 0, pos: last };
        Box::pin(async move {
            // The runner holds them through a batch of its own: it will apply this
            // group too.
            let mut members = self.members.clone().try_lock_owned().ok()?;
            let from = members.first()?.owned?;
            if !members
                .iter()
                .all(|member| member.owned == Some(from) && member.well())
            {
                return None;
            }
            match apply_inline(&self.db, conn, &members, from, last).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    // The runner applies it, and finds out which projector fails.
                    tracing::debug!(%error, "an inline batch failed; the runner applies it");
                    return None;
                }
            }
            let settle: Settle = Box::new(move |committed| {
                if committed {
                    for member in members.iter_mut() {
                        member.moved_to(last);
                    }
                }
            });
            Some(settle)
        })
    }
}

/// Applies the log after `from` up to `last` (which the transaction on `conn` just
/// wrote) to every member, and moves their checkpoints, in a savepoint; `false` when
/// that is more than one inline batch.
async fn apply_inline(
    db: &Db,
    conn: &mut AnyConnection,
    members: &[Member],
    from: LogPosition,
    last: LogPosition,
) -> Result<bool, ProjectionError> {
    // Positions only grow, by one or more an event: this bounds the events between
    // without reading them (a runner far behind, at start, catches up on its own).
    if last.tx != from.tx || last.pos - from.pos > INLINE_BATCH {
        return Ok(false);
    }
    let events = log::read_after_in(db, conn, from, INLINE_BATCH).await?;
    if events.last().map(|event| event.position) != Some(last) {
        return Ok(false);
    }
    let events: Vec<&StoredEvent> = events.iter().collect();
    let mut savepoint = conn.begin().await?;
    let applied = apply_to(&mut savepoint, members, &events, last).await;
    match applied {
        Ok(()) => savepoint.commit().await?,
        Err(error) => {
            savepoint.rollback().await?;
            return Err(error);
        }
    }
    Ok(true)
}

async fn apply_to(
    conn: &mut AnyConnection,
    members: &[Member],
    events: &[&StoredEvent],
    last: LogPosition,
) -> Result<(), ProjectionError> {
    for member in members {
        member.projector.apply_all(conn, events).await?;
    }
    save_checkpoints(
        conn,
        members.iter().map(|member| member.projector.as_ref()),
        last,
    )
    .await
}

/// Rebuilds a projector whose version changed beside its live tables, which keep being
/// served meanwhile, and switches the new ones in once they have caught up: deploying a
/// changed projector needs no downtime. Another node, or an operator's `parley
/// projections rebuild`, may be at it already; then this waits for theirs to finish.
async fn rebuild_in_background(db: Db, projector: Arc<dyn Projector>) {
    let name = projector.name();
    loop {
        tracing::info!(
            projector = name,
            version = projector.version(),
            "projector version changed; rebuilding beside the live tables"
        );
        match crate::rebuild::rebuild(&db, Arc::clone(&projector), &mut |_| {}).await {
            Ok(done) => {
                tracing::info!(
                    projector = name,
                    events = done.applied,
                    "rebuilt tables switched in"
                );
                return;
            }
            Err(ProjectionError::RebuildRunning(_)) => {}
            Err(error) => {
                tracing::warn!(projector = name, %error, "background rebuild failed; will try again");
            }
        }
        tokio::time::sleep(REBUILD_RETRY).await;
        if let Ok(Some(checkpoint)) = load_checkpoint(&db, name).await {
            if checkpoint.version == projector.version() {
                return;
            }
        }
    }
}
