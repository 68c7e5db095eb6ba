//! `parley projections rebuild`: read models rebuilt beside the live ones while the
//! server serves them, interrupted rebuilds resumed or discarded, and read models as
//! they stood at a moment built into a file of their own.

use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parley_projections::{rebuild, runner, ProjectionError, Projector};
use parley_store::StoredEvent;
use serde_json::{json, Value};

use crate::helpers::*;

fn parley(app: &TestApp, args: &[&str]) -> Output {
    parley_cli(&app.database, args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every table of every projector, as sorted text.
async fn everything(db: &parley_store::Db) -> Vec<String> {
    let mut all = Vec::new();
    for projector in parley::startup::projectors() {
        all.extend(dump(db, &runner::all_tables(projector.as_ref(), db.backend)).await);
    }
    all
}

/// What the clients of the history see: conversation lists with counts, the group's
/// messages with reactions and receipts, notifications, search and moderation.
async fn answers(app: &TestApp, users: &[&Client], group: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for who in users {
        let queries = [
            ("{ conversations(first: 20) { nodes { id title kind unreadCount mentionCount myRole } } }", json!({})),
            ("query($c: ID!) { messages(conversationId: $c, last: 50) { nodes { id seq body author { username } replyTo { id } reactions { emoji count } readCount } } }", json!({ "c": group })),
            ("{ notifications(first: 20) { nodes { id read } } }", json!({})),
            ("{ searchMessages(query: \"hello\") { nodes { id } } }", json!({})),
            ("query($c: ID!) { moderationLog(conversationId: $c) { nodes { action reason } } }", json!({ "c": group })),
            ("{ me { username displayName } }", json!({})),
        ];
        for (query, variables) in queries {
            out.push(gql(app, who, query, variables).await);
        }
    }
    out
}

/// Every index of the database, as its definition, and on PostgreSQL every constraint
/// (a rebuild adds some only once its shadow is full).
async fn indexes(db: &parley_store::Db) -> Vec<String> {
    let sql = match db.backend {
        parley_store::Backend::Postgres => {
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             UNION ALL SELECT conrelid::regclass::text || ' ' || conname || ' ' || \
                 pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE connamespace = current_schema()::regnamespace ORDER BY 1"
        }
        parley_store::Backend::Sqlite => {
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY 1"
        }
    };
    sqlx::query_scalar(sql)
        .fetch_all(&db.read)
        .await
        .expect("indexes")
}

#[tokio::test]
async fn rebuild_all_while_serving_changes_no_answer_and_equals_the_live_tables() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol, group) = busy_history(&app).await;
        settled(&app).await;
        let users = [&alice, &bob, &carol];
        let before = answers(&app, &users, &group).await;
        // Carol left the group: her reads of it are refused, before and after alike.
        let answered = before.iter().filter(|a| a["errors"].is_null()).count();
        assert!(answered >= before.len() - 2, "{before:?}");
        let tables = everything(&app.state.db).await;
        let indexed = indexes(&app.state.db).await;

        // Clients keep asking for the whole rebuild.
        let app = Arc::new(app);
        let done = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let (app, done, rounds) = (app.clone(), done.clone(), rounds.clone());
            let users = [alice.token.clone(), bob.token.clone(), carol.token.clone()];
            let group = group.clone();
            let before = before.clone();
            tokio::spawn(async move {
                let clients: Vec<Client> = users
                    .into_iter()
                    .map(|token| Client {
                        id: String::new(),
                        token,
                    })
                    .collect();
                let users: Vec<&Client> = clients.iter().collect();
                while !done.load(Ordering::SeqCst) {
                    let now = answers(&app, &users, &group).await;
                    for (was, is) in before.iter().zip(&now) {
                        assert_eq!(was, is, "an answer changed during the rebuild");
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let output = tokio::task::spawn_blocking({
            let app = app.clone();
            move || parley(&app, &["projections", "rebuild", "--all"])
        })
        .await
        .expect("rebuild ran");
        done.store(true, Ordering::SeqCst);
        watcher.await.expect("no answer changed");
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(rounds.load(Ordering::SeqCst) > 0);
        for projector in parley::startup::projectors() {
            assert!(
                stderr(&output).contains(&format!("rebuild {}:", projector.name())),
                "{}",
                stderr(&output)
            );
        }

        // The rebuilt tables are the live ones, row for row, and nothing is left over.
        assert_eq!(everything(&app.state.db).await, tables);
        // Built after the replay, the indexes are those the migrations made.
        assert_eq!(indexes(&app.state.db).await, indexed);
        let status = parley(&app, &["projections", "status", "--format", "json"]);
        let status: Vec<Value> = serde_json::from_slice(&status.stdout).expect("status json");
        for entry in &status {
            assert_eq!(entry["state"], "live", "{entry}");
            assert!(entry["rebuild"].is_null(), "{entry}");
            assert_eq!(entry["lag"], 0, "{entry}");
        }
        match backend {
            Backend::Postgres => {
                let schemas: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.schemata \
                     WHERE schema_name LIKE 'parley_re%'",
                )
                .fetch_one(&app.state.db.read)
                .await
                .expect("schemas");
                assert_eq!(schemas, 0, "shadow schemas left behind");
            }
            Backend::Sqlite => {
                let left: Vec<_> = std::fs::read_dir(app.database.dir.path())
                    .expect("dir")
                    .flatten()
                    .filter(|entry| entry.file_name().to_string_lossy().contains(".rebuild-"))
                    .collect();
                assert!(left.is_empty(), "shadow files left behind: {left:?}");
            }
        }

        // The server writes into the tables it now serves.
        let sent = send_ok(&app, &bob, &group, "after the rebuild").await;
        let history = gql_ok(
            &app,
            &alice,
            "query($c: ID!) { messages(conversationId: $c, last: 1) { nodes { id body } } }",
            json!({ "c": group }),
        )
        .await;
        assert_eq!(history["data"]["messages"]["nodes"][0]["id"], sent.as_str());
        let Ok(app) = Arc::try_unwrap(app) else {
            panic!("the watcher still holds the app")
        };
        app.stop().await;
    }
}

/// A projector (the users one unless said), failing once it has seen `fail_after`
/// events: a rebuild interrupted part way.
struct Interrupted {
    inner: &'static dyn Projector,
    seen: AtomicUsize,
    fail_after: usize,
}

impl Interrupted {
    fn users(fail_after: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: &parley_projections::users::UsersProjector,
            seen: AtomicUsize::new(0),
            fail_after,
        })
    }

    fn count(&self, events: usize) -> Result<(), ProjectionError> {
        if self.seen.fetch_add(events, Ordering::SeqCst) + events > self.fail_after {
            return Err(ProjectionError::Rebuild("interrupted".to_owned()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Projector for Interrupted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn backend_tables(&self, backend: parley_store::Backend) -> &'static [&'static str] {
        self.inner.backend_tables(backend)
    }
    fn write_indexes(&self) -> &'static [&'static str] {
        self.inner.write_indexes()
    }
    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.count(1)?;
        self.inner.apply(conn, event).await
    }
    fn loads(&self) -> bool {
        self.inner.loads()
    }
    async fn load_all(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        self.count(events.len())?;
        self.inner.load_all(conn, events).await
    }
}

/// Whether a rebuild stopped at the failure `Interrupted` injects (and not, say, at a
/// claim still held by the rebuild before it).
fn interrupted<T>(result: &Result<T, ProjectionError>) -> bool {
    matches!(result, Err(ProjectionError::Rebuild(message)) if message == "interrupted")
}

/// The users projector, stopping at its first event until released: a rebuild that is
/// running, with its claim on the projector held.
struct Held {
    inner: &'static dyn Projector,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
    holding: AtomicBool,
}

impl Held {
    fn users() -> Arc<Self> {
        Arc::new(Self {
            inner: &parley_projections::users::UsersProjector,
            reached: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
            holding: AtomicBool::new(true),
        })
    }
}

#[async_trait::async_trait]
impl Projector for Held {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if self.holding.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        self.inner.apply(conn, event).await
    }
}

