//! Event-store conformance suite, run against every backend: the same guarantees on
//! SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{backends, Backend, TestDatabase};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventUpcaster, PersistedEventRepository, PersistenceError, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use parley::graphql::error::ApiError;
use parley_store::{log, Db, LogPosition};
use parley_store::{CommandBus, CommandMeta, Repository};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A minimal aggregate for exercising the store.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: i64,
    events: u64,
}

#[derive(Debug, Clone)]
enum CounterCommand {
    /// Appends `times` events of `amount` each.
    Add { amount: i64, times: usize },
    /// Appends one event of `amount`, refused while the total is below `at_least`.
    AddIfAtLeast { amount: i64, at_least: i64 },
}

/// Version 2. Version 1 was `Incremented {}`, meaning +1 (see `IncrementedUpcaster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { amount: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".to_owned()
    }
    fn event_version(&self) -> String {
        "2".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("counter error")]
struct CounterError;

impl From<CounterError> for ApiError {
    fn from(_: CounterError) -> Self {
        ApiError::BadUserInput {
            field: "amount".into(),
            message: "counter error".into(),
        }
    }
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        let (amount, times) = match command {
            CounterCommand::Add { amount, times } => (amount, times),
            CounterCommand::AddIfAtLeast { amount, at_least } if self.total >= at_least => {
                (amount, 1)
            }
            CounterCommand::AddIfAtLeast { .. } => return Err(CounterError),
        };
        for _ in 0..times {
            sink.write(CounterEvent::Added { amount }, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Added { amount } = event;
        self.total += amount;
        self.events += 1;
    }
}

struct IncrementedUpcaster;

impl EventUpcaster for IncrementedUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "Incremented" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.event_type = "Added".to_owned();
        event.event_version = "2".to_owned();
        event.payload = serde_json::json!({ "Added": { "amount": 1 } });
        event
    }
}

fn meta() -> CommandMeta {
    CommandMeta::new(Some(Uuid::now_v7()), time::OffsetDateTime::now_utc())
}

fn add(amount: i64, times: usize) -> CounterCommand {
    CounterCommand::Add { amount, times }
}

/// Appends one raw event in a transaction held open for `hold` before committing.
async fn append_raw(
    db: &Db,
    id: &str,
    sequence: i64,
    event_type: &str,
    version: &str,
    payload: &str,
    hold: Duration,
) {
    match &db.pg {
        Some(pg) => {
            let mut tx = pg.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Counter', $1, $2, $3, $4, $5::jsonb, '{}'::jsonb)",
            )
            .bind(id)
            .bind(sequence)
            .bind(event_type)
            .bind(version)
            .bind(payload)
            .execute(&mut *tx)
            .await
            .expect("insert");
            tokio::time::sleep(hold).await;
            tx.commit().await.expect("commit");
        }
        None => {
            let mut tx = db.write.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ($1, 'Counter', $2, $3, $4, $5, $6, '{}')",
            )
            .bind(Uuid::now_v7().to_string())
            .bind(id)
            .bind(sequence)
            .bind(event_type)
            .bind(version)
            .bind(payload)
            .execute(&mut *tx)
            .await
            .expect("insert");
            tokio::time::sleep(hold).await;
            tx.commit().await.expect("commit");
        }
    }
}

#[tokio::test]
async fn appended_events_load_back_in_order_with_their_envelope() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let bus = CommandBus::<Counter>::new(&db, ());
        let meta = meta();
        let committed = bus.execute("c1", add(2, 3), &meta).await.expect("append");
        assert_eq!(committed.events.len(), 3);
        bus.execute("c1", add(10, 1), &meta).await.expect("append");

        let loaded = bus.load("c1").await.expect("load");
        assert_eq!((loaded.total, loaded.events), (16, 4));
        let sequences: Vec<usize> = bus
            .events("c1")
            .await
            .expect("events")
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(sequences, vec![1, 2, 3, 4]);

        let logged = common::readable_events(&db, 4).await;
        assert_eq!(logged.len(), 4);
        assert!(logged.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(committed.position, Some(logged[2].position));
        for event in &logged {
            let id = Uuid::parse_str(&event.event_id).expect("event id is a UUID");
            assert_eq!(id.get_version_num(), 7, "event ids are UUIDv7");
            assert_eq!(
                event.meta("actor_id"),
                meta.actor_id.map(|a| a.to_string()).as_deref()
            );
            assert_eq!(
                event.meta("correlation_id"),
                Some(meta.correlation_id.to_string().as_str())
            );
            assert_eq!(
                event.meta("request_id"),
                Some(meta.request_id.to_string().as_str())
            );
            assert!(event.meta("occurred_at").is_some());
            assert_eq!(event.aggregate_type, "Counter");
        }
        let ids: HashSet<_> = logged.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids.len(), 4);
        db.close().await;
    }
}

