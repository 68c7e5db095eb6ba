//! What posting costs as a conversation's history grows: a post into a conversation of
//! 10 messages against one into a conversation of 1,000,000, in one process and run.
//!
//! `cargo bench --bench history` measures SQLite; with `PARLEY_BENCH_POSTGRES_URL` (a
//! server URL whose role may create databases) also PostgreSQL. `BENCH_HISTORY` sets
//! the long history (default 1,000,000 messages, every one with a `clientMessageId`, as
//! apps send them). Each measured post goes through a command bus that has not seen
//! the conversation (the cold case: a node that just started, or one that let the
//! conversation go from its cache), with a `clientMessageId` of its own, so it loads the
//! conversation from its snapshot and looks the id up in the log. Rounds alternate
//! between the two conversations so drift hits both alike; the ratio is the figure.

use std::time::{Duration, Instant};

use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::EventEnvelope;
use parley_aggregates::conversation::{
    Conversation, ConversationCommand, ConversationEvent, ConversationServices, MemberRef,
};
use parley_store::log::PostsInLog;
use parley_store::{CommandBus, CommandMeta, Db, Repository};
use time::OffsetDateTime;
use uuid::Uuid;

mod common;

const POSTS_PER_ROUND: usize = 100;
const ROUNDS: usize = 5;
/// Events per append while writing the long history.
const CHUNK: usize = 2_000;

fn services(db: &Db) -> ConversationServices {
    ConversationServices {
        posted: std::sync::Arc::new(PostsInLog(db.clone())),
        ..ConversationServices::default()
    }
}

fn member() -> MemberRef {
    MemberRef {
        user_id: Uuid::now_v7(),
    }
}

fn post(author: Uuid, client_id: String, at: OffsetDateTime) -> ConversationCommand {
    ConversationCommand::PostMessage {
        message_id: Uuid::now_v7(),
        author_id: author,
        body: "a message body of a typical length for a chat line".to_owned(),
        reply_to: None,
        client_message_id: Some(client_id),
        attachment_ids: vec![],
        named: Default::default(),
        at,
    }
}

/// A group of two, then `messages` posts by `author`: the first by appending events
/// straight to the log (as fast as the store takes them), the last `SNAPSHOT_EVERY`
/// through the bus, which leaves the snapshot a real conversation would have.
async fn conversation(db: &Db, messages: usize) -> (Uuid, Uuid) {
    let bus = CommandBus::<Conversation>::new(db, services(db));
    let (alice, bob) = (member(), member());
    let author = alice.user_id;
    let id = Uuid::now_v7();
    let at = OffsetDateTime::now_utc();
    let create = ConversationCommand::CreateGroup {
        creator: alice,
        title: "history".to_owned(),
        members: vec![bob],
        at,
    };
    bus.execute(
        &id.to_string(),
        (id, create),
        &CommandMeta::new(Some(author), at),
    )
    .await
    .expect("create");
    let through_bus = messages.min(parley_store::bus::SNAPSHOT_EVERY);
    let direct = messages - through_bus;
    let repo = Repository::new(db);
    let meta = serde_json::json!({ "actor_id": author.to_string(), "occurred_at": "2026-12-01T00:00:00Z" });
    let started = Instant::now();
    let mut written = 0;
    while written < direct {
        let events: Vec<SerializedEvent> = (written..(written + CHUNK).min(direct))
            .map(|n| {
                let seq = n as u64 + 1;
                let envelope = EventEnvelope::<Conversation> {
                    aggregate_id: id.to_string(),
                    // The group's creation is event 1.
                    sequence: n + 2,
                    payload: ConversationEvent::MessagePosted {
                        conversation_id: id,
                        message_id: Uuid::now_v7(),
                        seq,
                        author_id: author,
                        body: format!("history message {n}"),
                        format: "PLAIN".to_owned(),
                        reply_to_id: None,
                        reply_to_author_id: None,
                        mentions: vec![],
                        client_message_id: Some(format!("history-{n}")),
                        attachment_ids: vec![],
                        posted_at: at,
                    },
                    metadata: serde_json::from_value(meta.clone()).expect("metadata"),
                };
                SerializedEvent::try_from(&envelope).expect("serialize")
            })
            .collect();
        written += events.len();
        repo.persist::<Conversation>(&events, None)
            .await
            .expect("append history");
        if written % 100_000 < CHUNK {
            eprintln!(
                "  {written} messages written ({:.0}/s)",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    for n in 0..through_bus {
        bus.execute(
            &id.to_string(),
            (id, post(author, format!("tail-{n}"), at)),
            &CommandMeta::new(Some(author), at),
        )
        .await
        .expect("post");
    }
    (id, author)
}

/// Mean time of `POSTS_PER_ROUND` cold posts into `conversation`.
async fn round(db: &Db, (id, author): (Uuid, Uuid), tag: &str, round: usize) -> Duration {
    let mut total = Duration::ZERO;
    for n in 0..POSTS_PER_ROUND {
        let bus = CommandBus::<Conversation>::new(db, services(db));
        let at = OffsetDateTime::now_utc();
        let command = post(author, format!("{tag}-{round}-{n}"), at);
        let started = Instant::now();
        bus.execute(
            &id.to_string(),
            (id, command),
            &CommandMeta::new(Some(author), at),
        )
        .await
        .expect("post");
        total += started.elapsed();
    }
    total / POSTS_PER_ROUND as u32
}

async fn measure(backend: &str, db: &Db, history: usize) {
    eprintln!("{backend}: writing a conversation of 10 messages and one of {history}…");
    let short = conversation(db, 10).await;
    let long = conversation(db, history).await;
    let (mut with_short, mut with_long) = (Vec::new(), Vec::new());
    for n in 0..ROUNDS {
        with_short.push(round(db, short, "short", n).await);
        with_long.push(round(db, long, "long", n).await);
    }
    let mean = |xs: &[Duration]| xs.iter().sum::<Duration>() / xs.len() as u32;
    let (short, long) = (mean(&with_short), mean(&with_long));
    println!(
        "{backend:<10} cold post, 10 messages {:>8.3} ms   {history} messages {:>8.3} ms   ratio {:.3}",
        short.as_secs_f64() * 1e3,
        long.as_secs_f64() * 1e3,
        long.as_secs_f64() / short.as_secs_f64()
    );
}

async fn sqlite(history: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sqlite_file(&dir.path().join("bench.db"))
        .await
        .expect("open");
    db.migrate().await.expect("migrate");
    measure("sqlite", &db, history).await;
    db.close().await;
}

async fn postgres(server: &str, history: usize) {
    let mut databases = common::Throwaway::on(server).await;
    let db = databases.database("history").await;
    measure("postgres", &db, history).await;
    db.close().await;
    databases.drop_all().await;
}

#[tokio::main]
async fn main() {
    let history = std::env::var("BENCH_HISTORY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    sqlite(history).await;
    match std::env::var("PARLEY_BENCH_POSTGRES_URL") {
        Ok(server) => postgres(&server, history).await,
        Err(_) => println!("postgres   skipped (set PARLEY_BENCH_POSTGRES_URL to measure it)"),
    }
}
