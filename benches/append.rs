//! Append throughput with and without the per-stream hash chain, in one process.
//!
//! `cargo bench --bench append` measures SQLite (Parley's repository with and without
//! hashing); with `PARLEY_BENCH_POSTGRES_URL` (a server URL whose role may create
//! databases) also PostgreSQL (postgres-es with the hash trigger enabled and disabled).
//! Rounds alternate between the two modes so drift hits both alike; the figure that
//! matters is the ratio.

use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use parley_store::Db;
use parley_store::{sqlite::SqliteEventRepository, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Bench;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tick;

impl DomainEvent for Tick {
    fn event_type(&self) -> String {
        "Tick".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Bench {
    const TYPE: &'static str = "Bench";
    type Command = ();
    type Event = Tick;
    type Error = Never;
    type Services = ();
    async fn handle(&mut self, _: (), _: &(), _: &EventSink<Self>) -> Result<(), Never> {
        Ok(())
    }
    fn apply(&mut self, _: Tick) {}
}

mod common;

const STREAMS: usize = 50;
const PER_ROUND: usize = 1_000;
const ROUNDS: usize = 3;

/// Appends `PER_ROUND` events round-robin over `STREAMS` streams; returns events/s.
async fn round<R: PersistedEventRepository>(repo: &R, tag: &str, sequences: &mut [usize]) -> f64 {
    let started = Instant::now();
    for i in 0..PER_ROUND {
        let stream = i % STREAMS;
        sequences[stream] += 1;
        let event = SerializedEvent::new(
            format!("{tag}-{stream}"),
            sequences[stream],
            "Bench".to_owned(),
            "Tick".to_owned(),
            "1".to_owned(),
            serde_json::json!({ "Tick": null, "n": i, "text": "a message body of a typical length for a chat" }),
            serde_json::json!({ "actor_id": "01930000-0000-7000-8000-000000000000", "occurred_at": "2026-11-25T10:00:00Z" }),
        );
        repo.persist::<Bench>(&[event], None).await.expect("append");
    }
    PER_ROUND as f64 / started.elapsed().as_secs_f64()
}

fn report(backend: &str, plain: &[f64], hashed: &[f64]) {
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (plain, hashed) = (mean(plain), mean(hashed));
    println!("{backend:<10} without hashing {plain:>9.0} events/s   with hashing {hashed:>9.0} events/s   ratio {:.3}", hashed / plain);
}

async fn sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sqlite_file(&dir.path().join("bench.db"))
        .await
        .expect("open");
    db.migrate().await.expect("migrate");
    let hashed = SqliteEventRepository::new(db.write.clone(), db.read.clone());
    let plain = SqliteEventRepository::new(db.write.clone(), db.read.clone()).without_hashing();
    let (mut seq_plain, mut seq_hashed) = (vec![0; STREAMS], vec![0; STREAMS]);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(round(&plain, "plain", &mut seq_plain).await);
        with.push(round(&hashed, "hashed", &mut seq_hashed).await);
    }
    report("sqlite", &without, &with);
}

async fn postgres(server: &str) {
    let mut databases = common::Throwaway::on(server).await;
    let db = databases.database("append").await;
    let repo = Repository::new(&db);
    let pg = db.pg.clone().expect("postgres pool");
    // Only in this throwaway database: the unhashed baseline stores no hash.
    sqlx::query("ALTER TABLE events ALTER COLUMN hash DROP NOT NULL")
        .execute(&pg)
        .await
        .expect("alter");
    let (mut seq_plain, mut seq_hashed) = (vec![0; STREAMS], vec![0; STREAMS]);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        sqlx::query("ALTER TABLE events DISABLE TRIGGER events_stream_hash")
            .execute(&pg)
            .await
            .expect("disable");
        without.push(round(&repo, "plain", &mut seq_plain).await);
        sqlx::query("ALTER TABLE events ENABLE TRIGGER events_stream_hash")
            .execute(&pg)
            .await
            .expect("enable");
        with.push(round(&repo, "hashed", &mut seq_hashed).await);
    }
    report("postgres", &without, &with);
    db.close().await;
    databases.drop_all().await;
}

#[tokio::main]
async fn main() {
    sqlite().await;
    match std::env::var("PARLEY_BENCH_POSTGRES_URL") {
        Ok(server) => postgres(&server).await,
        Err(_) => println!("postgres   skipped (set PARLEY_BENCH_POSTGRES_URL to measure it)"),
    }
}