#[tokio::test]
async fn two_writers_at_the_same_sequence_one_wins_and_the_other_gets_a_conflict() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let repo = Arc::new(Repository::new(&db));
        for round in 0..10 {
            let id = format!("race-{round}");
            let event = |amount: i64| {
                vec![SerializedEvent::new(
                    id.clone(),
                    1,
                    "Counter".to_owned(),
                    "Added".to_owned(),
                    "2".to_owned(),
                    serde_json::json!({ "Added": { "amount": amount } }),
                    serde_json::json!({}),
                )]
            };
            let (a, b) = (event(1), event(2));
            let (ra, rb) = (repo.clone(), repo.clone());
            let (first, second) = tokio::join!(
                async move { ra.persist::<Counter>(&a, None).await },
                async move { rb.persist::<Counter>(&b, None).await },
            );
            let results = [first, second];
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
            let loser = results
                .into_iter()
                .find_map(Result::err)
                .expect("one writer lost");
            assert!(
                matches!(loser, PersistenceError::OptimisticLockError),
                "{loser:?}"
            );
            let api: ApiError = AggregateError::<CounterError>::from(loser).into();
            assert_eq!(api.code(), "CONFLICT");
        }
        db.close().await;
    }
}

/// A retry's `clientMessageId` is found through its index, not by reading through the
/// conversation: what keeps a post's cost flat however long the history.
#[tokio::test]
async fn the_client_message_id_lookup_reads_its_index() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let sql = log::post_by_client_id_sql(db.backend);
        let plan: Vec<String> = match db.backend {
            parley_store::Backend::Sqlite => {
                let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind("c")
                    .bind("id")
                    .bind("a")
                    .fetch_all(&db.read)
                    .await
                    .expect("explain");
                rows.iter()
                    .map(|row| sqlx::Row::try_get::<String, _>(row, 3).expect("detail"))
                    .collect()
            }
            parley_store::Backend::Postgres => {
                // Without statistics the planner could take any index: tell it the log
                // is large, as it would be where this matters.
                let pg = db.pg.clone().expect("pool");
                let mut conn = pg.acquire().await.expect("connection");
                sqlx::query("SET enable_seqscan = off")
                    .execute(&mut *conn)
                    .await
                    .expect("set");
                let literal = sql
                    .replace("$1", "'c'")
                    .replace("$2", "'id'")
                    .replace("$3", "'a'");
                sqlx::query_scalar(&format!("EXPLAIN {literal}"))
                    .fetch_all(&mut *conn)
                    .await
                    .expect("explain")
            }
        };
        assert!(
            plan.iter()
                .any(|line| line.contains("events_client_message_ids")),
            "{plan:?}"
        );
        db.close().await;
    }
}

/// Two nodes (two buses, each keeping the aggregates it handled) over one log: a node
/// whose kept aggregate another node moved on must notice, whether it would append
/// (the sequence check fails and it reloads) or refuse (it decides again on a fresh
/// load before refusing).
#[tokio::test]
async fn a_kept_aggregate_another_node_moved_on_is_reloaded_before_it_decides() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let (a, b) = (
            CommandBus::<Counter>::new(&db, ()),
            CommandBus::<Counter>::new(&db, ()),
        );
        a.execute("c", add(1, 1), &meta()).await.expect("a appends");
        b.execute("c", add(1, 1), &meta()).await.expect("b appends");
        // A still keeps the counter at one event; its append must land after B's.
        let committed = a.execute("c", add(1, 1), &meta()).await.expect("a again");
        assert_eq!(committed.events[0].sequence, 3);
        // B moves the total to 13; A, keeping 3, would refuse, but decides on 13.
        b.execute("c", add(10, 1), &meta())
            .await
            .expect("b adds ten");
        let accepted = a
            .execute(
                "c",
                CounterCommand::AddIfAtLeast {
                    amount: 1,
                    at_least: 13,
                },
                &meta(),
            )
            .await
            .expect("decided on the fresh total");
        assert_eq!(accepted.events[0].sequence, 5);
        let refused = b
            .execute(
                "c",
                CounterCommand::AddIfAtLeast {
                    amount: 1,
                    at_least: 100,
                },
                &meta(),
            )
            .await;
        assert!(matches!(refused, Err(AggregateError::UserError(_))));
        let loaded = a.load("c").await.expect("load");
        assert_eq!((loaded.events, loaded.total), (5, 14));
        // Each writer keeps the head of the streams it wrote; the other's appends made
        // that stale, and every event must still chain from the one stored before it.
        assert_eq!(common::readable_events(&db, 5).await.len(), 5);
        let verified = parley_projections::chain::verify(&db, None)
            .await
            .expect("verify")
            .expect("the chain verifies");
        assert_eq!(verified.events, 5);
        db.close().await;
    }
}

