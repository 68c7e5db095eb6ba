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
use sqlx::{AnyPool, ConnectOptions, Executor, PgPool};

use crate::StoreError;

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
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON;";

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
        })
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                SQLITE_MIGRATIONS.run(&self.write).await?;
                let hashed = crate::hash::backfill_sqlite(self).await?;
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

/// A LISTEN session on a connection of its own: a listener holds its connection for
/// good, so it must not come out of the shared pool.
pub async fn listener(pool: &PgPool) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    sqlx::postgres::PgListener::connect_with(&own).await
}
