//! What crypto-shredding costs: appending messages sealed with data keys vs in clear,
//! and rebuilding the messages read model from a sealed log vs a clear one, in one
//! process.
//!
//! `cargo bench --bench sealing` measures SQLite; with `PARLEY_BENCH_POSTGRES_URL` (a
//! server URL whose role may create databases) also PostgreSQL. Each mode has its own
//! database; rounds alternate between them so drift hits both alike. The figure that
//! matters is the ratio (target: at least 0.9).

use std::time::Instant;

use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use parley_aggregates::conversation::Conversation;
use parley_projections::messages::MessagesProjector;
use parley_store::{Db, MasterKey, Repository};

mod common;

const CONVERSATIONS: usize = 50;
const AUTHORS: usize = 200;
const PER_ROUND: usize = 2_000;
const ROUNDS: usize = 3;

fn id(kind: u128, n: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128((kind << 64) | n as u128)
}

/// The `n`th message: a conversation's next post, as the domain records it.
fn posted(n: usize, seqs: &mut [u64]) -> SerializedEvent {
    let conversation = n % CONVERSATIONS;
    seqs[conversation] += 1;
    let seq = seqs[conversation];
    let body =
        format!("message {n}: a chat line of about the usual length, with a few words to index");
    SerializedEvent::new(
        id(1, conversation).to_string(),
        seq as usize,
        "Conversation".to_owned(),
        "MessagePosted".to_owned(),
        "1".to_owned(),
        serde_json::json!({ "MessagePosted": {
            "conversation_id": id(1, conversation),
            "message_id": id(2, n),
            "seq": seq,
            "author_id": id(3, n % AUTHORS),
            "body": body,
            "format": "PLAIN",
            "reply_to_id": null,
            "reply_to_author_id": null,
            "mentions": [],
            "client_message_id": null,
            "attachment_ids": [],
            "posted_at": "2026-12-03T10:00:00Z",
        } }),
        serde_json::json!({
            "actor_id": id(3, n % AUTHORS),
            "occurred_at": "2026-12-03T10:00:00Z",
            "request_id": id(4, n),
            "correlation_id": id(4, n),
        }),
    )
}

/// One mode's database, with its own sequence numbers.
struct Mode {
    db: Db,
    repo: Repository,
    seqs: Vec<u64>,
    next: usize,
}

impl Mode {
    async fn new(db: Db) -> Self {
        Self {
            repo: Repository::new(&db),
            db,
            seqs: vec![0; CONVERSATIONS],
            next: 0,
        }
    }

    /// Appends `PER_ROUND` messages one command at a time, sealing them when the
    /// database has a master key (as the command bus does); events/s.
    async fn append_round(&mut self) -> f64 {
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            let mut events = [posted(self.next, &mut self.seqs)];
            self.next += 1;
            self.db
                .keys
                .seal(&self.db.write, &mut events)
                .await
                .expect("seal");
            self.repo
                .persist::<Conversation>(&events, None)
                .await
                .expect("append");
        }
        PER_ROUND as f64 / started.elapsed().as_secs_f64()
    }

    /// Rebuilds the messages read model from the whole log; events/s.
    async fn rebuild_round(&self) -> f64 {
        let projector = MessagesProjector;
        parley_projections::runner::reset(&self.db, &projector)
            .await
            .expect("reset");
        let started = Instant::now();
        parley_projections::runner::catch_up(&self.db, &projector)
            .await
            .expect("rebuild");
        self.next as f64 / started.elapsed().as_secs_f64()
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn report(backend: &str, what: &str, clear: &[f64], sealed: &[f64]) {
    let (clear, sealed) = (mean(clear), mean(sealed));
    println!(
        "{backend:<10} {what:<8} in clear {clear:>9.0} events/s   sealed {sealed:>9.0} events/s   ratio {:.3}",
        sealed / clear
    );
}

async fn compare(backend: &str, clear: Db, mut sealed: Db) {
    sealed
        .use_master_key(&MasterKey::new([7; 32]))
        .await
        .expect("master key");
    let (mut clear, mut sealed) = (Mode::new(clear).await, Mode::new(sealed).await);
    let (mut a_clear, mut a_sealed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a_clear.push(clear.append_round().await);
        a_sealed.push(sealed.append_round().await);
    }
    report(backend, "append", &a_clear, &a_sealed);
    let (mut r_clear, mut r_sealed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        r_clear.push(clear.rebuild_round().await);
        r_sealed.push(sealed.rebuild_round().await);
    }
    report(backend, "rebuild", &r_clear, &r_sealed);
    clear.db.close().await;
    sealed.db.close().await;
}

async fn sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |name: &str| {
        let path = dir.path().join(name);
        async move {
            let db = Db::open_sqlite_file(&path).await.expect("open");
            db.migrate().await.expect("migrate");
            db
        }
    };
    compare("sqlite", open("clear.db").await, open("sealed.db").await).await;
}

async fn postgres(server: &str) {
    let mut databases = common::Throwaway::on(server).await;
    let clear = databases.database("clear").await;
    let sealed = databases.database("sealed").await;
    compare("postgres", clear, sealed).await;
    // `WITH (FORCE)` ends whatever connections the comparison left open.
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