/// One rebuild per projector at a time, across processes: while one runs, a second
/// rebuild or a discard of it is refused in one line and changes nothing. On SQLite
/// both used to fail with the database's own "database is locked", three times over.
#[tokio::test]
async fn a_second_rebuild_or_a_discard_of_a_running_one_is_refused() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        for name in ["ann", "ben", "cal"] {
            user(&app, name).await;
        }
        settled(&app).await;
        let tables = dump(&app.state.db, &["users"]).await;
        let held = Held::users();
        let running = tokio::spawn({
            let (state, held) = (app.state.clone(), held.clone());
            async move {
                rebuild::rebuild_in_batches(&state.db, held, 2, &mut |_| {})
                    .await
                    .map(|_| ())
            }
        });
        held.reached.notified().await;
        for args in [
            &["projections", "rebuild", "users"][..],
            &["projections", "rebuild", "users", "--discard"],
        ] {
            let output = parley(&app, args);
            assert!(!output.status.success(), "{args:?} succeeded");
            assert_eq!(
                stderr(&output).trim_end(),
                "parley: a rebuild of users is already running",
                "{args:?}"
            );
        }
        held.release.notify_one();
        running
            .await
            .expect("join")
            .expect("the running rebuild completes");
        assert_eq!(dump(&app.state.db, &["users"]).await, tables);
        app.stop().await;
    }
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_or_is_discarded() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        for name in ["ann", "ben", "cal", "dot", "eve", "fay"] {
            user(&app, name).await;
        }
        settled(&app).await;
        let db = &app.state.db;
        let tables = dump(db, &["users"]).await;
        let failed = rebuild::rebuild_in_batches(db, Interrupted::users(4), 2, &mut |_| {}).await;
        assert!(interrupted(&failed), "the injected failure stops it");

        let status = parley(&app, &["projections", "status", "--format", "json"]);
        let status: Vec<Value> = serde_json::from_slice(&status.stdout).expect("status json");
        let users = status
            .iter()
            .find(|entry| entry["name"] == "users")
            .expect("users");
        assert_eq!(users["state"], "rebuilding", "{users}");
        assert!(
            users["rebuild"]["applied"].as_u64().expect("applied") >= 2,
            "{users}"
        );
        // Operators see it too: in /metrics and /readyz.
        let page = crate::metrics::scrape(&app).await;
        let share = crate::metrics::value(
            &page,
            "parley_projector_rebuild_progress_ratio",
            &[("projector", "users")],
        )
        .expect("rebuild progress series");
        assert!(share > 0.0 && share < 1.0, "{share}");
        let state = [("projector", "users"), ("state", "rebuilding")];
        assert_eq!(
            crate::metrics::value(&page, "parley_projector_state", &state),
            Some(1.0)
        );
        let ready = app.readyz().await;
        let listed = ready["projectors"].as_array().expect("projectors");
        let users_ready = listed.iter().find(|p| p["name"] == "users").expect("users");
        assert_eq!(users_ready["state"], "rebuilding", "{ready}");

        let output = parley(&app, &["projections", "rebuild", "users"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stderr(&output).contains("resumed"), "{}", stderr(&output));
        assert_eq!(dump(db, &["users"]).await, tables);

        // Interrupted again, then discarded: the live tables never changed.
        let failed = rebuild::rebuild_in_batches(db, Interrupted::users(4), 2, &mut |_| {}).await;
        assert!(interrupted(&failed), "{:?}", failed.as_ref().err());
        let output = parley(&app, &["projections", "rebuild", "users", "--discard"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(stderr(&output).contains("discarded"), "{}", stderr(&output));
        let output = parley(&app, &["projections", "rebuild", "users", "--discard"]);
        assert!(
            stderr(&output).contains("nothing to discard"),
            "{}",
            stderr(&output)
        );
        let report = rebuild::report(db, "users").await.expect("report");
        assert!(report.is_none(), "{report:?}");
        assert_eq!(dump(db, &["users"]).await, tables);
        app.stop().await;
    }
}

/// Messages, notifications, the audit chain and read markers load in bulk on PostgreSQL
/// (`COPY`, which has no `ON CONFLICT`, for rows new to a table): a rebuild stopped part
/// way and resumed must neither repeat nor lose a row.
#[tokio::test]
async fn an_interrupted_bulk_loaded_rebuild_resumes_to_the_same_tables() {
    let loading: [&'static dyn Projector; 4] = [
        &parley_projections::messages::MessagesProjector,
        &parley_projections::notifications::NotificationsProjector,
        &parley_projections::chain::AuditChainProjector,
        &parley_projections::unread::UnreadProjector,
    ];
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (_, _, _, _) = busy_history(&app).await;
        settled(&app).await;
        let db = &app.state.db;
        let total = parley_store::log::count_after(db, parley_store::log::LogPosition::START)
            .await
            .expect("count") as usize;
        for projector in loading {
            let name = projector.name();
            assert!(projector.loads(), "{name} loads its rebuilds in bulk");
            let tables = dump(db, &runner::all_tables(projector, db.backend)).await;
            assert!(!tables.is_empty(), "{name}: the history gives it rows");
            let stopping = Arc::new(Interrupted {
                inner: projector,
                seen: AtomicUsize::new(0),
                fail_after: total / 2,
            });
            let failed = rebuild::rebuild_in_batches(db, stopping, 3, &mut |_| {}).await;
            assert!(
                interrupted(&failed),
                "{name}: the injected failure stops it: {:?}",
                failed.as_ref().err()
            );
            let report = rebuild::report(db, name)
                .await
                .expect("report")
                .expect("an interrupted rebuild");
            assert!(
                report.applied > 0 && report.applied < total as u64,
                "{name}: {report:?}"
            );

            let output = parley(&app, &["projections", "rebuild", name]);
            assert!(output.status.success(), "{name}: {}", stderr(&output));
            assert!(stderr(&output).contains("resumed"), "{}", stderr(&output));
            assert_eq!(
                dump(db, &runner::all_tables(projector, db.backend)).await,
                tables,
                "{name}"
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn read_models_built_until_a_moment_equal_the_live_ones_then() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let clock = TestClock::new();
        let database = TestDatabase::new(backend).await;
        let app = spawn_app_with(database, |_| {}, clock.clone()).await;
        let (alice, bob, _carol, group) = busy_history(&app).await;
        settled(&app).await;
        let db = &app.state.db;
        let mut then = Vec::new();
        for projector in parley::startup::projectors() {
            then.extend(dump(db, projector.tables()).await);
        }
        let moment = parley::clock::Clock::now(clock.as_ref()) + time::Duration::minutes(30);
        clock.advance(time::Duration::hours(1));

        // Later: more posts, an edit, a deletion, a ban.
        let later = send_ok(&app, &bob, &group, "later news").await;
        gql_ok(
            &app,
            &bob,
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"later, edited\") { id } }",
            json!({ "m": later }),
        )
        .await;
        send_ok(&app, &alice, &group, "still later").await;
        gql_ok(&app, &alice, "mutation($c: ID!, $u: ID!) { banMember(conversationId: $c, userId: $u, reason: \"spam\") { id } }", json!({ "c": group, "u": bob.id })).await;
        settled(&app).await;

        let dir = tempfile::tempdir().expect("dir");
        let into = dir.path().join("then.sqlite");
        let at = parley_store::format_time(moment);
        let output = parley(
            &app,
            &[
                "projections",
                "rebuild",
                "--until",
                &at,
                "--into",
                &into.to_string_lossy(),
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let file = parley_store::Db::open_sqlite_file(&into)
            .await
            .expect("open");
        let mut built = Vec::new();
        for projector in parley::startup::projectors() {
            built.extend(dump(&file, projector.tables()).await);
        }
        file.close().await;
        assert_eq!(built, then);
        let now = everything(db).await;
        assert_ne!(built.len(), 0);
        assert_ne!(now, then, "the later events changed the live read models");
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_rebuild_requests_fail_with_one_line() {
    let app = spawn_app(Backend::Sqlite).await;
    let cases: [(&[&str], &str); 5] = [
        (
            &["projections", "rebuild", "nope"],
            "no projector is called \"nope\"",
        ),
        (&["projections", "rebuild"], "name the projectors"),
        (
            &["projections", "rebuild", "users", "--all"],
            "cannot be used with",
        ),
        (
            &[
                "projections",
                "rebuild",
                "--until",
                "yesterday",
                "--into",
                "x.sqlite",
            ],
            "not an RFC 3339 time",
        ),
        (
            &[
                "projections",
                "rebuild",
                "--until",
                "2026-01-01T00:00:00Z",
                "--into",
                "/nonexistent/dir/x.sqlite",
            ],
            "cannot build /nonexistent/dir/x.sqlite",
        ),
    ];
    for (args, expected) in cases {
        let output = parley(&app, args);
        let text = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{args:?}: {text}");
    }
    app.stop().await;
}

/// An analyst's file never lands on Parley's own: `--into` or `--output` naming the live
/// SQLite database, a file SQLite or a rebuild keeps beside it, or the keys in the data
/// directory is refused before anything is written, and `--into` never replaces a file.
/// Before, `--into` the live database renamed the built file over it: the log was gone.
#[tokio::test]
async fn an_analysts_file_never_replaces_the_live_database_or_an_existing_file() {
    let app = spawn_app(Backend::Sqlite).await;
    let alice = user(&app, "alice").await;
    let bob = user(&app, "bob").await;
    let group = create_group(&app, &alice, "files", &[&bob]).await;
    send_ok(&app, &bob, &group, "kept").await;
    settled(&app).await;
    let db = &app.state.db;
    let before = everything(db).await;
    let log = || async {
        parley_store::log::count_after(db, parley_store::LogPosition::START)
            .await
            .expect("count")
    };
    let events = log().await;

    let data = app.database.dir.path().to_path_buf();
    let live = data.join("parley.db");
    let elsewhere = tempfile::tempdir().expect("dir");
    let existing = elsewhere.path().join("kept.sqlite");
    std::fs::write(&existing, "an analyst's earlier file").expect("write");
    let path = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let until = |into: String| -> Vec<String> {
        [
            "projections",
            "rebuild",
            "--until",
            "2030-01-01T00:00:00Z",
            "--into",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([into])
        .collect()
    };
    let export = |output: String| -> Vec<String> {
        ["export", "events", "--format", "jsonl", "--output"]
            .map(str::to_owned)
            .into_iter()
            .chain([output])
            .collect()
    };
    let own = "is one of Parley's own files";
    let elsewhere_dir = elsewhere.path().to_path_buf();
    // (arguments, the data directory the command is given, what it must say)
    let cases = [
        (until(path(&live)), &data, own),
        (export(path(&live)), &data, own),
        (export(path(&data.join("master-key"))), &data, own),
        (export(path(&data.join("parley.db-wal"))), &data, own),
        (
            until(path(&existing)),
            &data,
            "exists: --into makes a new file",
        ),
        // The database where the data directory is not: named by its own path.
        (until(path(&live)), &elsewhere_dir, own),
        (
            export(format!(
                "{}/../{}/parley.db-wal",
                data.display(),
                data.file_name().expect("name").to_string_lossy()
            )),
            &elsewhere_dir,
            own,
        ),
        (
            export(path(&data.join("parley.db.rebuild-messages"))),
            &elsewhere_dir,
            own,
        ),
    ];
    for (args, data_dir, expected) in cases {
        let output = parley_command(&app.database)
            .env("PARLEY_DATA_DIR", data_dir)
            .args(&args)
            .output()
            .expect("parley runs");
        let text = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{args:?}: {text}");
    }
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "an analyst's earlier file"
    );
    assert_eq!(log().await, events, "the log is whole");
    assert_eq!(
        everything(db).await,
        before,
        "the read models are as they were"
    );
    let written: Vec<_> = std::fs::read_dir(&data)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.contains("partial") || name.contains("rebuild-"))
        .collect();
    assert!(
        written.is_empty(),
        "left in the data directory: {written:?}"
    );
    // And the same commands write where they may.
    let into = elsewhere.path().join("then.sqlite");
    let output = parley(
        &app,
        &until(path(&into))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(into.exists());
    app.stop().await;
}

#[tokio::test]
async fn a_projector_of_another_version_is_rebuilt_beside_its_tables_at_start() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, _bob, _carol, group) = busy_history(&app).await;
        settled(&app).await;
        let tables = everything(&app.state.db).await;
        let before = answers(&app, &[&alice], &group).await;
        let database = app.stop().await;

        // As if the tables had been built by an earlier release's projectors.
        let db = database.connect().await;
        sqlx::query("UPDATE projection_checkpoints SET version = version - 1 WHERE name IN ('conversations', 'messages')")
            .execute(&db.write)
            .await
            .expect("older versions");
        db.close().await;

        let app = spawn_app_on(database, |_| {}).await;
        // Served from the old tables meanwhile, and afterwards from the new ones.
        assert_eq!(answers(&app, &[&alice], &group).await, before);
        let every = parley::startup::projectors();
        let mut waited = 0;
        loop {
            let status = runner::status(&app.state.db, &every).await.expect("status");
            if status.iter().all(|entry| entry.state == "live") {
                break;
            }
            waited += 1;
            assert!(waited < 600, "still rebuilding: {status:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let versions: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, version FROM projection_checkpoints ORDER BY name")
                .fetch_all(&app.state.db.read)
                .await
                .expect("versions");
        for (name, version) in versions {
            let projector = every.iter().find(|p| p.name() == name).expect("known");
            assert_eq!(version, projector.version(), "{name}");
        }
        assert_eq!(everything(&app.state.db).await, tables);
        assert_eq!(answers(&app, &[&alice], &group).await, before);
        app.stop().await;
    }
}

/// Read models fold a batch's events per row before writing (a reaction added, removed
/// and added again is one row; a marker read forward then set back is one upsert).
/// Whatever the batch size, the outcome must be what one event at a time gives.
#[tokio::test]
async fn one_batch_or_one_event_at_a_time_build_the_same_read_models() {
    const REACT: &str =
        "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }";
    const UNREACT: &str =
        "mutation($m: ID!, $e: String!) { removeReaction(messageId: $m, emoji: $e) { id } }";
    const EDIT: &str =
        "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }";
    const MARK: &str =
        "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }";
    const UNMARK: &str =
        "mutation($c: ID!, $m: ID!) { markUnread(conversationId: $c, messageId: $m) { id } }";
    const LEVEL: &str = "mutation($c: ID!, $l: NotificationLevel!) { setNotificationLevel(conversationId: $c, level: $l) { id } }";
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let group = create_group(&app, &alice, "Folded", &[&bob, &carol]).await;
        let first = send_ok(&app, &bob, &group, "first").await;
        // Replies counted on their parent within a batch and across batches.
        const REPLY: &str = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }";
        let reply = |to: &str, body: &str| json!({ "i": { "conversationId": group, "body": body, "replyToId": to } });
        gql_ok(&app, &carol, REPLY, reply(&first, "re first")).await;
        let steps = [
            (&alice, REACT, json!({ "m": first, "e": "👍" })),
            (&alice, UNREACT, json!({ "m": first, "e": "👍" })),
            (&alice, REACT, json!({ "m": first, "e": "👍" })),
            (&carol, REACT, json!({ "m": first, "e": "🎉" })),
            (&carol, UNREACT, json!({ "m": first, "e": "🎉" })),
            (&bob, EDIT, json!({ "m": first, "b": "first, edited" })),
            (
                &bob,
                EDIT,
                json!({ "m": first, "b": "first, edited again for @carol" }),
            ),
            (&carol, LEVEL, json!({ "c": group, "l": "NONE" })),
            (&alice, MARK, json!({ "c": group, "m": first })),
            (&alice, UNMARK, json!({ "c": group, "m": first })),
        ];
        for (who, query, variables) in steps {
            ok(&gql(&app, who, query, variables).await);
        }
        let second = send_ok(&app, &bob, &group, "second @carol @alice").await;
        gql_ok(&app, &alice, REPLY, reply(&first, "re first, again")).await;
        gql_ok(&app, &carol, REPLY, reply(&second, "re second")).await;
        let steps = [
            (&alice, REACT, json!({ "m": second, "e": "👀" })),
            (&bob, EDIT, json!({ "m": second, "b": "second, edited" })),
            (&carol, LEVEL, json!({ "c": group, "l": "ALL" })),
            (&carol, REACT, json!({ "m": second, "e": "👀" })),
            (&alice, MARK, json!({ "c": group, "m": second })),
            (&alice, MARK, json!({ "c": group, "m": first })),
            (
                &bob,
                "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }",
                json!({ "m": second }),
            ),
            (
                &carol,
                "mutation($c: ID!) { leaveConversation(conversationId: $c) }",
                json!({ "c": group }),
            ),
        ];
        for (who, query, variables) in steps {
            ok(&gql(&app, who, query, variables).await);
        }
        const UPDATE: &str =
            "mutation($i: UpdateConversationInput!) { updateConversation(input: $i) { id } }";
        for input in [
            json!({ "conversationId": group, "title": "Folded once" }),
            json!({ "conversationId": group, "description": "Kept" }),
            json!({ "conversationId": group, "title": "Folded twice" }),
        ] {
            gql_ok(&app, &alice, UPDATE, json!({ "i": input })).await;
        }
        let dave = user(&app, "dave").await;
        const INVITE: &str =
            "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }";
        let declined = gql_ok(&app, &alice, INVITE, json!({ "c": group, "u": dave.id })).await;
        gql_ok(
            &app,
            &dave,
            "mutation($i: ID!) { declineInvitation(invitationId: $i) { id } }",
            json!({ "i": text(&declined, "/data/inviteMember/id") }),
        )
        .await;
        let invite = gql_ok(&app, &alice, INVITE, json!({ "c": group, "u": carol.id })).await;
        gql_ok(
            &app,
            &carol,
            "mutation($i: ID!) { acceptInvitation(invitationId: $i) { id } }",
            json!({ "i": text(&invite, "/data/inviteMember/id") }),
        )
        .await;
        send_ok(&app, &alice, &group, "welcome back @carol").await;

        // An expiry and an erasure, each between events that touch the same rows.
        let erin = user(&app, "erin").await;
        let kept = create_group(&app, &alice, "Kept short", &[&bob, &erin]).await;
        gql_ok(
            &app,
            &alice,
            "mutation($c: ID!) { setRetention(conversationId: $c, days: 1) { id } }",
            json!({ "c": kept }),
        )
        .await;
        let old = send_ok(&app, &bob, &kept, "old news @erin").await;
        gql_ok(&app, &erin, REACT, json!({ "m": old, "e": "👍" })).await;
        gql_ok(
            &app,
            &bob,
            EDIT,
            json!({ "m": old, "b": "old news, edited" }),
        )
        .await;
        let said = send_ok(&app, &erin, &kept, "erin was here").await;
        gql_ok(
            &app,
            &erin,
            EDIT,
            json!({ "m": said, "b": "erin was here, twice" }),
        )
        .await;
        let later = time::OffsetDateTime::now_utc() + time::Duration::days(3);
        let (expired, _) = app.state.privacy.expire(later, None).await.expect("expire");
        assert_eq!(expired, 1);
        send_ok(&app, &bob, &kept, "after the expiry @erin").await;
        let reply = send_ok(&app, &erin, &kept, "erin again").await;
        gql_ok(&app, &bob, REACT, json!({ "m": reply, "e": "🎉" })).await;
        gql_ok(
            &app,
            &erin,
            "mutation { deleteAccount(password: \"correct horse battery\") }",
            json!({}),
        )
        .await;
        send_ok(&app, &bob, &kept, "after the erasure").await;
        // Text that means something to COPY's format (a PostgreSQL rebuild loads new
        // messages and earlier versions with it) comes back as it was written.
        let odd = send_ok(
            &app,
            &bob,
            &kept,
            "tab\there\r\nline \\ back\\slash \\N \\. ünïcødé 👍",
        )
        .await;
        gql_ok(&app, &bob, EDIT, json!({ "m": odd, "b": "\\N\tedited\\" })).await;
        settled(&app).await;
        let live = everything(&app.state.db).await;
        let dumped = live.join("\n");
        for body in [
            "\\N\tedited\\",
            "tab\there\nline \\ back\\slash \\N \\. ünïcødé 👍",
        ] {
            let cell = format!("{:?}", Some(body));
            assert!(dumped.contains(&cell), "{cell} in {dumped}");
        }

        let projectors = parley::startup::projectors();
        for batch in [1_000_000, 1] {
            rebuild::rebuild_together(&app.state.db, &projectors, batch, &mut |_| {})
                .await
                .expect("rebuilt");
            assert_eq!(
                everything(&app.state.db).await,
                live,
                "batches of {batch} events"
            );
        }
        app.stop().await;
    }
}
