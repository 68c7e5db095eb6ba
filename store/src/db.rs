//! The database handle shared by the event store and the read models.
//!
//! SQLite allows one writer at a time, so embedded mode gives writes a single
//! connection (no two in-process writers can ever race for the lock) and reads a small
//! pool of their own; WAL mode lets those readers run beside the writer. PostgreSQL
//! uses one pool for both, plus a typed pool for postgres-es.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, FromRow, PgPool};

use crate::{hash, Announcer, Keyring, MasterKey, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub backend: Backend,
    /// Writes (events, read models, checkpoints). One connection on SQLite.
    pub write: AnyPool,
    /// Reads. On PostgreSQL the same pool as `write`.
    pub read: AnyPool,
    /// Typed PostgreSQL pool for postgres-es; `None` on SQLite.
    pub pg: Option<PgPool>,
    /// Wakes log readers when this process commits events.
    pub announcer: Announcer,
    /// The data keys events' personal content is sealed with ([`crate::keys`]).
    pub keys: std::sync::Arc<Keyring>,
    /// What the SQLite writer runs inside each group's transaction ([`crate::inline`]).
    pub inline: crate::inline::Inline,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON; \
     PRAGMA secure_delete = ON;";

/// Keeps any one transaction from holding back PostgreSQL's global snapshot horizon,
/// which every log tail waits on.
const PG_SESSION: &str = "SET idle_in_transaction_session_timeout = '30s'";

impl Db {
    /// Connects to `url`: `postgres://…` selects PostgreSQL, `sqlite://…` SQLite.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, max_connections).await
        } else {
            Self::connect_sqlite(url, max_connections).await
        }
    }

    /// Opens (creating if needed) the embedded database at `path`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url, 4).await
    }

    async fn connect_sqlite(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = |connections: u32| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(30))
                // An in-process database cannot drop a connection: skip the ping
                // sqlx otherwise sends before every use.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(SQLITE_PRAGMAS).await?;
                        Ok(())
                    })
                })
        };
        let write = pool(1).connect_with(options.clone()).await?;
        // Set WAL once through the writer before readers open the file.
        let read = pool(max_connections.max(1)).connect_with(options).await?;
        Ok(Self {
            backend: Backend::Sqlite,
            write,
            read,
            pg: None,
            announcer: Announcer::default(),
            keys: Default::default(),
            inline: Default::default(),
        })
    }

    async fn connect_postgres(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // The same settings for both pools: the untyped one the read models share with
        // SQLite, and the typed one postgres-es needs.
        let any = postgres_pool::<sqlx::Any>(max_connections)
            .connect_with(AnyConnectOptions::from_str(url)?.disable_statement_logging())
            .await?;
        let pg = postgres_pool::<sqlx::Postgres>(max_connections)
            .connect_with(PgConnectOptions::from_str(url)?.disable_statement_logging())
            .await?;
        Ok(Self {
            backend: Backend::Postgres,
            write: any.clone(),
            read: any,
            pg: Some(pg),
            announcer: Announcer::default(),
            keys: Default::default(),
            inline: Default::default(),
        })
    }

    /// Seals personal content with data keys wrapped by `master` from now on, after
    /// checking that `master` opens the keys already stored. Call after [`Self::migrate`]
    /// and before cloning the handle.
    pub async fn use_master_key(&mut self, master: &MasterKey) -> Result<(), StoreError> {
        let keys = Keyring::new(master);
        keys.check(&self.write).await?;
        self.keys = std::sync::Arc::new(keys);
        Ok(())
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                SQLITE_MIGRATIONS.run(&self.write).await?;
                let hashed = backfill_sqlite(self).await?;
                if hashed > 0 {
                    tracing::info!(
                        events = hashed,
                        "hashed events stored before hashing existed"
                    );
                }
            }
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.write).await?,
        }
        Ok(())
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        if let Some(pg) = &self.pg {
            pg.close().await;
        }
    }
}

/// Pool options for a PostgreSQL pool of either kind: bounded, and every session set up
/// so that no transaction holds the log's horizon back for long.
fn postgres_pool<DB: sqlx::Database>(max_connections: u32) -> sqlx::pool::PoolOptions<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PG_SESSION).await?;
                Ok(())
            })
        })
}

/// Hashes SQLite rows stored before hashing existed (PostgreSQL's migration does its own).
async fn backfill_sqlite(db: &Db) -> Result<u64, StoreError> {
    #[derive(FromRow)]
    struct Row {
        position: i64,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: String,
        metadata: String,
        hash: Option<String>,
    }
    let missing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE hash IS NULL")
        .fetch_one(&db.write)
        .await?;
    if missing == 0 {
        return Ok(0);
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash \
         FROM events ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .fetch_all(&db.write)
    .await?;
    let mut tx = db.write.begin().await?;
    let mut prev: Option<(String, String, [u8; 32])> = None;
    let mut filled = 0;
    for row in rows {
        let start = match &prev {
            Some((t, i, hash)) if *t == row.aggregate_type && *i == row.aggregate_id => *hash,
            _ => hash::ZERO,
        };
        let hash = hash::stream_hash(
            &start,
            &row.aggregate_type,
            &row.aggregate_id,
            row.sequence,
            &row.event_type,
            &row.event_version,
            &row.payload,
            &row.metadata,
        );
        if row.hash.is_none() {
            sqlx::query("UPDATE events SET hash = $1 WHERE position = $2")
                .bind(hash::to_hex(&hash))
                .bind(row.position)
                .execute(&mut *tx)
                .await?;
            filled += 1;
        }
        prev = Some((
            row.aggregate_type,
            row.aggregate_id,
            row.hash.as_deref().and_then(hash::from_hex).unwrap_or(hash),
        ));
    }
    tx.commit().await?;
    Ok(filled)
}

/// A LISTEN session on a connection of its own: a listener holds its connection for
/// good, so it must not come out of the shared pool.
pub async fn listener(pool: &PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    sqlx::postgres::PgListener::connect_with(&own).await
}