/// Many writers at once: on SQLite their appends share group commits, where one
/// append's conflict must roll back only itself and the winners' chains stay intact.
#[tokio::test]
async fn concurrent_appends_with_conflicts_keep_every_winner_and_a_verifying_chain() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let bus = Arc::new(CommandBus::<Counter>::new(&db, ()));
        // Every stream starts with one event, so later appends extend a hash chain.
        for stream in 0..16 {
            bus.execute(&format!("s{stream}"), add(1, 1), &meta())
                .await
                .expect("first append");
        }
        let repo = Arc::new(Repository::new(&db));
        let writers = (0..64).map(|writer| {
            let repo = repo.clone();
            async move {
                let stream = format!("s{}", writer % 16);
                let events: Vec<SerializedEvent> = (0..2)
                    .map(|offset| {
                        SerializedEvent::new(
                            stream.clone(),
                            2 + offset,
                            "Counter".to_owned(),
                            "Added".to_owned(),
                            "2".to_owned(),
                            serde_json::json!({ "Added": { "amount": writer } }),
                            serde_json::json!({}),
                        )
                    })
                    .collect();
                (stream, repo.persist::<Counter>(&events, None).await)
            }
        });
        let results = futures::future::join_all(writers).await;
        for stream in 0..16 {
            let name = format!("s{stream}");
            let outcomes: Vec<_> = results.iter().filter(|(s, _)| *s == name).collect();
            let won = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
            assert_eq!(won, 1, "one writer per stream wins: {outcomes:?}");
            for (_, outcome) in outcomes.iter().filter(|(_, r)| r.is_err()) {
                assert!(
                    matches!(outcome, Err(PersistenceError::OptimisticLockError)),
                    "{outcome:?}"
                );
            }
            let loaded = bus.load(&name).await.expect("load");
            assert_eq!(
                loaded.events, 3,
                "{name}: the first event and the winner's two"
            );
        }
        // On PostgreSQL the log is readable up to the oldest transaction still
        // appending: wait for all of it.
        assert_eq!(common::readable_events(&db, 16 * 3).await.len(), 16 * 3);
        let verified = parley_projections::chain::verify(&db, None)
            .await
            .expect("verify")
            .expect("the chain verifies");
        assert_eq!(verified.events, 16 * 3);
        db.close().await;
    }
}

/// Appends that queue while the writer is busy are written together (on SQLite in a
/// few multi-row statements): each must learn where its own last event landed, and
/// every stream's chain must link to what was stored before the group.
#[tokio::test]
async fn appends_written_as_one_group_each_learn_their_place_and_extend_their_chains() {
    const STREAMS: usize = 48;
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let bus = Arc::new(CommandBus::<Counter>::new(&db, ()));
        for stream in 0..STREAMS {
            bus.execute(&format!("g{stream}"), add(1, 1), &meta())
                .await
                .expect("first append");
        }
        // Holding SQLite's one write connection lets every append below queue up, so
        // the writer takes them as one group when it is free.
        let writer = db.write.acquire().await.expect("the write connection");
        let held = async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(writer);
        };
        let appends = futures::future::join_all((0..STREAMS).map(|stream| {
            let bus = bus.clone();
            async move {
                let id = format!("g{stream}");
                let committed = bus.execute(&id, add(2, 2), &meta()).await;
                (id, committed)
            }
        }));
        let ((), answered) = tokio::join!(held, appends);
        let events = common::readable_events(&db, STREAMS * 3).await;
        for (id, committed) in answered {
            let committed = committed.expect("every append succeeds");
            let last = events
                .iter()
                .filter(|event| event.aggregate_id == id)
                .max_by_key(|event| event.sequence)
                .expect("the stream is in the log");
            assert_eq!(last.sequence, 3, "{id}");
            assert_eq!(committed.position, Some(last.position), "{id}");
        }
        let verified = parley_projections::chain::verify(&db, None)
            .await
            .expect("verify")
            .expect("the chain verifies");
        assert_eq!(verified.events, (STREAMS * 3) as u64);
        db.close().await;
    }
}

