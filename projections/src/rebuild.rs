//! Rebuilding a read model beside the one being served.
//!
//! A rebuild replays the whole log into shadow copies of a projector's tables while
//! servers keep answering from, and their runner keeps writing, the live ones. Once the
//! shadow has nearly caught up, one short transaction locks the live tables, applies
//! the last events to the shadow and puts it in their place with the checkpoint it
//! reached: a query sees the old tables or the new, never a mix, and the new ones hold
//! at least everything the old ones did. The live runner may then apply again events
//! the shadow already holds; projectors are idempotent, so that changes nothing, and a
//! rebuild sends nothing to anyone: no notification, live event or count is re-sent.
//!
//! On PostgreSQL the shadow is a schema of its own (`parley_rebuild_NAME`) holding
//! copies of the tables with the same columns, constraints and index names, found
//! before the live schema on the rebuild session's `search_path`; the switch moves the
//! live tables out to a schema that is then dropped, and the shadow ones in. One
//! rebuild per projector runs at a time across nodes, under an advisory lock.
//!
//! On SQLite the shadow is a database file beside the live one (`FILE.rebuild-NAME`)
//! opened as `main` with the live database attached, so the projector's unqualified
//! table names write the shadow; the file is locked exclusively for as long as the
//! rebuild runs. The switch copies the shadow tables into the live ones in one write
//! transaction (SQLite has a single writer: appends wait for it).
//!
//! Either way the shadow has only its primary keys and the secondary indexes and
//! unique constraints the projector's writes look rows up by while the log is
//! replayed: on PostgreSQL the others are built (and checked) in one pass each before
//! the switch, on SQLite they are not needed at all (the switch copies rows
//! into the live tables, whose indexes take them in).
//!
//! Either way the shadow carries its own checkpoint, committed with its rows, so an
//! interrupted rebuild resumes where it stopped; [`discard`] drops it instead.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions as _, Connection as _, Executor as _, Row};

use crate::projector::{self, Projector};
use crate::{Backend, Db, ProjectionError};
use futures::{StreamExt as _, TryStreamExt as _};
use parley_store::log::{self, AbortOnDrop, LogPosition, StoredEvent};

/// Events read and applied per shadow transaction.
pub const BATCH: i64 = 20_000;
/// How often the live report row (`projection_rebuilds`) is refreshed.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often the caller hears of the progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Batches the reader may run ahead of the slowest shadow.
const READ_AHEAD: usize = 2;
/// How long the switch waits for the live tables before giving up (and trying again
/// on the next run): queries queue behind it meanwhile, so it must not wait long.
const SWITCH_LOCK_TIMEOUT: &str = "10s";

/// How far a rebuild has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events applied to the shadow so far, counting those of an earlier run it resumed.
    pub applied: u64,
    /// Events in the log when the rebuild started; it may end past it.
    pub total: u64,
    pub position: LogPosition,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub applied: u64,
    /// The checkpoint the rebuilt tables went live with.
    pub position: LogPosition,
    /// Whether it carried on from an interrupted rebuild.
    pub resumed: bool,
}

