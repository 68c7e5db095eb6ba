//! Catch-up projector runners.
//!
//! Each projector tails the global log from its checkpoint. A batch applies its events
//! and moves the checkpoint in one transaction, so a crash anywhere in a batch leaves
//! neither rows nor checkpoint behind and the batch is simply applied again: nothing
//! is applied twice or skipped. Progress is published on a watch channel so mutations
//! can wait until every projector has seen their events (read-your-writes).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Connection as _, Executor as _, Row};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::{Db, ProjectionError};
use parley_store::announce::{EVENTS_CHANNEL, PROGRESS_CHANNEL};
use parley_store::log::{self, LogPosition, StoredEvent};

/// A read-model builder: a small, idempotent function of (rows, event).
#[async_trait::async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Checkpoint name; stable across releases.
    fn name(&self) -> &'static str;
    /// Bumping it makes the projector rebuild its tables from the start of the log.
    fn version(&self) -> i64 {
        1
    }
    /// The tables this projector alone writes, emptied on a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Tables that exist only on one backend (such as SQLite's full-text index).
    fn backend_tables(&self, _backend: crate::Backend) -> &'static [&'static str] {
        &[]
    }
    /// Applies one event. Must be idempotent: the same event twice changes nothing.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
}

const BATCH: i64 = 500;
/// Failures in a row at one position before a projector is marked failed.
const FAIL_AFTER: u32 = 3;
/// How often a failed projector tries again (it may have been a passing fault).
const FAILED_RETRY: Duration = Duration::from_secs(10);
/// Fallback poll while idle; the in-process wake-up makes the common case immediate.
const IDLE_POLL: Duration = Duration::from_millis(250);
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
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

/// Every table the projector writes on `backend`.
pub fn all_tables(projector: &dyn Projector, backend: crate::Backend) -> Vec<&'static str> {
    let mut tables = projector.tables().to_vec();
    tables.extend_from_slice(projector.backend_tables(backend));
    tables
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
    let started = std::time::Instant::now();
    let mut conn = db.write.acquire().await?;
    // A read model is a function of the log, and its checkpoint commits with its rows:
    // a batch lost to a crash is lost whole and applied again from the durable log. So
    // its commit need not wait for the disk; the events it applies already did.
    if db.backend == crate::Backend::Sqlite {
        conn.execute("PRAGMA synchronous = NORMAL").await?;
    }
    let mut tx = conn.begin().await?;
    if db.backend == crate::Backend::Postgres {
        tx.execute("SET LOCAL synchronous_commit = off").await?;
    }
    for event in &events {
        projector.apply(&mut tx, event).await?;
    }
    save_checkpoint(
        &mut tx,
        projector.name(),
        Checkpoint {
            version: projector.version(),
            position: last,
        },
    )
    .await?;
    let applied = started.elapsed();
    tx.commit().await?;
    if db.backend == crate::Backend::Sqlite {
        // Whatever else borrows the writer gets the default back; appends set it anyway.
        conn.execute("PRAGMA synchronous = FULL").await?;
    }
    // What a profile of the write path needs: per projector, batch sizes and where a
    // batch's time goes (applying its rows, or committing them).
    tracing::debug!(
        projector = projector.name(),
        events = events.len(),
        apply_us = applied.as_micros() as u64,
        commit_us = (started.elapsed() - applied).as_micros() as u64,
        "batch applied"
    );
    Ok(Some(last))
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

struct Runner {
    name: &'static str,
    progress: watch::Receiver<Progress>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
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

/// Counts a projector's failures in a row and marks it failed, or well again.
struct Health<'a> {
    db: &'a Db,
    name: &'static str,
    progress: &'a watch::Sender<Progress>,
    in_a_row: u32,
}

impl<'a> Health<'a> {
    fn new(db: &'a Db, name: &'static str, progress: &'a watch::Sender<Progress>) -> Self {
        Self {
            db,
            name,
            progress,
            in_a_row: 0,
        }
    }

    fn failed(&self) -> bool {
        self.progress.borrow().failure.is_some()
    }

    /// A batch went through: clears a failure.
    async fn went_on(&mut self, position: LogPosition) {
        self.in_a_row = 0;
        let was_failed = self.failed();
        self.progress.send_replace(Progress {
            position,
            failure: None,
        });
        if was_failed {
            tracing::info!(projector = self.name, "projector recovered");
            if let Err(error) = clear_failure(self.db, self.name).await {
                tracing::warn!(projector = self.name, %error, "cannot clear the failure mark");
            }
        }
    }