#[tokio::test]
async fn a_tail_sees_every_event_exactly_once_while_writers_race_and_hold_transactions_open() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 625; // 5,000 events in all
    const BATCH: usize = 5;
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let bus = Arc::new(CommandBus::<Counter>::new(&db, ()));
        let (holds, hold) = match backend {
            // SQLite has one writer, so a held transaction stalls everyone: hold fewer.
            Backend::Sqlite => (2, Duration::from_millis(150)),
            Backend::Postgres => (5, Duration::from_millis(300)),
        };

        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let bus = bus.clone();
                let db = db.clone();
                tokio::spawn(async move {
                    let meta = meta();
                    let slow_id = format!("slow-{w}");
                    let mut written = 0;
                    let mut slow_sequence = 0;
                    let mut batch = 0;
                    while written < PER_WRITER {
                        batch += 1;
                        if slow_sequence < holds && batch % 20 == (w % 20) {
                            slow_sequence += 1;
                            append_raw(
                                &db,
                                &slow_id,
                                slow_sequence as i64,
                                "Added",
                                "2",
                                r#"{"Added":{"amount":1}}"#,
                                hold,
                            )
                            .await;
                            written += 1;
                        } else {
                            let n = BATCH.min(PER_WRITER - written);
                            bus.execute(&format!("w-{w}-{}", batch % 7), add(1, n), &meta)
                                .await
                                .expect("append");
                            written += n;
                        }
                    }
                })
            })
            .collect();

        let reader = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                let mut position = LogPosition::START;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                while seen.len() < WRITERS * PER_WRITER {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "tail stalled at {}",
                        seen.len()
                    );
                    let batch = log::read_after(&db, position, 173).await.expect("read");
                    for event in batch {
                        assert!(event.position > position, "tail went backwards");
                        position = event.position;
                        assert!(
                            seen.insert((event.aggregate_id.clone(), event.sequence)),
                            "event {}/{} seen twice",
                            event.aggregate_id,
                            event.sequence
                        );
                    }
                    tokio::task::yield_now().await;
                }
                (seen.len(), position)
            })
        };
        for writer in writers {
            writer.await.expect("writer");
        }
        let (seen, position) = tokio::time::timeout(Duration::from_secs(300), reader)
            .await
            .expect("reader finished")
            .expect("reader");
        assert_eq!(seen, WRITERS * PER_WRITER);
        // Nothing is left behind the tail.
        let rest = log::read_after(&db, position, 10).await.expect("read");
        assert!(
            rest.is_empty(),
            "{} events after the tail's end",
            rest.len()
        );
        db.close().await;
    }
}

/// On PostgreSQL a tail waits for transactions that append, and only for them: one left
/// open in another database of the same server, or in this one without appending (a
/// session that read the log and wrote elsewhere, as an analyst's or a rebuild's does),
/// does not hold it back, while an append still in flight does.
#[tokio::test]
async fn only_transactions_still_appending_hold_the_tail_back() {
    use sqlx::Connection;
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let database = TestDatabase::new(Backend::Postgres).await;
    let db = database.connect().await;
    let bus = CommandBus::<Counter>::new(&db, ());
    let open = common::OpenTransactions::begin(&database).await;

    bus.execute("first", add(1, 2), &meta())
        .await
        .expect("append");
    let read = log::read_after(&db, LogPosition::START, 100)
        .await
        .expect("read");
    assert_eq!(
        read.len(),
        2,
        "transactions that do not append hold the tail back"
    );

    let mut appender = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let mut appending = appender.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Counter', 'slow', 1, 'Added', '2', '{\"Added\":{\"amount\":1}}'::jsonb, '{}'::jsonb)",
    )
    .execute(&mut *appending)
    .await
    .expect("insert");
    bus.execute("second", add(1, 1), &meta())
        .await
        .expect("append");
    let after = read.last().expect("read two").position;
    let held = log::read_after(&db, after, 100).await.expect("read");
    assert!(
        held.is_empty(),
        "an event that committed after one still being appended was read before it"
    );
    appending.commit().await.expect("commit");
    let read: Vec<String> = log::read_after(&db, after, 100)
        .await
        .expect("read")
        .into_iter()
        .map(|event| event.aggregate_id)
        .collect();
    assert_eq!(read, ["slow", "second"]);

    open.end().await;
    appender.close().await.expect("close");
    db.close().await;
}