/// Rebuilds `projector`'s tables beside the live ones and switches them in once caught
/// up, calling `progress` after every batch.
pub async fn rebuild(
    db: &Db,
    projector: Arc<dyn Projector>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Rebuilt, ProjectionError> {
    rebuild_in_batches(db, projector, BATCH, progress).await
}

/// [`rebuild`], reading and applying `batch` events per shadow transaction.
pub async fn rebuild_in_batches(
    db: &Db,
    projector: Arc<dyn Projector>,
    batch: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Rebuilt, ProjectionError> {
    let mut done = rebuild_together(db, &[projector], batch, progress).await?;
    done.pop()
        .ok_or_else(|| ProjectionError::Rebuild("nothing was rebuilt".to_owned()))
}

/// Rebuilds several projectors in one pass over the log: each batch is read (and its
/// events decoded) once and applied to every shadow, each in a transaction of its own
/// on its own connection and task, concurrently. Each projector is switched in on its
/// own once the pass reaches the head. Returns what each did, in the order given.
pub async fn rebuild_together(
    db: &Db,
    projectors: &[Arc<dyn Projector>],
    batch: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<Rebuilt>, ProjectionError> {
    let mut shadows = Vec::with_capacity(projectors.len());
    for projector in projectors {
        match Shadow::open(db, projector.as_ref()).await {
            Ok(mut shadow) => {
                shadow.batch = batch.max(1);
                shadows.push(shadow);
            }
            Err(error) => {
                for shadow in shadows {
                    shadow.close(false).await;
                }
                return Err(error);
            }
        }
    }
    let result = run_together(db, projectors, &mut shadows, batch.max(1), progress).await;
    for mut shadow in shadows {
        let switched = shadow.switched;
        if switched {
            shadow.drop_leftovers().await;
        }
        // An interrupted rebuild keeps its shadow, to resume.
        shadow.close(switched).await;
    }
    result
}

async fn run_together(
    db: &Db,
    projectors: &[Arc<dyn Projector>],
    shadows: &mut Vec<Shadow>,
    batch: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<Rebuilt>, ProjectionError> {
    let Some(from) = shadows.iter().map(|shadow| shadow.position).min() else {
        return Ok(Vec::new());
    };
    let total = log::count_after(db, LogPosition::START).await?;
    let before = total.saturating_sub(log::count_after(db, from).await?);

    // One reader, on a task (and so a core) of its own, reads and decodes the log
    // ahead; every shadow applies the batches at its own pace. In lock step, each
    // batch waited for the slowest read model and the reader waited for all of them.
    let mut feeds = Vec::with_capacity(shadows.len());
    let mut receivers = Vec::with_capacity(shadows.len());
    for _ in shadows.iter() {
        let (feed, receiver) = tokio::sync::mpsc::channel::<Arc<Vec<StoredEvent>>>(READ_AHEAD);
        feeds.push(feed);
        receivers.push(receiver);
    }
    let mut reader = AbortOnDrop(tokio::spawn(read_ahead(db.clone(), from, batch, feeds)));

    let reached: Arc<Vec<Mutex<(u64, LogPosition)>>> = Arc::new(
        shadows
            .iter()
            .map(|shadow| Mutex::new((before, shadow.position.max(from))))
            .collect(),
    );
    let started: Vec<String> = shadows.iter().map(|s| s.started_at.clone()).collect();
    // Each shadow on a task of its own: on one task, every shadow's share of the work
    // in Parley (folding batches, hashing the audit chain, binding rows) took turns on
    // one thread, and the slowest read model waited for all of them.
    let mut appliers: Vec<AbortOnDrop<(Shadow, Result<(), ProjectionError>)>> = shadows
        .drain(..)
        .zip(projectors)
        .zip(receivers)
        .enumerate()
        .map(|(index, ((mut shadow, projector), mut receiver))| {
            let (db, projector, reached) =
                (db.clone(), Arc::clone(projector), Arc::clone(&reached));
            AbortOnDrop(tokio::spawn(async move {
                let mut applied = Ok(());
                // Where the shadow's time went: waiting for the log, or applying.
                let (mut waited, mut busy) = (Duration::ZERO, Duration::ZERO);
                let mut since = Instant::now();
                while let Some(events) = receiver.recv().await {
                    waited += since.elapsed();
                    since = Instant::now();
                    applied = shadow.apply_batch(&db, projector.as_ref(), &events).await;
                    busy += since.elapsed();
                    since = Instant::now();
                    if applied.is_err() {
                        break;
                    }
                    if let (Some(last), Some(Ok(mut reached))) =
                        (events.last(), reached.get(index).map(Mutex::lock))
                    {
                        *reached = (reached.0 + events.len() as u64, last.position);
                    }
                }
                tracing::debug!(
                    projector = projector.name(),
                    applying_s = busy.as_secs_f64(),
                    waiting_s = waited.as_secs_f64(),
                    "replay done"
                );
                (shadow, applied)
            }))
        })
        .collect();
    let appliers_done = async {
        let mut first_error = Ok(());
        for applier in &mut appliers {
            match (&mut applier.0).await {
                Ok((shadow, applied)) => {
                    shadows.push(shadow);
                    if first_error.is_ok() {
                        first_error = applied;
                    }
                }
                Err(error) => {
                    if first_error.is_ok() {
                        first_error = Err(ProjectionError::Rebuild(format!(
                            "applying a batch: {error}"
                        )));
                    }
                }
            }
        }
        first_error
    };
    let slowest = || {
        reached
            .iter()
            .filter_map(|reached| reached.lock().ok().map(|reached| *reached))
            .min()
            .unwrap_or((before, from))
    };
    let report = |(applied, position): (u64, LogPosition)| Progress {
        applied,
        total: total.max(applied),
        position,
    };
    // Status and metrics read each shadow's own progress from its report row.
    let record = || async {
        for ((started_at, projector), reached) in started.iter().zip(projectors).zip(reached.iter())
        {
            let reached = reached
                .lock()
                .map(|reached| *reached)
                .unwrap_or((before, from));
            Shadow::report(db, projector.as_ref(), started_at, report(reached)).await?;
        }
        Ok::<_, ProjectionError>(())
    };
    // The appliers are waited on only between progress writes, never during one: a
    // write cut off mid-statement could land after the final one below, on its
    // connection's next use, and put the recorded progress back.
    let applied = {
        let mut appliers_done = std::pin::pin!(appliers_done);
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        let mut recorded: Option<Instant> = None;
        loop {
            tokio::select! {
                applied = &mut appliers_done => break applied,
                _ = ticks.tick() => {}
            }
            progress(report(slowest()));
            if recorded.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                record().await?;
                recorded = Some(Instant::now());
            }
        }
    };
    // Where each shadow got, also when one failed: a resumed rebuild starts there.
    let recorded = record().await;
    applied?;
    recorded?;
    // The appliers end when the reader does, whether it reached the head or failed.
    let read = (&mut reader.0)
        .await
        .map_err(|error| ProjectionError::Rebuild(format!("reading the log: {error}")))??;
    let applied = before + read;
    progress(report((applied, slowest().1)));

    // Each on its own connection, so at once: one build at a time left a core idle.
    futures::future::try_join_all(shadows.iter_mut().map(|shadow| shadow.build_indexes(db)))
        .await?;
    let mut done = Vec::with_capacity(shadows.len());
    for (shadow, projector) in shadows.iter_mut().zip(projectors) {
        let (position, last) = shadow.switch(db, projector.as_ref()).await?;
        done.push(Rebuilt {
            applied: applied + last,
            position,
            resumed: shadow.resumed,
        });
    }
    Ok(done)
}

/// Reads the log from `from` in batches of `batch` events until a batch comes back
/// short (the rest is applied under the switch's lock), handing each to every feed.
/// Returns how many events it read.
async fn read_ahead(
    db: Db,
    from: LogPosition,
    batch: i64,
    feeds: Vec<tokio::sync::mpsc::Sender<Arc<Vec<StoredEvent>>>>,
) -> Result<u64, ProjectionError> {
    let mut count = 0;
    let mut batches = std::pin::pin!(log::batches(&db, from, batch));
    // Batches handed out, freed here once every shadow is done with them. Freeing a
    // batch's events fell to the last shadow to finish with it, the slowest, and was an
    // eighth of its work in Parley.
    let mut handed_out: std::collections::VecDeque<Arc<Vec<StoredEvent>>> =
        std::collections::VecDeque::new();
    // Where the reader's time went: reading, or waiting for a shadow to take a batch.
    let (mut reading, mut handing) = (Duration::ZERO, Duration::ZERO);
    let mut since = Instant::now();
    while let Some(events) = batches.try_next().await? {
        reading += since.elapsed();
        since = Instant::now();
        count += events.len() as u64;
        // Each event decoded here, on the reader's task, while the shadows apply the
        // batch before: otherwise the first shadow to look at an event decodes it on
        // its own time, most often the slowest one's (messages). An event that does not
        // decode is left for the projector reading it to report.
        for event in &events {
            let _ = event.event();
        }
        let events = Arc::new(events);
        for feed in &feeds {
            if feed.send(Arc::clone(&events)).await.is_err() {
                // That shadow failed; its error is the one reported.
                return Ok(count);
            }
        }
        handing += since.elapsed();
        since = Instant::now();
        handed_out.push_back(events);
        while handed_out
            .front()
            .is_some_and(|events| Arc::strong_count(events) == 1)
        {
            handed_out.pop_front();
        }
    }
    tracing::debug!(
        reading_s = reading.as_secs_f64(),
        handing_out_s = handing.as_secs_f64(),
        "log read"
    );
    Ok(count)
}

/// Drops an interrupted rebuild of `projector`: its shadow tables and its report row.
/// Returns whether there was one.
pub async fn discard(db: &Db, projector: &dyn Projector) -> Result<bool, ProjectionError> {
    let name = projector.name();
    let mut shadow = Shadow::claim(db, name).await?;
    let existed = shadow.stored_state().await?.is_some();
    shadow.drop_leftovers().await;
    shadow.close(true).await;
    let reported = sqlx::query("DELETE FROM projection_rebuilds WHERE name = $1")
        .bind(name)
        .execute(&db.write)
        .await?
        .rows_affected();
    Ok(existed || reported > 0)
}

/// A rebuild in progress, as its report row tells.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub version: i64,
    /// Cursor of the last event the shadow applied.
    pub position: String,
    pub applied: u64,
    pub total: u64,
    pub started_at: String,
    /// When the rebuild last reported; a rebuild that stopped long ago was interrupted
    /// (run it again to resume, or discard it).
    pub updated_at: String,
}

/// The report row of `name`'s rebuild, if one is running or was interrupted.
pub async fn report(db: &Db, name: &str) -> Result<Option<Report>, ProjectionError> {
    let row = sqlx::query(
        "SELECT version, txid, position, applied, total, started_at, updated_at \
         FROM projection_rebuilds WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&db.read)
    .await?;
    row.map(|row| {
        Ok(Report {
            version: row.try_get(0)?,
            position: LogPosition {
                tx: row.try_get(1)?,
                pos: row.try_get(2)?,
            }
            .to_cursor(),
            applied: row.try_get::<i64, _>(3)?.max(0) as u64,
            total: row.try_get::<i64, _>(4)?.max(0) as u64,
            started_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
        })
    })
    .transpose()
}

/// Each rebuild's name and share done (0 to 1), running or interrupted.
pub async fn shares_done(db: &Db) -> Result<Vec<(String, f64)>, ProjectionError> {
    let rows = sqlx::query("SELECT name, applied, total FROM projection_rebuilds")
        .fetch_all(&db.read)
        .await?;
    rows.iter()
        .map(|row| {
            let (applied, total): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
            let share = if total > 0 {
                (applied as f64 / total as f64).min(1.0)
            } else {
                0.0
            };
            Ok((row.try_get(0)?, share))
        })
        .collect()
}

enum Place {
    Postgres {
        /// The schema the live tables are in.
        live: String,
        shadow: String,
        /// Where the live tables go at the switch, to be dropped after it.
        retired: String,
    },
    Sqlite {
        file: PathBuf,
    },
}

/// A projector's shadow tables, on a connection of their own.
struct Shadow {
    name: &'static str,
    /// On PostgreSQL also the session holding the rebuild's advisory lock; on SQLite
    /// the connection holding the shadow file's exclusive lock.
    conn: AnyConnection,
    /// On PostgreSQL, for a projector that [loads](Projector::loads): a second session,
    /// typed, in the shadow's schema, that applies its batches with their checkpoints.
    loader: Option<sqlx::PgConnection>,
    place: Place,
    position: LogPosition,
    resumed: bool,
    started_at: String,
    batch: i64,
    /// Whether its tables went live (and so what is left of it is to be dropped).
    switched: bool,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Shadow {
    /// Takes the rebuild's lock and a connection for its shadow, without touching it.
    async fn claim(db: &Db, name: &'static str) -> Result<Self, ProjectionError> {
        let started_at = crate::format_time(time::OffsetDateTime::now_utc());
        match db.backend {
            Backend::Postgres => {
                let mut conn = db.write.connect_options().connect().await?;
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(claim_key(name))
                    .fetch_one(&mut conn)
                    .await?;
                if !locked {
                    return Err(ProjectionError::RebuildRunning(name));
                }
                let live: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&mut conn)
                    .await?;
                Ok(Self {
                    name,
                    conn,
                    loader: None,
                    place: Place::Postgres {
                        live,
                        shadow: format!("parley_rebuild_{name}"),
                        retired: format!("parley_retired_{name}"),
                    },
                    position: LogPosition::START,
                    resumed: false,
                    started_at,
                    batch: BATCH,
                    switched: false,
                })
            }
            Backend::Sqlite => {
                let live: String =
                    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_one(&db.read)
                        .await?;
                if live.is_empty() {
                    return Err(ProjectionError::RebuildInMemory);
                }
                let file = PathBuf::from(format!("{live}.rebuild-{name}"));
                let options =
                    AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", file.display()))?
                        .disable_statement_logging();
                // The exclusive lock is what keeps a second rebuild of the same
                // projector out: it is taken by the first write and held until the
                // connection closes, and another process asking for it fails at once,
                // as soon as it opens the file or sets it up.
                let claimed = async {
                    let mut conn = options.connect().await?;
                    conn.execute(
                        "PRAGMA busy_timeout = 0; \
                         PRAGMA main.locking_mode = EXCLUSIVE; \
                         PRAGMA main.journal_mode = WAL; \
                         PRAGMA main.synchronous = NORMAL;",
                    )
                    .await?;
                    conn.execute("PRAGMA main.user_version = 1").await?;
                    Ok::<_, sqlx::Error>(conn)
                }
                .await;
                let mut conn = match claimed {
                    Ok(conn) => conn,
                    Err(error) if is_busy(&error) => {
                        return Err(ProjectionError::RebuildRunning(name))
                    }
                    Err(error) => return Err(error.into()),
                };
                // The live database's writer may hold it for a moment at any time.
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                sqlx::query("ATTACH DATABASE $1 AS live")
                    .bind(&live)
                    .execute(&mut conn)
                    .await?;
                Ok(Self {
                    name,
                    conn,
                    loader: None,
                    place: Place::Sqlite { file },
                    position: LogPosition::START,
                    resumed: false,
                    started_at,
                    batch: BATCH,
                    switched: false,
                })
            }
        }
    }

    /// Claims the rebuild and resumes its shadow, or makes a fresh one.
    async fn open(db: &Db, projector: &dyn Projector) -> Result<Self, ProjectionError> {
        let mut shadow = Self::claim(db, projector.name()).await?;
        if let Place::Postgres { retired, .. } = &shadow.place {
            // Left by a switch that committed but did not get to its clean-up.
            let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quoted(retired));
            shadow.conn.execute(sql.as_str()).await?;
        }
        match shadow.stored_state().await? {
            Some((version, position)) if version == projector.version() => {
                shadow.position = position;
                shadow.resumed = position > LogPosition::START;
            }
            _ => shadow.create(db, projector).await?,
        }
        if let Place::Postgres {
            live, shadow: s, ..
        } = &shadow.place
        {
            let sql = format!("SET search_path TO {}, {}", quoted(s), quoted(live));
            shadow.conn.execute(sql.as_str()).await?;
            if projector.loads() {
                let options =
                    sqlx::postgres::PgConnectOptions::try_from(&*db.write.connect_options())?
                        .disable_statement_logging();
                let mut loader = sqlx::PgConnection::connect_with(&options).await?;
                loader.execute(sql.as_str()).await?;
                shadow.loader = Some(loader);
            }
        }
        Ok(shadow)
    }

    /// The shadow's version and checkpoint, if a complete shadow exists.
    async fn stored_state(&mut self) -> Result<Option<(i64, LogPosition)>, ProjectionError> {
        let (exists, table) = match &self.place {
            Place::Postgres { shadow, .. } => (
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema = $1 AND table_name = 'rebuild_state'",
                )
                .bind(shadow)
                .fetch_one(&mut self.conn)
                .await?,
                format!("{}.rebuild_state", quoted(shadow)),
            ),
            Place::Sqlite { .. } => (
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM main.sqlite_master WHERE name = 'rebuild_state'",
                )
                .fetch_one(&mut self.conn)
                .await?,
                "main.rebuild_state".to_owned(),
            ),
        };
        if exists == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT version, txid, position FROM {table}"))
            .fetch_optional(&mut self.conn)
            .await?;
        row.map(|row| {
            Ok((
                row.try_get(0)?,
                LogPosition {
                    tx: row.try_get(1)?,
                    pos: row.try_get(2)?,
                },
            ))
        })
        .transpose()
    }

    /// Makes empty shadow tables shaped like the live ones, and the shadow's checkpoint
    /// last, all in one transaction: a shadow either exists whole or not at all.
    async fn create(&mut self, db: &Db, projector: &dyn Projector) -> Result<(), ProjectionError> {
        let tables = projector::all_tables(projector, db.backend);
        self.position = LogPosition::START;
        self.resumed = false;
        match &self.place {
            Place::Postgres { live, shadow, .. } => {
                let (live, shadow) = (live.clone(), shadow.clone());
                let mut tx = self.conn.begin().await?;
                // Definitions print fully qualified names only when nothing is on the
                // search path, which the index copies below rely on.
                tx.execute("SET LOCAL search_path TO ''").await?;
                let sql = format!(
                    "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}",
                    s = quoted(&shadow)
                );
                tx.execute(sql.as_str()).await?;
                let sql = format!(
                    "CREATE TABLE {}.rebuild_indexes (definition text NOT NULL)",
                    quoted(&shadow)
                );
                tx.execute(sql.as_str()).await?;
                for table in &tables {
                    let deferred = copy_postgres_table(
                        &mut tx,
                        &live,
                        &shadow,
                        table,
                        projector.write_indexes(),
                    )
                    .await?;
                    let sql = format!(
                        "INSERT INTO {}.rebuild_indexes (definition) VALUES ($1)",
                        quoted(&shadow)
                    );
                    for definition in deferred {
                        sqlx::query(&sql).bind(definition).execute(&mut *tx).await?;
                    }
                }
                let sql = format!(
                    "CREATE TABLE {}.rebuild_state (version bigint NOT NULL, \
                     txid bigint NOT NULL, position bigint NOT NULL)",
                    quoted(&shadow)
                );
                tx.execute(sql.as_str()).await?;
                let sql = format!(
                    "INSERT INTO {}.rebuild_state (version, txid, position) VALUES ($1, 0, 0)",
                    quoted(&shadow)
                );
                sqlx::query(&sql)
                    .bind(projector.version())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Place::Sqlite { .. } => {
                drop_sqlite_shadow(&mut self.conn).await?;
                let mut tx = self.conn.begin().await?;
                let sql = format!(
                    "SELECT type, name, sql FROM live.sqlite_master WHERE tbl_name IN ({}) \
                     AND sql IS NOT NULL ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END",
                    crate::placeholders(1, tables.len())
                );
                let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
                for table in &tables {
                    query = query.bind(*table);
                }
                // Unqualified, each definition makes its table or index in `main`: the
                // shadow file. The switch copies rows into the live tables, whose own
                // indexes take them in, so the shadow needs only the indexes the
                // projector's writes use.
                for (kind, name, definition) in query.fetch_all(&mut *tx).await? {
                    if kind == "index" && !projector.write_indexes().contains(&name.as_str()) {
                        continue;
                    }
                    tx.execute(definition.as_str()).await?;
                }
                tx.execute(
                    "CREATE TABLE main.rebuild_state (version BIGINT NOT NULL, \
                     txid BIGINT NOT NULL, position BIGINT NOT NULL)",
                )
                .await?;
                sqlx::query(
                    "INSERT INTO main.rebuild_state (version, txid, position) VALUES ($1, 0, 0)",
                )
                .bind(projector.version())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Applies the events of `events` it has not applied yet, in a transaction of its
    /// own with its checkpoint.
    async fn apply_batch(
        &mut self,
        db: &Db,
        projector: &dyn Projector,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let unseen: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| event.position > self.position)
            .collect();
        if unseen.is_empty() {
            return Ok(());
        }
        // As for the live runner: the events are durable, the shadow is a function of
        // them, and its checkpoint commits with its rows. Said with the BEGIN, in the
        // same round trip.
        const BEGIN_ASYNC: &str = "BEGIN; SET LOCAL synchronous_commit = off";
        if let Some(loader) = &mut self.loader {
            let mut tx = loader.begin_with(BEGIN_ASYNC).await?;
            projector.load_all(&mut tx, &unseen).await?;
            self.position = save_position(&mut *tx, &unseen).await?;
            tx.commit().await?;
            return Ok(());
        }
        let mut tx = match db.backend {
            Backend::Postgres => self.conn.begin_with(BEGIN_ASYNC).await?,
            Backend::Sqlite => self.conn.begin().await?,
        };
        self.position = apply(&mut tx, projector, &unseen).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Builds the indexes and constraints the replay went without (see
    /// [`Projector::write_indexes`]), each in a transaction of its own that also strikes
    /// it off the list, so an interrupted rebuild builds only those still missing.
    async fn build_indexes(&mut self, db: &Db) -> Result<(), ProjectionError> {
        let Place::Postgres { shadow, .. } = &self.place else {
            return Ok(());
        };
        let list = format!("{}.rebuild_indexes", quoted(shadow));
        // A shadow begun by an earlier release has every index already.
        let listed: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&list)
            .fetch_one(&mut self.conn)
            .await?;
        if !listed {
            return Ok(());
        }
        let pending: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT definition FROM {list} ORDER BY definition"
        ))
        .fetch_all(&mut self.conn)
        .await?;
        // Index builds at once, each on a connection of its own: PostgreSQL builds an
        // index on one core, and one after another the messages shadow's (its search
        // index, a unique key, an author index) were the tail of every rebuild. Then the
        // constraints, which take the indexes built for them (or build their own, for a
        // shadow begun by an earlier release).
        let (builds, constraints): (Vec<String>, Vec<String>) = pending
            .into_iter()
            .partition(|definition| definition.starts_with("CREATE "));
        let at_once = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let build = |definition: String| {
            let (options, list) = (db.write.connect_options(), list.clone());
            async move {
                // Not from the pool: a node rebuilding at start is serving from it.
                let mut conn = options.connect().await?;
                run_deferred(&mut conn, &list, &definition).await?;
                conn.close().await?;
                Ok::<_, ProjectionError>(())
            }
        };
        futures::stream::iter(builds.into_iter().map(build))
            .buffer_unordered(at_once)
            .try_collect::<()>()
            .await?;
        for definition in &constraints {
            run_deferred(&mut self.conn, &list, definition).await?;
        }
        Ok(())
    }

    /// Tells status reports and metrics how far the rebuild is.
    async fn report(
        db: &Db,
        projector: &dyn Projector,
        started_at: &str,
        progress: Progress,
    ) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO projection_rebuilds \
             (name, version, txid, position, applied, total, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
                 txid = excluded.txid, position = excluded.position, \
                 applied = excluded.applied, total = excluded.total, \
                 updated_at = excluded.updated_at",
        )
        .bind(projector.name())
        .bind(projector.version())
        .bind(progress.position.tx)
        .bind(progress.position.pos)
        .bind(progress.applied as i64)
        .bind(progress.total as i64)
        .bind(started_at)
        .bind(crate::format_time(time::OffsetDateTime::now_utc()))
        .execute(&db.write)
        .await?;
        Ok(())
    }

    /// Locks the live tables, applies what the shadow still lacks and puts it in their
    /// place with its checkpoint, in one transaction. Returns that checkpoint and how
    /// many events the last step applied.
    async fn switch(
        &mut self,
        db: &Db,
        projector: &dyn Projector,
    ) -> Result<(LogPosition, u64), ProjectionError> {
        let tables = projector::all_tables(projector, db.backend);
        let name = self.name;
        match &self.place {
            Place::Postgres {
                live,
                shadow,
                retired,
            } => {
                let (live, shadow, retired) = (quoted(live), quoted(shadow), quoted(retired));
                let mut tx = self.conn.begin().await?;
                tx.execute(format!("SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT}'").as_str())
                    .await?;
                // Waits for the runner's batch in flight on these tables, and holds the
                // next one and every query on them until the switch commits; they
                // then find the new tables by name.
                let list: Vec<String> = tables
                    .iter()
                    .map(|table| format!("{live}.{}", quoted(table)))
                    .collect();
                let sql = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", list.join(", "));
                tx.execute(sql.as_str()).await?;
                // Nothing can move the live checkpoint now, and every event it covers
                // is readable, so the shadow ends at or past it.
                let (position, last) = catch_up(&mut tx, db, projector, self.position).await?;
                tx.execute(format!("CREATE SCHEMA {retired}").as_str())
                    .await?;
                for table in &tables {
                    let table = quoted(table);
                    tx.execute(format!("ALTER TABLE {live}.{table} SET SCHEMA {retired}").as_str())
                        .await?;
                    tx.execute(format!("ALTER TABLE {shadow}.{table} SET SCHEMA {live}").as_str())
                        .await?;
                }
                go_live(
                    &mut tx,
                    &format!("{live}."),
                    name,
                    projector.version(),
                    position,
                )
                .await?;
                // Whatever is left of the shadow can no longer be resumed.
                tx.execute(format!("DROP TABLE {shadow}.rebuild_state").as_str())
                    .await?;
                tx.commit().await?;
                self.switched = true;
                self.position = position;
                Ok((position, last))
            }
            Place::Sqlite { .. } => {
                // Takes the write lock of both files at once: no append, checkpoint or
                // other write can happen on the live database until the commit.
                self.conn.execute("BEGIN IMMEDIATE").await?;
                match self.switch_sqlite(db, projector).await {
                    Ok(done) => {
                        self.conn.execute("COMMIT").await?;
                        self.switched = true;
                        self.position = done.0;
                        Ok(done)
                    }
                    Err(error) => {
                        if let Err(rollback) = self.conn.execute("ROLLBACK").await {
                            tracing::warn!(projector = name, error = %rollback, "cannot roll the switch back");
                        }
                        Err(error)
                    }
                }
            }
        }
    }

    async fn switch_sqlite(
        &mut self,
        db: &Db,
        projector: &dyn Projector,
    ) -> Result<(LogPosition, u64), ProjectionError> {
        let (position, last) = catch_up(&mut self.conn, db, projector, self.position).await?;
        // Every table of the shadow, the full-text index's own included: copying
        // those keeps the index as built rather than tokenising every message again.
        let copied: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' \
             AND name NOT IN ('rebuild_state', 'rebuild_indexes') AND name NOT LIKE 'sqlite_%' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'",
        )
        .fetch_all(&mut self.conn)
        .await?;
        for table in &copied {
            let table = quoted(table);
            self.conn
                .execute(format!("DELETE FROM live.{table}").as_str())
                .await?;
            self.conn
                .execute(format!("INSERT INTO live.{table} SELECT * FROM main.{table}").as_str())
                .await?;
        }
        // Whatever is left of the shadow can no longer be resumed.
        self.conn.execute("DELETE FROM main.rebuild_state").await?;
        go_live(
            &mut self.conn,
            "live.",
            self.name,
            projector.version(),
            position,
        )
        .await?;
        Ok((position, last))
    }

    /// Removes the shadow (after a switch, or to discard it). On SQLite the file goes
    /// when the connection closes.
    async fn drop_leftovers(&mut self) {
        let Place::Postgres {
            shadow, retired, ..
        } = &self.place
        else {
            return;
        };
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE",
            quoted(retired),
            quoted(shadow)
        );
        if let Err(error) = self.conn.execute(sql.as_str()).await {
            tracing::warn!(projector = self.name, %error, "cannot drop the rebuild's shadow tables");
        }
    }

    /// Ends the rebuild's session, releasing its lock; `remove` deletes a SQLite shadow.
    async fn close(mut self, remove: bool) {
        let file = match &self.place {
            Place::Sqlite { file } => Some(file.clone()),
            Place::Postgres { .. } => None,
        };
        if file.is_none() {
            // Released now, not once the server notices the session gone: a rebuild
            // started right after this one returned must not find its claim still held.
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(claim_key(self.name))
                .execute(&mut self.conn)
                .await;
            if let Err(error) = unlocked {
                tracing::warn!(projector = self.name, %error, "cannot release the rebuild's claim");
            }
        }
        if let Some(loader) = self.loader {
            if let Err(error) = loader.close().await {
                tracing::warn!(projector = self.name, %error, "cannot close the rebuild's loader");
            }
        }
        if let Err(error) = self.conn.close().await {
            tracing::warn!(projector = self.name, %error, "cannot close the rebuild's session");
        }
        if let (true, Some(file)) = (remove, file) {
            for suffix in ["", "-wal", "-shm"] {
                let path = PathBuf::from(format!("{}{suffix}", file.display()));
                if let Err(error) = std::fs::remove_file(&path) {
                    if error.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), %error, "cannot remove the rebuild's shadow file");
                    }
                }
            }
        }
    }
}

