//! `parley seed`: a small seeded history holds what was asked for — every kind of
//! conversation and of activity — in read models that are up to date when it exits,
//! with an intact hash chain; seeded users sign in with the documented password; the
//! same seed writes the same events; bad input fails with one line, writing nothing.

use std::collections::BTreeMap;
use std::process::Output;

use parley_store::Db;
use serde_json::json;
use sqlx::Row as _;

use crate::common::readable_events;
use crate::helpers::*;

const SEED: [&str; 9] = [
    "seed",
    "--users",
    "5",
    "--conversations",
    "4",
    "--messages",
    "200",
    "--seed",
    "7",
];

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Seeds `database` with [`SEED`]; the number of events the summary reports.
fn seed(database: &TestDatabase) -> usize {
    let output = parley_cli(database, &SEED);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = stdout(&output);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(
        summary.starts_with("seed 7: 5 users, 4 conversations (")
            && summary.contains(", 200 messages, "),
        "{summary}"
    );
    assert!(
        stderr(&output).contains("parley-seed"),
        "{}",
        stderr(&output)
    );
    let events = summary
        .split(" events in ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {summary}"));
    assert!(events > 200, "{summary}");
    events
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&db.read)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// How many events of each type the log holds, once all `events` are readable.
async fn event_types(db: &Db, events: usize) -> BTreeMap<String, usize> {
    let log = readable_events(db, events).await;
    assert_eq!(log.len(), events);
    let mut types = BTreeMap::new();
    for event in log {
        *types.entry(event.event_type).or_default() += 1;
    }
    types
}

#[tokio::test]
async fn a_seeded_history_has_every_kind_of_conversation_and_activity_and_its_users_sign_in() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let events = seed(&database);

        let verify = parley_cli(&database, &["audit", "verify"]);
        assert!(verify.status.success(), "{}", stdout(&verify));
        assert!(
            stdout(&verify).starts_with(&format!("ok: {events} events verified")),
            "{}",
            stdout(&verify)
        );

        // The command caught the read models up before it exited.
        let db = database.connect().await;
        let kinds: BTreeMap<String, i64> =
            sqlx::query("SELECT kind, COUNT(*) FROM conversations GROUP BY kind")
                .fetch_all(&db.read)
                .await
                .expect("kinds")
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
        assert_eq!(
            kinds.keys().map(String::as_str).collect::<Vec<_>>(),
            ["CHANNEL", "DIRECT", "GROUP"]
        );
        assert_eq!(kinds.values().sum::<i64>(), 4);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await, 5);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM messages").await, 200);
        for (what, sql) in [
            (
                "replies",
                "SELECT COUNT(*) FROM messages WHERE reply_to_id IS NOT NULL",
            ),
            (
                "edited",
                "SELECT COUNT(*) FROM messages WHERE edited_at IS NOT NULL",
            ),
            ("deleted", "SELECT COUNT(*) FROM messages WHERE deleted = 1"),
            (
                "mentions",
                "SELECT COUNT(*) FROM messages WHERE mentions <> '[]'",
            ),
            (
                "reacted to",
                "SELECT COUNT(DISTINCT message_id) FROM reactions",
            ),
            ("read markers", "SELECT COUNT(*) FROM read_markers"),
        ] {
            assert!(count(&db, sql).await > 0, "no messages {what}");
        }
        db.close().await;

        let app = spawn_app_on(database, |_| {}).await;
        let login = app.login("ada1_s7", "parley-seed").await;
        let token = text(&login, "/data/login/accessToken").to_owned();
        let me = app
            .graphql(
                "{ me { username } conversations(first: 50) { nodes { kind } } }",
                json!({}),
                Some(&token),
            )
            .await;
        assert_eq!(text(ok(&me), "/me/username"), "ada1_s7");
        let wrong = app.login("ada1_s7", "not the password").await;
        assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"));
        app.stop().await;
    }
}

#[tokio::test]
async fn the_same_seed_writes_the_same_events_and_cannot_be_written_twice_into_one_database() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let (first, second) = (
            TestDatabase::new(backend).await,
            TestDatabase::new(backend).await,
        );
        let events = seed(&first);
        assert_eq!(seed(&second), events);
        let (a, b) = (first.connect().await, second.connect().await);
        assert_eq!(event_types(&a, events).await, event_types(&b, events).await);
        let bodies = |db: Db| async move {
            let bodies: Vec<Option<String>> =
                sqlx::query_scalar("SELECT body FROM messages ORDER BY body")
                    .fetch_all(&db.read)
                    .await
                    .expect("bodies");
            db.close().await;
            bodies
        };
        assert_eq!(bodies(a).await, bodies(b).await);

        // The seed's usernames are taken now.
        let again = parley_cli(&first, &SEED);
        assert!(!again.status.success());
        let message = stderr(&again);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with("parley: ") && message.contains("--seed"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn bad_seed_requests_fail_with_one_line_and_write_nothing() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let base = ["seed", "--conversations", "4", "--messages", "200"];
    for extra in [
        &["--users", "0"][..],
        &["--users", "2"],
        &["--users", "-1"],
        &["--users", "5", "--seed", "x"],
        &[],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let output = parley_cli(&database, &args);
        assert!(!output.status.success(), "{args:?}");
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with("parley: "), "{args:?}: {message}");
    }
    let zero = parley_cli(
        &database,
        &[
            "seed",
            "--users",
            "0",
            "--conversations",
            "1",
            "--messages",
            "1",
        ],
    );
    assert!(stderr(&zero).contains("--users"), "{}", stderr(&zero));
    assert!(!database.dir.path().join("parley.db").exists());
}