    /// A batch failed; returns how long to wait before trying again.
    async fn stumbled(&mut self, position: LogPosition, error: &ProjectionError) -> Duration {
        self.in_a_row += 1;
        if self.in_a_row < FAIL_AFTER {
            tracing::error!(projector = self.name, %position, %error, "projector batch failed; retrying");
            return ERROR_BACKOFF;
        }
        if !self.failed() {
            tracing::error!(projector = self.name, %position, %error,
                "projector keeps failing on the event after its checkpoint; marked failed");
            let message = error.to_string();
            if let Err(error) = record_failure(self.db, self.name, position, &message).await {
                tracing::warn!(projector = self.name, %error, "cannot record the failure");
            }
            self.progress
                .send_modify(|progress| progress.failure = Some(message));
        }
        FAILED_RETRY
    }
}

/// The running set of projectors of one node.
pub struct Projections {
    runners: Vec<Runner>,
    /// Notified whenever events commit anywhere (in process, or on another node).
    commits: Arc<Notify>,
    /// Wake-up tasks: in-process commits, and on PostgreSQL the announcer and listener.
    hubs: Vec<JoinHandle<()>>,
}

impl Projections {
    /// Starts one background runner per projector.
    pub fn start(db: Db, projectors: Vec<Arc<dyn Projector>>) -> Self {
        let runners = projectors
            .into_iter()
            .map(|projector| {
                let (progress_tx, progress) = watch::channel(Progress::default());
                let wake = Arc::new(Notify::new());
                let task = tokio::spawn(run(
                    db.clone(),
                    projector.clone(),
                    progress_tx,
                    wake.clone(),
                ));
                Runner {
                    name: projector.name(),
                    progress,
                    wake,
                    task,
                }
            })
            .collect::<Vec<Runner>>();
        let commits = Arc::new(Notify::new());
        let wakes: Vec<(&'static str, Arc<Notify>)> =
            runners.iter().map(|r| (r.name, r.wake.clone())).collect();
        let mut hubs = vec![tokio::spawn(wake_on_commits(
            db.announcer.commits(),
            wakes.clone(),
            commits.clone(),
        ))];
        if let Some(pool) = db.pg.clone() {
            hubs.push(tokio::spawn(db.announcer.clone().run(pool.clone())));
            hubs.push(tokio::spawn(listen(
                pool,
                db.announcer.node().to_string(),
                wakes,
                commits.clone(),
            )));
        }
        Self {
            runners,
            commits,
            hubs,
        }
    }

    /// Woken when events commit, here or on another node; for the live tail.
    pub fn commits(&self) -> Arc<Notify> {
        self.commits.clone()
    }

    /// Tells every runner that new events were committed.
    pub fn wake(&self) {
        for runner in &self.runners {
            runner.wake.notify_one();
        }
    }

    /// Waits until every projector has applied `position`. Returns false on timeout,
    /// and at once when a projector that has not is marked failed: it is stuck, and
    /// waiting would only hold the caller up.
    pub async fn wait_for(&self, position: LogPosition, timeout: Duration) -> bool {
        self.wake();
        let all = futures::future::join_all(self.runners.iter().map(|runner| {
            let mut progress = runner.progress.clone();
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
        self.runners
            .iter()
            .map(|runner| (runner.name, runner.progress.borrow().clone()))
            .collect()
    }

    /// Stops every runner; a batch in flight is rolled back, never half-applied.
    pub fn stop(&self) {
        for runner in &self.runners {
            runner.task.abort();
        }
        for hub in &self.hubs {
            hub.abort();
        }
    }
}

impl Drop for Projections {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wakes the runners and the live tail whenever this process commits events.
async fn wake_on_commits(
    mut committed: watch::Receiver<u64>,
    runners: Vec<(&'static str, Arc<Notify>)>,
    commits: Arc<Notify>,
) {
    while committed.changed().await.is_ok() {
        committed.mark_unchanged();
        for (_, wake) in &runners {
            wake.notify_one();
        }
        commits.notify_one();
    }
}

/// One LISTEN session per node for the log: every commit on another node wakes this
/// node's runners and live tail, and an owner's progress wakes that projector's standby.
async fn listen(
    pool: sqlx::PgPool,
    node: String,
    runners: Vec<(&'static str, Arc<Notify>)>,
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
                // A projector's owner moved on: its standbys here catch up now rather
                // than at their next poll, so the live tail delivers without delay.
                let names: Vec<&str> = notification.payload().split(',').collect();
                for (_, wake) in runners.iter().filter(|(name, _)| names.contains(name)) {
                    wake.notify_one();
                }
                continue;
            }
            if notification.payload() == node {
                // Our own commit: this node's runners were woken in process already.
                continue;
            }
            for (_, wake) in &runners {
                wake.notify_one();
            }
            commits.notify_one();
        }
        tokio::time::sleep(ERROR_BACKOFF).await;
    }
}

/// The advisory-lock key of a projector, the same on every node.
fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("parley:projector:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Runs a projector on PostgreSQL, where several nodes share one database: exactly one
/// node holds the projector's advisory lock (on a session of its own) and applies
/// batches; the others follow its checkpoint, so their read-your-writes waits still
/// see progress, and take over within about a second when the holder's session ends.
async fn run_shared(
    db: Db,
    projector: Arc<dyn Projector>,
    progress: watch::Sender<Progress>,
    wake: Arc<Notify>,
) {
    use sqlx::postgres::PgConnection;
    use sqlx::Connection as _;
    let name = projector.name();
    let Some(pool) = db.pg.clone() else { return };
    let key = lock_key(name);
    loop {
        let mut session = match PgConnection::connect_with(&pool.connect_options()).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(projector = name, %error, "cannot open the projector lock session");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        loop {
            let owner: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut session)
                .await;
            match owner {
                Ok(true) => break,
                Ok(false) => {
                    // Standby: follow the owner's checkpoint, and whether it is stuck.
                    if let Ok(Some(checkpoint)) = load_checkpoint(&db, name).await {
                        let failure = load_failure(&db, name)
                            .await
                            .ok()
                            .flatten()
                            .filter(|failure| failure.position >= checkpoint.position)
                            .map(|failure| failure.error);
                        progress.send_if_modified(|seen| {
                            let changed =
                                checkpoint.position > seen.position || failure != seen.failure;
                            if changed {
                                seen.position = seen.position.max(checkpoint.position);
                                seen.failure = failure;
                            }
                            changed
                        });
                    }
                    let _ = tokio::time::timeout(STANDBY_POLL, wake.notified()).await;
                }
                Err(error) => {
                    tracing::warn!(projector = name, %error, "lost the projector lock session");
                    break;
                }
            }
        }
        if session.ping().await.is_err() {
            continue;
        }
        tracing::info!(projector = name, "this node now runs the projector");
        let mut position = match prepare(&db, projector.as_ref()).await {
            Ok(position) => position,
            Err(error) => {
                tracing::error!(projector = name, %error, "cannot load checkpoint");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        progress.send_modify(|seen| seen.position = position);
        let mut health = Health::new(&db, name, &progress);
        loop {
            match run_batch(&db, projector.as_ref(), position, BATCH).await {
                Ok(Some(next)) => {
                    position = next;
                    health.went_on(position).await;
                    // Standbys on other nodes wait on this checkpoint; tell them.
                    db.announcer.progressed(name);
                    continue;
                }
                Ok(None) => {
                    if health.failed() {
                        health.went_on(position).await;
                    }
                }
                Err(error) => {
                    let pause = health.stumbled(position, &error).await;
                    tokio::time::sleep(pause).await;
                }
            }
            // Still the owner? A dead lock session means another node may own it now.
            if session.ping().await.is_err() {
                tracing::warn!(projector = name, "lock session lost; standing by");
                break;
            }
            let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
        }
    }
}

async fn run(
    db: Db,
    projector: Arc<dyn Projector>,
    progress: watch::Sender<Progress>,
    wake: Arc<Notify>,
) {
    if db.backend == crate::Backend::Postgres {
        return run_shared(db, projector, progress, wake).await;
    }
    let name = projector.name();
    let mut position = loop {
        match prepare(&db, projector.as_ref()).await {
            Ok(position) => break position,
            Err(error) => {
                tracing::error!(projector = name, %error, "cannot load checkpoint");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    };
    progress.send_modify(|seen| seen.position = position);
    let mut health = Health::new(&db, name, &progress);
    loop {
        match run_batch(&db, projector.as_ref(), position, BATCH).await {
            Ok(Some(next)) => {
                position = next;
                health.went_on(position).await;
            }
            Ok(None) => {
                if health.failed() {
                    health.went_on(position).await;
                }
                let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            }
            Err(error) => {
                let pause = health.stumbled(position, &error).await;
                tokio::time::sleep(pause).await;
            }
        }
    }
}