/// The advisory lock that claims `name`'s rebuild on PostgreSQL, the same on every node.
fn claim_key(name: &str) -> i64 {
    projector::lock_key(&format!("rebuild:{name}"))
}

/// Applies `events` to the shadow and moves its checkpoint to the last, in the
/// caller's transaction; returns that position.
async fn apply(
    conn: &mut AnyConnection,
    projector: &dyn Projector,
    events: &[&StoredEvent],
) -> Result<LogPosition, ProjectionError> {
    projector.apply_all(conn, events).await?;
    save_position(conn, events).await
}

/// Moves the shadow's checkpoint to the last of `events`, in the caller's transaction
/// (on either kind of session); returns that position.
async fn save_position<'c, DB>(
    conn: impl sqlx::Executor<'c, Database = DB>,
    events: &[&StoredEvent],
) -> Result<LogPosition, ProjectionError>
where
    DB: sqlx::Database,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let Some(last) = events.last().map(|event| event.position) else {
        return Err(ProjectionError::Rebuild("an empty batch".to_owned()));
    };
    sqlx::query::<DB>("UPDATE rebuild_state SET txid = $1, position = $2")
        .bind(last.tx)
        .bind(last.pos)
        .execute(conn)
        .await?;
    Ok(last)
}

/// Applies everything readable after `from`; returns where it ended and how many
/// events that was.
async fn catch_up(
    conn: &mut AnyConnection,
    db: &Db,
    projector: &dyn Projector,
    from: LogPosition,
) -> Result<(LogPosition, u64), ProjectionError> {
    let (mut position, mut applied) = (from, 0);
    loop {
        let events = log::read_after(db, position, BATCH).await?;
        if events.is_empty() {
            return Ok((position, applied));
        }
        let events: Vec<&StoredEvent> = events.iter().collect();
        position = apply(conn, projector, &events).await?;
        applied += events.len() as u64;
    }
}

