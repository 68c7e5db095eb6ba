//! The machine's raw write ceiling on the server's own database engine and disk:
//! single-row durable INSERT transactions into a throwaway table shaped like an event
//! row. A send cannot be cheaper than the commit it contains, so throughput over this
//! says how much of the disk the server uses, and latency over it what a send costs
//! beyond its commit.
//!
//! PostgreSQL: `connections` concurrent autocommit INSERTs, at the server's own
//! `fsync`/`synchronous_commit` settings (reported). SQLite: one connection (SQLite has
//! one writer) on a WAL database with `synchronous=FULL`, in a temporary file beside the
//! server's, so on the same disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::report::Figures;
use crate::stats::histogram;

/// Roughly a `MessagePosted` event's payload, so the row costs what an event row does.
fn payload() -> String {
    json!({
        "message_id": uuid::Uuid::now_v7(),
        "conversation_id": uuid::Uuid::now_v7(),
        "author_id": uuid::Uuid::now_v7(),
        "body": "parley-load ceiling row, about as long as a chat message",
        "client_message_id": uuid::Uuid::new_v4(),
        "mentions": [],
        "attachment_ids": [],
        "reply_to": null,
    })
    .to_string()
}

fn metadata() -> String {
    json!({ "user_id": uuid::Uuid::now_v7(), "ip": "127.0.0.1" }).to_string()
}

pub struct Ceiling {
    pub tx_per_s: f64,
    pub commits: Histogram<u64>,
    /// What was measured, for the report's config.
    pub details: Value,
}

impl Ceiling {
    pub fn add_figures(&self, figures: &mut Figures) {
        figures.add("ceiling_tx_per_s", self.tx_per_s, "tx/s");
        figures.add_percentiles("ceiling_commit", &self.commits, None);
    }
}

/// Measures the ceiling of the database at `url` for `secs` seconds.
pub async fn measure(url: &str, connections: usize, secs: u64) -> anyhow::Result<Ceiling> {
    let duration = Duration::from_secs(secs.max(1));
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres(url, connections.max(1), duration).await
    } else if url.starts_with("sqlite:") {
        sqlite(&sqlite_path(url)?, duration).await
    } else {
        bail!("--ceiling-db must be a postgres:// or sqlite:// URL")
    }
}

async fn postgres(url: &str, connections: usize, duration: Duration) -> anyhow::Result<Ceiling> {
    let connections_u32 = u32::try_from(connections).context("too many connections")?;
    let pool = PgPoolOptions::new()
        .max_connections(connections_u32)
        .min_connections(connections_u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .context("connect to --ceiling-db")?;
    let table = format!("parley_load_ceiling_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!(
        "create table {table} (id bigserial primary key, aggregate_type text not null, \
         aggregate_id text not null, sequence bigint not null, event_type text not null, \
         event_version text not null, payload jsonb not null, metadata jsonb not null)"
    ))
    .execute(&pool)
    .await
    .context("create the ceiling table")?;
    let measured = postgres_inserts(&pool, &table, connections, duration).await;
    // Dropped whatever happened, so a failed run leaves nothing behind.
    let dropped = sqlx::query(&format!("drop table if exists {table}"))
        .execute(&pool)
        .await
        .context("drop the ceiling table");
    let (count, elapsed, commits) = measured?;
    dropped?;
    let mut settings = serde_json::Map::new();
    for setting in [
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "server_version",
    ] {
        let value: String = sqlx::query_scalar(&format!("show {setting}"))
            .fetch_one(&pool)
            .await
            .with_context(|| format!("show {setting}"))?;
        settings.insert(setting.to_owned(), Value::String(value));
    }
    pool.close().await;
    Ok(Ceiling {
        tx_per_s: count as f64 / elapsed.as_secs_f64(),
        commits,
        details: json!({
            "backend": "postgres",
            "connections": connections,
            "seconds": elapsed.as_secs_f64(),
            "transactions": count,
            "settings": settings,
        }),
    })
}