/// What the tail's gate relies on: on PostgreSQL an append is the first write of its
/// transaction, and one that is not is refused rather than left for tails to skip.
#[tokio::test]
async fn an_append_after_another_write_in_its_transaction_is_refused() {
    use sqlx::Connection;
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let database = TestDatabase::new(Backend::Postgres).await;
    let db = database.connect().await;
    let mut conn = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let insert = |id: &'static str| {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('Counter', $1, 1, 'Added', '2', '{\"Added\":{\"amount\":1}}'::jsonb, '{}'::jsonb)",
        )
        .bind(id)
    };

    let mut first = conn.begin().await.expect("begin");
    insert("one").execute(&mut *first).await.expect("append");
    insert("two")
        .execute(&mut *first)
        .await
        .expect("a second append in the same transaction");
    first.commit().await.expect("commit");

    let mut late = conn.begin().await.expect("begin");
    sqlx::query("CREATE TABLE scratch (n int)")
        .execute(&mut *late)
        .await
        .expect("another write");
    let refused = insert("three")
        .execute(&mut *late)
        .await
        .expect_err("an append after another write");
    assert!(
        refused
            .to_string()
            .contains("an append must be the first write of its transaction"),
        "{refused}"
    );
    late.rollback().await.expect("rollback");

    let ids: Vec<String> = log::read_after(&db, LogPosition::START, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|event| event.aggregate_id)
        .collect();
    assert_eq!(ids, ["one", "two"]);
    conn.close().await.expect("close");
    db.close().await;
}

#[tokio::test]
async fn loading_from_a_snapshot_equals_a_full_replay() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let snapshotting = CommandBus::<Counter>::with_snapshots(&db, (), 5);
        let replaying = CommandBus::<Counter>::without_snapshots(&db, ());
        let meta = meta();
        for i in 0..23 {
            snapshotting
                .execute("snap", add(i, 1 + (i as usize % 3)), &meta)
                .await
                .expect("append");
        }
        let from_snapshot = snapshotting.load("snap").await.expect("load");
        let from_replay = replaying.load("snap").await.expect("load");
        assert_eq!(from_snapshot, from_replay);
        assert_eq!(
            from_replay.events,
            (0..23).map(|i| 1 + (i % 3)).sum::<u64>()
        );

        let snapshot_at: i64 = sqlx::query_scalar(
            "SELECT last_sequence FROM snapshots WHERE aggregate_type = 'Counter' AND aggregate_id = 'snap'",
        )
        .fetch_one(&db.read)
        .await
        .expect("a snapshot was written");
        assert!(snapshot_at >= 40, "snapshot at {snapshot_at}");
        db.close().await;
    }
}

#[tokio::test]
async fn an_event_stored_in_an_older_version_still_loads_through_its_upcaster() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        append_raw(
            &db,
            "old",
            1,
            "Incremented",
            "1",
            r#"{"Incremented":{}}"#,
            Duration::ZERO,
        )
        .await;

        let without = CommandBus::<Counter>::without_snapshots(&db, ());
        assert!(
            without.load("old").await.is_err(),
            "v1 does not decode as v2 without the upcaster"
        );

        let bus =
            CommandBus::<Counter>::new(&db, ()).with_upcasters(vec![Box::new(IncrementedUpcaster)]);
        bus.execute("old", add(5, 1), &meta())
            .await
            .expect("append after v1");
        let counter = bus.load("old").await.expect("load");
        assert_eq!((counter.total, counter.events), (6, 2));
        db.close().await;
    }
}

mod projector_safety {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parley_aggregates::user::{PasswordHasher, User, UserCommand, UserServices};
    use parley_projections::runner::{self, Projector};
    use parley_projections::users::UsersProjector;
    use parley_projections::ProjectionError;
    use parley_store::StoredEvent;
    use sqlx::AnyConnection;

    use super::*;

    struct PlainHasher;

    #[async_trait::async_trait]
    impl PasswordHasher for PlainHasher {
        async fn hash(&self, password: &str) -> Result<String, String> {
            Ok(password.to_owned())
        }
        async fn verify(&self, password: &str, hash: &str) -> bool {
            password == hash
        }
    }

    /// The users projector, crashing on the `fail_at`-th event it sees.
    struct CrashingProjector {
        seen: AtomicUsize,
        fail_at: usize,
    }