/// Gives the projector its new checkpoint and clears what was said about the old
/// tables: a failure mark and the rebuild's report. `schema` qualifies the live tables.
async fn go_live(
    conn: &mut AnyConnection,
    schema: &str,
    name: &str,
    version: i64,
    position: LogPosition,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "INSERT INTO {schema}projection_checkpoints (name, version, txid, position) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
             version = excluded.version, txid = excluded.txid, position = excluded.position"
    ))
    .bind(name)
    .bind(version)
    .bind(position.tx)
    .bind(position.pos)
    .execute(&mut *conn)
    .await?;
    for table in ["projection_failures", "projection_rebuilds"] {
        sqlx::query(&format!("DELETE FROM {schema}{table} WHERE name = $1"))
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Makes `shadow.table` like `live.table`: columns, defaults, generated columns and
/// checks through `LIKE`, then keys, unique constraints and indexes under their live
/// names, so the tables switched in are indistinguishable from those migrations made.
/// Unique constraints and secondary indexes other than `write_indexes` are not made:
/// the statements making them are returned, to be run once the shadow is full.
async fn copy_postgres_table(
    conn: &mut AnyConnection,
    live: &str,
    shadow: &str,
    table: &str,
    write_indexes: &[&str],
) -> Result<Vec<String>, ProjectionError> {
    let (from, to) = (
        format!("{}.{}", quoted(live), quoted(table)),
        format!("{}.{}", quoted(shadow), quoted(table)),
    );
    let sql = format!(
        "CREATE TABLE {to} (LIKE {from} INCLUDING DEFAULTS INCLUDING GENERATED \
         INCLUDING IDENTITY INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)"
    );
    conn.execute(sql.as_str()).await?;
    let constraints = sqlx::query(
        "SELECT conname::text, contype::text, pg_get_constraintdef(oid), \
                COALESCE(pg_get_indexdef(conindid), '') FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname",
    )
    .bind(&from)
    .fetch_all(&mut *conn)
    .await?;
    // With an empty search path the definitions name the table as `schema.table`.
    let printed: String = sqlx::query_scalar("SELECT $1::regclass::text")
        .bind(&from)
        .fetch_one(&mut *conn)
        .await?;
    let on = format!(" ON {printed} ");
    let mut deferred = Vec::new();
    for row in constraints {
        let (name, kind, definition, index): (String, String, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let sql = format!(
            "ALTER TABLE {to} ADD CONSTRAINT {} {definition}",
            quoted(&name)
        );
        // A unique constraint the writes do not conflict on is checked, and its index
        // built, in one pass once the shadow is full: messages' `(conversation_id,
        // seq)`, kept row by row, made a message's insert cost half as much again.
        if kind == "p" || write_indexes.contains(&name.as_str()) {
            conn.execute(sql.as_str()).await?;
        } else if kind == "u"
            && definition.starts_with("UNIQUE (")
            && !definition.contains("DEFERRABLE")
            && index.starts_with("CREATE UNIQUE INDEX ")
            && index.contains(&on)
        {
            // Its index built like any other (beside them, see `build_indexes`), then
            // taken as the constraint, which is a catalogue change.
            deferred.push(index.replacen(&on, &format!(" ON {to} "), 1));
            deferred.push(format!(
                "ALTER TABLE {to} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}",
                name = quoted(&name)
            ));
        } else {
            deferred.push(sql);
        }
    }
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT x.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class x ON x.oid = i.indexrelid \
         WHERE i.indrelid = $1::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
             WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)",
    )
    .bind(&from)
    .fetch_all(&mut *conn)
    .await?;
    for (name, definition) in indexes {
        if !definition.contains(&on) {
            return Err(ProjectionError::Rebuild(format!(
                "cannot copy an index of {table}: {definition}"
            )));
        }
        let definition = definition.replacen(&on, &format!(" ON {to} "), 1);
        if write_indexes.contains(&name.as_str()) {
            conn.execute(definition.as_str()).await?;
        } else {
            deferred.push(definition);
        }
    }
    Ok(deferred)
}

/// Runs one deferred index or constraint definition of a shadow and strikes it from the
/// shadow's list, in one transaction: an interrupted rebuild runs what is left.
async fn run_deferred(
    conn: &mut AnyConnection,
    list: &str,
    definition: &str,
) -> Result<(), ProjectionError> {
    let mut tx = conn.begin().await?;
    tx.execute(definition).await?;
    sqlx::query(&format!("DELETE FROM {list} WHERE definition = $1"))
        .bind(definition)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Empties the shadow file of every table, virtual ones (and so their own tables) first.
async fn drop_sqlite_shadow(conn: &mut AnyConnection) -> Result<(), ProjectionError> {
    for virtual_only in [true, false] {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND (sql LIKE 'CREATE VIRTUAL TABLE%') = $1",
        )
        .bind(virtual_only)
        .fetch_all(&mut *conn)
        .await?;
        for name in names {
            let sql = format!("DROP TABLE IF EXISTS main.{}", quoted(&name));
            conn.execute(sql.as_str()).await?;
        }
    }
    Ok(())
}

fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.message().contains("locked") || e.message().contains("busy"))
}