/// Runs the inserts; how many, over how long, and each one's latency.
async fn postgres_inserts(
    pool: &sqlx::PgPool,
    table: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let insert = format!(
        "insert into {table} (aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata) values ('Conversation', $1, $2, 'MessagePosted', \
         '1', $3::jsonb, $4::jsonb)"
    );
    // Every connection open before the clock starts: connecting is not committing.
    let start_line = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut connection = pool.acquire().await.context("ceiling connection")?;
        let insert = insert.clone();
        let start_line = start_line.clone();
        workers.push(tokio::spawn(async move {
            let aggregate = uuid::Uuid::now_v7().to_string();
            let mut commits = histogram(3);
            let mut sequence = 0_i64;
            start_line.wait().await;
            let end = Instant::now() + duration;
            while Instant::now() < end {
                sequence += 1;
                let began = Instant::now();
                sqlx::query(&insert)
                    .bind(&aggregate)
                    .bind(sequence)
                    .bind(payload())
                    .bind(metadata())
                    .execute(&mut *connection)
                    .await?;
                commits.saturating_record(micros(began.elapsed()));
            }
            anyhow::Ok(commits)
        }));
    }
    start_line.wait().await;
    let began = Instant::now();
    let mut commits = histogram(3);
    for worker in workers {
        let worker_commits = worker.await.context("ceiling worker")??;
        commits.add(&worker_commits).context("merge histograms")?;
    }
    Ok((commits.len(), began.elapsed(), commits))
}

/// The file path of a `sqlite://PATH?…` or `sqlite:PATH` URL.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        bail!("--ceiling-db needs a SQLite file path, not {url}");
    }
    Ok(PathBuf::from(path))
}

async fn sqlite(server_db: &Path, duration: Duration) -> anyhow::Result<Ceiling> {
    let dir = match server_db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = dir.join(format!(
        "parley-load-ceiling-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let measured = sqlite_inserts(&file, duration).await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        // The -wal and -shm files are gone already when the connection closed cleanly.
        let _ = std::fs::remove_file(path);
    }
    let (count, elapsed, commits) = measured?;
    Ok(Ceiling {
        tx_per_s: count as f64 / elapsed.as_secs_f64(),
        commits,
        details: json!({
            "backend": "sqlite",
            "connections": 1,
            "seconds": elapsed.as_secs_f64(),
            "transactions": count,
            "file": file.display().to_string(),
            "settings": { "journal_mode": "wal", "synchronous": "full" },
        }),
    })
}

async fn sqlite_inserts(
    file: &Path,
    duration: Duration,
) -> anyhow::Result<(u64, Duration, Histogram<u64>)> {
    let mut connection = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .with_context(|| format!("create {}", file.display()))?;
    sqlx::query(
        "create table ceiling (id integer primary key, aggregate_type text not null, \
         aggregate_id text not null, sequence integer not null, event_type text not null, \
         event_version text not null, payload text not null, metadata text not null)",
    )
    .execute(&mut connection)
    .await
    .context("create the ceiling table")?;
    let aggregate = uuid::Uuid::now_v7().to_string();
    let mut commits = histogram(3);
    let mut sequence = 0_i64;
    let began = Instant::now();
    let end = began + duration;
    while Instant::now() < end {
        sequence += 1;
        let started = Instant::now();
        sqlx::query(
            "insert into ceiling (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) values ('Conversation', ?, ?, 'MessagePosted', \
             '1', ?, ?)",
        )
        .bind(&aggregate)
        .bind(sequence)
        .bind(payload())
        .bind(metadata())
        .execute(&mut connection)
        .await
        .context("ceiling insert")?;
        commits.saturating_record(micros(started.elapsed()));
    }
    let elapsed = began.elapsed();
    connection
        .close()
        .await
        .context("close the ceiling database")?;
    Ok((commits.len(), elapsed, commits))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}
