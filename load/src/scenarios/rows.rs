//! `rows`: the raw bulk-write ceiling of a database, what a projection rebuild's writes
//! cannot beat: multi-row INSERT statements (100 rows each by default) into a throwaway
//! table shaped like a read-model row (text key, a secondary index), committed every
//! 2,000 rows, on one connection, with the durability a rebuild uses (PostgreSQL
//! `synchronous_commit = off`; SQLite WAL with `synchronous = NORMAL`). It talks only
//! to the database, never to a server.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use sqlx::{AnyConnection, ConnectOptions as _, Connection as _, Executor as _};

use super::{Common, Timing};
use crate::report::{Figures, Report};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: Timing,
    /// The database: `postgres://…`, or `sqlite://FILE` (a new file; removed after).
    #[arg(long)]
    #[serde(skip)]
    pub db: String,
    #[arg(long, default_value_t = 100)]
    pub rows_per_statement: usize,
    #[arg(long, default_value_t = 2_000)]
    pub rows_per_transaction: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    sqlx::any::install_default_drivers();
    let sqlite = args.db.starts_with("sqlite:");
    if !sqlite && !args.db.starts_with("postgres") {
        bail!("--db must be a postgres:// or sqlite:// URL");
    }
    let url = if sqlite && !args.db.contains("mode=") {
        format!("{}?mode=rwc", args.db)
    } else {
        args.db.clone()
    };
    let mut conn = sqlx::any::AnyConnectOptions::from_url(&url.parse().context("--db")?)?
        .disable_statement_logging()
        .connect()
        .await
        .context("connect to --db")?;
    let table = format!(
        "parley_load_rows_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let setup = if sqlite {
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    } else {
        "SET synchronous_commit = off"
    };
    conn.execute(setup).await?;
    conn.execute(
        format!(
            "CREATE TABLE {table} (id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, \
             seq BIGINT NOT NULL, author_id TEXT NOT NULL, body TEXT NOT NULL, \
             created_at TEXT NOT NULL); \
             CREATE INDEX {table}_by_conversation ON {table} (conversation_id, seq)"
        )
        .as_str(),
    )
    .await?;
    let measured = insert(&mut conn, &table, &args, args.timing.warmup()).await;
    let measured = match measured {
        Ok(_) => insert(&mut conn, &table, &args, args.timing.duration()).await,
        Err(error) => Err(error),
    };
    let dropped = conn.execute(format!("DROP TABLE {table}").as_str()).await;
    conn.close().await.ok();
    if sqlite {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let (rows, elapsed) = measured?;
    dropped?;
    let mut figures = Figures::default();
    figures.add("rows_per_s", rows as f64 / elapsed.as_secs_f64(), "rows/s");
    Ok(Report {
        scenario: "rows",
        description: format!(
            "{}-row INSERT statements, {} rows per transaction, one connection ({})",
            args.rows_per_statement,
            args.rows_per_transaction,
            if sqlite { "SQLite" } else { "PostgreSQL" }
        ),
        config: serde_json::to_value(&args)?,
        figures,
        errors: Default::default(),
        rss: Vec::new(),
        timeline: Vec::new(),
    })
}

/// Inserts for `duration`; returns the rows committed and the time it took.
async fn insert(
    conn: &mut AnyConnection,
    table: &str,
    args: &Args,
    duration: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let per_statement = args.rows_per_statement.max(1);
    let statements = (args.rows_per_transaction / per_statement).max(1);
    let values: Vec<String> = (0..per_statement)
        .map(|row| {
            let at = row * 6;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                at + 1,
                at + 2,
                at + 3,
                at + 4,
                at + 5,
                at + 6
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} (id, conversation_id, seq, author_id, body, created_at) VALUES {}",
        values.join(", ")
    );
    let conversation = uuid::Uuid::now_v7().to_string();
    let author = uuid::Uuid::now_v7().to_string();
    let began = Instant::now();
    let (mut rows, mut seq) = (0_u64, 0_i64);
    while began.elapsed() < duration {
        let mut tx = conn.begin().await?;
        for _ in 0..statements {
            let mut query = sqlx::query(&sql);
            for _ in 0..per_statement {
                seq += 1;
                query = query
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(&conversation)
                    .bind(seq)
                    .bind(&author)
                    .bind("parley-load bulk row, about as long as a chat message")
                    .bind("2026-12-03T00:00:00Z");
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        rows += (statements * per_statement) as u64;
    }
    Ok((rows, began.elapsed()))
}