    #[async_trait::async_trait]
    impl Projector for CrashingProjector {
        fn name(&self) -> &'static str {
            "users"
        }
        fn tables(&self) -> &'static [&'static str] {
            UsersProjector.tables()
        }
        async fn apply(
            &self,
            conn: &mut AnyConnection,
            event: &StoredEvent,
        ) -> Result<(), ProjectionError> {
            UsersProjector.apply(conn, event).await?;
            if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
                // Any failure will do; this one cannot come from the real projector.
                return Err(ProjectionError::Database(sqlx::Error::Protocol(
                    "crash mid-batch".to_owned(),
                )));
            }
            Ok(())
        }
    }

    async fn rows(db: &Db) -> Vec<(String, String, String)> {
        sqlx::query_as("SELECT id, username, display_name FROM users ORDER BY id")
            .fetch_all(&db.read)
            .await
            .expect("rows")
    }

    #[tokio::test]
    async fn a_projector_crash_mid_batch_leaves_nothing_and_recovery_equals_a_fresh_replay() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let database = TestDatabase::new(backend).await;
            let db = database.connect().await;
            let bus = CommandBus::<User>::new(&db, UserServices::new(Arc::new(PlainHasher)));
            for name in ["ann", "ben", "cat", "dan", "eve"] {
                register(&bus, name).await;
            }

            assert_eq!(common::readable_events(&db, 5).await.len(), 5);
            let crashing = CrashingProjector {
                seen: AtomicUsize::new(0),
                fail_at: 3,
            };
            let result = runner::run_batch(&db, &crashing, LogPosition::START, 100).await;
            assert!(
                matches!(&result, Err(ProjectionError::Database(sqlx::Error::Protocol(m))) if m == "crash mid-batch"),
                "{result:?}"
            );
            assert!(
                rows(&db).await.is_empty(),
                "a failed batch left rows behind"
            );
            assert_eq!(
                runner::load_checkpoint(&db, "users")
                    .await
                    .expect("checkpoint"),
                None
            );

            let head = runner::catch_up(&db, &UsersProjector)
                .await
                .expect("recover");
            assert_eq!(head, log::head(&db).await.expect("head"));
            let recovered = rows(&db).await;
            assert_eq!(recovered.len(), 5);

            runner::reset(&db, &UsersProjector).await.expect("reset");
            assert!(rows(&db).await.is_empty());
            runner::catch_up(&db, &UsersProjector)
                .await
                .expect("replay");
            assert_eq!(
                rows(&db).await,
                recovered,
                "recovery differs from a fresh replay"
            );

            // Idempotent: the same events applied again change nothing.
            let events = log::read_after(&db, LogPosition::START, 100)
                .await
                .expect("read");
            let mut tx = db.write.begin().await.expect("begin");
            for event in &events {
                UsersProjector.apply(&mut tx, event).await.expect("reapply");
            }
            tx.commit().await.expect("commit");
            assert_eq!(rows(&db).await, recovered);
            db.close().await;
        }
    }
    async fn register(bus: &CommandBus<User>, name: &str) -> LogPosition {
        let id = Uuid::now_v7();
        bus.execute(
            &id.to_string(),
            UserCommand::Register {
                user_id: id,
                username: name.to_owned(),
                password: "long enough password".to_owned(),
                display_name: name.to_uppercase(),
                session: None,
                at: time::OffsetDateTime::now_utc(),
            },
            &meta(),
        )
        .await
        .expect("register")
        .position
        .expect("a position")
    }

    fn names(rows: &[(String, String, String)]) -> Vec<&str> {
        let mut names: Vec<&str> = rows.iter().map(|(_, name, _)| name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// On SQLite the writer applies a group of appends to the read models inside the
    /// transaction that appends it: the append answers with its read models and their
    /// checkpoints already past it. A batch that fails there is rolled back alone and
    /// left to the runner; the append stands.
    #[tokio::test]
    async fn on_sqlite_an_append_commits_with_its_read_models_and_a_failing_batch_leaves_it_to_the_runner(
    ) {
        let database = TestDatabase::new(Backend::Sqlite).await;
        let db = database.connect().await;
        let bus = CommandBus::<User>::new(&db, UserServices::new(Arc::new(PlainHasher)));
        register(&bus, "ann").await;
        let projections =
            parley_projections::Projections::start(db.clone(), vec![Arc::new(UsersProjector)]);
        let head = log::head(&db).await.expect("head");
        assert!(projections.wait_for(head, Duration::from_secs(30)).await);

        let position = register(&bus, "ben").await;
        // No waiting: the runner has not been asked to do anything yet.
        assert!(
            projections
                .positions()
                .iter()
                .all(|(_, progress)| progress.position == position),
            "{:?}",
            projections.positions()
        );
        assert_eq!(names(&rows(&db).await), ["ann", "ben"]);
        let checkpoint = runner::load_checkpoint(&db, "users").await.expect("load");
        assert_eq!(checkpoint.map(|c| c.position), Some(position));

        // Without the runner, nothing applies an append.
        projections.stop();
        let cat = register(&bus, "cat").await;
        assert_eq!(names(&rows(&db).await), ["ann", "ben"]);
        drop(projections);

        // The runner applies cat (the first event this projector sees); the inline
        // batch crashes on dan (the second), and the runner applies dan after all.
        let crashing = Arc::new(CrashingProjector {
            seen: AtomicUsize::new(0),
            fail_at: 2,
        });
        let projections =
            parley_projections::Projections::start(db.clone(), vec![crashing.clone()]);
        assert!(projections.wait_for(cat, Duration::from_secs(30)).await);
        assert_eq!(crashing.seen.load(Ordering::SeqCst), 1);
        let dan = register(&bus, "dan").await;
        assert!(projections.wait_for(dan, Duration::from_secs(30)).await);
        assert_eq!(names(&rows(&db).await), ["ann", "ben", "cat", "dan"]);
        assert_eq!(
            crashing.seen.load(Ordering::SeqCst),
            3,
            "dan: once inline (rolled back), once by the runner"
        );
        projections.stop();
        db.close().await;
    }
}

mod tamper {
    use parley_projections::chain::{self, Tamper};

    use super::*;

    /// A database with ten events over three interleaved streams, chained.
    async fn chained(backend: Backend) -> (TestDatabase, Db, Vec<parley_store::StoredEvent>) {
        let database = TestDatabase::new(backend).await;
        let db = database.connect().await;
        let bus = CommandBus::<Counter>::new(&db, ());
        for (id, times) in [("a", 2), ("b", 1), ("a", 2), ("c", 3), ("b", 2)] {
            bus.execute(id, add(1, times), &meta())
                .await
                .expect("append");
        }
        let events = common::readable_events(&db, 10).await;
        assert_eq!(events.len(), 10);
        let verified = chain::verify(&db, None)
            .await
            .expect("verify")
            .expect("untouched log verifies");
        assert_eq!(verified.events, 10);
        (database, db, events)
    }

    /// What an attacker with write access does first: switch the append-only rule off.
    async fn unprotect(db: &Db) {
        match &db.pg {
            Some(pg) => {
                sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
                    .execute(pg)
                    .await
                    .expect("disable");
            }
            None => {
                for trigger in ["events_no_update", "events_no_delete"] {
                    sqlx::query(&format!("DROP TRIGGER {trigger}"))
                        .execute(&db.write)
                        .await
                        .expect("drop");
                }
            }
        }
    }

    async fn exec(db: &Db, sql: &str) {
        match &db.pg {
            Some(pg) => sqlx::query(sql).execute(pg).await.map(|_| ()),
            None => sqlx::query(sql).execute(&db.write).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn failure(db: &Db) -> Tamper {
        chain::verify(db, None)
            .await
            .expect("verify runs")
            .expect_err("tampering must be found")
    }

    #[tokio::test]
    async fn verify_names_the_position_of_an_altered_payload() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (_database, db, events) = chained(backend).await;
            unprotect(&db).await;
            let target = &events[4];
            let payload = if db.pg.is_some() {
                "'{\"Added\":{\"amount\":999}}'::jsonb"
            } else {
                "'{\"Added\":{\"amount\":999}}'"
            };
            exec(
                &db,
                &format!(
                    "UPDATE events SET payload = {payload} WHERE position = {}",
                    target.position.pos
                ),
            )
            .await;
            let tamper = failure(&db).await;
            assert!(matches!(tamper, Tamper::Altered { .. }), "{tamper}");
            assert_eq!(tamper.position(), Some(target.position));
        }
    }

    #[tokio::test]
    async fn verify_names_the_position_of_a_deleted_row() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (_database, db, events) = chained(backend).await;
            unprotect(&db).await;
            let target = &events[3];
            exec(
                &db,
                &format!(
                    "DELETE FROM events WHERE position = {}",
                    target.position.pos
                ),
            )
            .await;
            let tamper = failure(&db).await;
            assert!(matches!(tamper, Tamper::Removed { .. }), "{tamper}");
            assert_eq!(tamper.position(), Some(target.position));
        }
    }

    #[tokio::test]
    async fn verify_names_the_position_of_an_inserted_row() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (_database, db, events) = chained(backend).await;
            unprotect(&db).await;
            // Make room after the fifth event, then forge a well-hashed event into it.
            let after = &events[4].position;
            exec(
                &db,
                &format!(
                    "UPDATE events SET position = position + 1000000 WHERE position > {}",
                    after.pos
                ),
            )
            .await;
            exec(
                &db,
                "UPDATE events SET position = position - 999999 WHERE position > 1000000",
            )
            .await;
            let forged = parley_store::hash::to_hex(&parley_store::hash::stream_hash(
                &parley_store::hash::ZERO,
                "Counter",
                "forged",
                1,
                "Added",
                "2",
                "{\"Added\":{\"amount\":5}}",
                "{}",
            ));
            let (payload, metadata) = if db.pg.is_some() {
                ("'{\"Added\":{\"amount\":5}}'::jsonb", "'{}'::jsonb")
            } else {
                ("'{\"Added\":{\"amount\":5}}'", "'{}'")
            };
            let event_id = if db.pg.is_some() {
                "gen_random_uuid()".to_owned()
            } else {
                format!("'{}'", Uuid::now_v7())
            };
            exec(&db, &format!(
                "INSERT INTO events (position, txid, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) \
                 VALUES ({pos}, {tx}, {event_id}, 'Counter', 'forged', 1, 'Added', '2', {payload}, {metadata}, '{forged}')",
                pos = after.pos + 1,
                tx = after.tx,
            )).await;
            let tamper = failure(&db).await;
            assert_eq!(
                tamper.position(),
                Some(LogPosition {
                    tx: after.tx,
                    pos: after.pos + 1
                }),
                "{tamper}"
            );
        }
    }

    #[tokio::test]
    async fn verify_names_the_position_of_two_swapped_rows() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (_database, db, events) = chained(backend).await;
            unprotect(&db).await;
            let (first, second) = (&events[2].position, &events[6].position);
            exec(
                &db,
                &format!(
                    "UPDATE events SET position = -1, txid = {} WHERE position = {}",
                    second.tx, first.pos
                ),
            )
            .await;
            exec(
                &db,
                &format!(
                    "UPDATE events SET position = {}, txid = {} WHERE position = {}",
                    first.pos, first.tx, second.pos
                ),
            )
            .await;
            exec(
                &db,
                &format!(
                    "UPDATE events SET position = {} WHERE position = -1",
                    second.pos
                ),
            )
            .await;
            let tamper = failure(&db).await;
            assert_eq!(tamper.position(), Some(*first), "{tamper}");
        }
    }

    #[tokio::test]
    async fn an_anchor_must_still_be_extended_by_the_log() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (_database, db, _) = chained(backend).await;
            let head = chain::verify(&db, None)
                .await
                .expect("verify")
                .expect("ok")
                .head;
            CommandBus::<Counter>::new(&db, ())
                .execute("d", add(1, 2), &meta())
                .await
                .expect("append");
            common::readable_events(&db, 12).await;
            let later = chain::verify(&db, Some(&head))
                .await
                .expect("verify")
                .expect("the log extends the anchor");
            assert_ne!(later.head, head);
            let stranger = chain::verify(&db, Some(&"ab".repeat(32)))
                .await
                .expect("verify");
            assert!(
                matches!(stranger, Err(Tamper::AnchorMissing { .. })),
                "{stranger:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_verify_command_prints_the_head_and_fails_on_tampering() {
        for backend in backends() {
            eprintln!("backend: {backend:?}");
            let (database, db, events) = chained(backend).await;
            let run = |args: &[&str]| {
                let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
                for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")) {
                    command.env_remove(key);
                }
                command
                    .env("PARLEY_DATABASE_URL", &database.url)
                    .env(
                        "PARLEY_MASTER_KEY",
                        "cGFybGV5LXRlc3QtbWFzdGVyLWtleS0wMTIzNDU2Nzg=",
                    )
                    .env("PARLEY_LOG", "error")
                    .args(args);
                command.output().expect("parley runs")
            };
            let clean = run(&["audit", "verify"]);
            let stdout = String::from_utf8_lossy(&clean.stdout).to_string();
            assert!(clean.status.success(), "{stdout}");
            let head = stdout
                .lines()
                .find_map(|l| l.strip_prefix("head "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(head.len(), 64, "{stdout}");
            assert!(run(&["audit", "verify", "--anchor", &head])
                .status
                .success());

            unprotect(&db).await;
            exec(
                &db,
                &format!(
                    "DELETE FROM events WHERE position = {}",
                    events[1].position.pos
                ),
            )
            .await;
            let tampered = run(&["audit", "verify", "--anchor", &head]);
            assert!(!tampered.status.success());
            let report = String::from_utf8_lossy(&tampered.stdout).to_string();
            assert!(report.contains(&events[1].position.to_cursor()), "{report}");
        }
    }
}
