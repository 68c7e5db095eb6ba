//! Erasure by crypto-shredding: `deleteAccount` and `parley users erase` leave no
//! plaintext of the user anywhere (API, database files or dump, search, blobs, rebuilds,
//! exports, audit replay), keep the hash chain verifying and moderation history
//! intact, and stay in force when a backup from before them is restored.

use std::sync::Arc;

use parley::clock::Clock as _;

use serde_json::{json, Value};

use crate::attachments::{objects, png, setups, spawn, upload, Store};
use crate::helpers::*;

/// What only the erased user ever wrote; none of it may survive anywhere.
const SECRETS: [&str; 6] = [
    HANDLE,                   // username
    "Zebulon Quackenbush",    // display name
    "xylophonequokka",        // a posted body
    "marmaladewombat",        // the body an edit replaced
    "kumquatnarwhal",         // the body after the edit
    "alicesecretholiday.png", // an attachment's filename
];
/// The erased user's username.
const HANDLE: &str = "quixoticzebra";
/// What another user wrote; all of it stays.
const KEPT: &str = "bobkeepsthisbanana";

const HISTORY: &str = "query($c: ID!) { messages(conversationId: $c, last: 50) { nodes { id seq body deleted erased replyCount \
    author { id username displayName deleted } attachments { id } edits { body } } } }";

async fn register_as(app: &TestApp, username: &str, display_name: &str) -> Client {
    let registered = app
        .graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }",
            json!({ "input": { "username": username, "password": "correct horse battery", "displayName": display_name } }),
            None,
        )
        .await;
    Client {
        id: text(&registered, "/data/register/user/id").to_owned(),
        token: text(&registered, "/data/register/accessToken").to_owned(),
    }
}

/// Alice (the user to erase) and Bob in a group: posts, an edit, a mention, a reply, an
/// attachment, and a moderation action against Alice. Returns (alice, bob, group,
/// alice's upload id).
async fn history(app: &TestApp) -> (Client, Client, String, String) {
    let alice = register_as(app, HANDLE, SECRETS[0]).await;
    let bob = user(app, "bob").await;
    let group = create_group(app, &bob, "team", &[&alice]).await;
    let first = send_ok(app, &alice, &group, &format!("{} to @bob", SECRETS[1])).await;
    let edited = send_ok(app, &alice, &group, SECRETS[2]).await;
    gql_ok(
        app,
        &alice,
        "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }",
        json!({ "m": edited, "b": SECRETS[3] }),
    )
    .await;
    let completed = upload(app, &alice, &group, SECRETS[4], "image/png", png(64, 48)).await;
    let upload_id = text(&completed, "/data/completeUpload/id").to_owned();
    gql_ok(
        app,
        &alice,
        SEND_WITH_FILE,
        json!({ "i": { "conversationId": group, "body": "see attached", "attachmentIds": [upload_id] } }),
    )
    .await;
    gql_ok(
        app,
        &bob,
        SEND,
        json!({ "i": { "conversationId": group, "body": KEPT, "replyToId": first } }),
    )
    .await;
    gql_ok(
        app,
        &bob,
        "mutation($c: ID!, $u: ID!) { muteMember(conversationId: $c, userId: $u, reason: \"calm down\") { id } }",
        json!({ "c": group, "u": alice.id }),
    )
    .await;
    (alice, bob, group, upload_id)
}

const SEND_WITH_FILE: &str = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }";

/// Every byte the database holds: the SQLite file and its journal after a checkpoint,
/// or every row of every PostgreSQL table as text.
async fn database_bytes(app: &TestApp) -> Vec<u8> {
    let db = &app.state.db;
    match app.database.backend {
        Backend::Sqlite => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&db.write)
                .await
                .expect("checkpoint");
            let mut bytes = Vec::new();
            for suffix in ["", "-wal"] {
                let path = app.database.dir.path().join(format!("parley.db{suffix}"));
                if let Ok(file) = std::fs::read(path) {
                    bytes.extend(file);
                }
            }
            bytes
        }
        Backend::Postgres => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
            .fetch_all(&db.read)
            .await
            .expect("tables");
            assert!(tables.len() > 10, "{tables:?}");
            let mut bytes = Vec::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&db.read)
                        .await
                        .expect("dump");
                for row in rows {
                    bytes.extend(row.into_bytes());
                }
            }
            bytes
        }
    }
}

/// The bodies of the messages `who` finds searching for `query`.
async fn search(app: &TestApp, who: &Client, query: &str) -> Vec<String> {
    let found = gql_ok(
        app,
        who,
        "query($q: String!) { searchMessages(query: $q) { nodes { body } } }",
        json!({ "q": query }),
    )
    .await;
    found["data"]["searchMessages"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| node["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes
        .windows(text.len())
        .any(|window| window == text.as_bytes())
}

fn assert_none_of(what: &str, bytes: &[u8], texts: &[&str]) {
    for text in texts {
        assert!(!holds(bytes, text), "{what} still holds {text:?}");
    }
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    assert_none_of(what, bytes, &SECRETS);
}

fn assert_kept(what: &str, bytes: &[u8]) {
    assert!(holds(bytes, KEPT), "{what} lost another user's message");
}

/// What Bob sees of the group: Alice's messages as erased tombstones in place, his own
/// untouched.
async fn assert_erased_in_place(app: &TestApp, bob: &Client, group: &str, alice: &Client) {
    let seen = gql_ok(app, bob, HISTORY, json!({ "c": group })).await;
    let nodes = seen["data"]["messages"]["nodes"]
        .as_array()
        .expect("nodes")
        .clone();
    let seqs: Vec<i64> = nodes.iter().filter_map(|n| n["seq"].as_i64()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "{seen}");
    for node in &nodes[..3] {
        assert_eq!(node["erased"], true, "{node}");
        assert_eq!(node["body"], Value::Null, "{node}");
        assert_eq!(node["edits"], json!([]), "{node}");
        assert_eq!(node["author"]["id"], alice.id.as_str());
        assert_eq!(node["author"]["deleted"], true);
        assert_eq!(node["author"]["displayName"], "");
        assert_eq!(node["author"]["username"], "");
    }
    assert_eq!(nodes[0]["replyCount"], 1, "the thread stays: {seen}");
    assert_eq!(nodes[3]["body"], KEPT);
    assert_eq!(nodes[3]["erased"], false);
    let bytes = serde_json::to_vec(&seen).expect("json");
    assert_no_secret("the API", &bytes);

    for secret in SECRETS {
        let word = secret.split('.').next().unwrap_or(secret);
        assert_eq!(
            search(app, bob, word).await,
            Vec::<String>::new(),
            "{secret}"
        );
    }
    assert_eq!(search(app, bob, KEPT).await, vec![KEPT.to_owned()]);
    let users = gql_ok(
        app,
        bob,
        "query($q: String!) { searchUsers(query: $q) { nodes { id } } }",
        json!({ "q": HANDLE }),
    )
    .await;
    assert_eq!(users["data"]["searchUsers"]["nodes"], json!([]));

    // Moderation history keeps every action, with the user's id.
    let log = gql_ok(
        app,
        bob,
        "query($c: ID!) { moderationLog(conversationId: $c) { nodes { action target { id deleted } reason } } }",
        json!({ "c": group }),
    )
    .await;
    let action = &log["data"]["moderationLog"]["nodes"][0];
    assert_eq!(action["action"], "MUTE", "{log}");
    assert_eq!(action["target"]["id"], alice.id.as_str());
    assert_eq!(action["target"]["deleted"], true);
}

/// Everything outside the API: the database, the blobs, the chain, a full rebuild, an
/// export and the audit replay.
async fn assert_nothing_left(app: &TestApp, group: &str, upload_id: &str) {
    let bytes = database_bytes(app).await;
    assert_no_secret("the database", &bytes);
    assert_kept("the database", &bytes);
    assert!(
        !objects(app).await.iter().any(|key| key.contains(upload_id)),
        "an object of the erased user is left: {:?}",
        objects(app).await
    );

    let verified = parley_cli(&app.database, &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let export = app.database.dir.path().join("export.jsonl");
    let exported = parley_cli(
        &app.database,
        &[
            "export",
            "events",
            "--format",
            "jsonl",
            "--output",
            export.to_str().expect("path"),
        ],
    );
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let exported = std::fs::read(&export).expect("export");
    assert_no_secret("the export", &exported);
    assert_kept("the export", &exported);
    let replay = parley_cli(&app.database, &["audit", "replay", "--conversation", group]);
    assert!(replay.status.success());
    assert_no_secret("the audit replay", &replay.stdout);
    let replay = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.contains("(erased) MEMBER"), "{replay}");
}

#[tokio::test]
async fn an_erased_account_leaves_no_plaintext_anywhere_and_the_log_still_verifies() {
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let app = spawn(backend, store, Arc::new(parley::clock::SystemClock)).await;
        let (alice, bob, group, upload_id) = history(&app).await;
        assert!(!objects(&app).await.is_empty());

        let wrong = gql(
            &app,
            &alice,
            "mutation { deleteAccount(password: \"not it\") }",
            json!({}),
        )
        .await;
        assert_eq!(error_code(&wrong), Some("BAD_USER_INPUT"), "{wrong}");
        assert_eq!(error_field(&wrong), Some("password"));

        let erased = gql(
            &app,
            &alice,
            "mutation { deleteAccount(password: \"correct horse battery\") }",
            json!({}),
        )
        .await;
        assert_eq!(ok(&erased)["deleteAccount"], true);
        // Her sessions ended with it, and she cannot sign in again.
        let me = gql(&app, &alice, "query { me { id } }", json!({})).await;
        assert_eq!(error_code(&me), Some("UNAUTHENTICATED"), "{me}");
        let login = app.login(HANDLE, "correct horse battery").await;
        assert_eq!(error_code(&login), Some("UNAUTHENTICATED"), "{login}");

        assert_erased_in_place(&app, &bob, &group, &alice).await;
        assert_nothing_left(&app, &group, &upload_id).await;

        // A full rebuild from the log builds the same erased read models.
        let database = app.stop().await;
        let rebuilt = parley_cli(&database, &["projections", "rebuild", "--all"]);
        assert!(
            rebuilt.status.success(),
            "{}",
            String::from_utf8_lossy(&rebuilt.stderr)
        );
        let app = spawn_app_on(database, |_| {}).await;
        assert_erased_in_place(&app, &bob, &group, &alice).await;
        assert_no_secret("the rebuilt database", &database_bytes(&app).await);
        app.stop().await;
    }
}

#[tokio::test]
async fn an_operator_erases_from_the_cli_and_a_restored_backup_is_erased_again() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn(
            backend,
            Store::Embedded,
            Arc::new(parley::clock::SystemClock),
        )
        .await;
        let (alice, bob, group, upload_id) = history(&app).await;
        let database = app.stop().await;
        database.back_up().await;

        let refused = parley_cli(&database, &["users", "erase", &alice.id, "--reason", ""]);
        assert!(!refused.status.success(), "an operator must say why");
        let erased = parley_cli(
            &database,
            &["users", "erase", &alice.id, "--reason", "legal request #42"],
        );
        assert!(
            erased.status.success(),
            "{}",
            String::from_utf8_lossy(&erased.stderr)
        );
        let again = parley_cli(
            &database,
            &["users", "erase", &alice.id, "--reason", "twice"],
        );
        assert!(!again.status.success());
        // The record says who (an operator: no actor), when and why.
        let db = database.connect().await;
        let recorded =
            parley_store::log::of_type(&db, "User", parley_aggregates::user::UserEvent::ERASED)
                .await
                .expect("erasures");
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].meta("actor_id"), None);
        assert!(recorded[0].occurred_at().is_some());
        match recorded[0].event().expect("decoded") {
            Some(parley_aggregates::event::Event::User(
                parley_aggregates::user::UserEvent::AccountErased {
                    user_id,
                    erased_by,
                    reason,
                    ..
                },
            )) => {
                assert_eq!(user_id.to_string(), alice.id);
                assert_eq!(*erased_by, None);
                assert_eq!(reason.as_deref(), Some("legal request #42"));
            }
            other => panic!("not an erasure: {other:?}"),
        }
        db.close().await;

        let app = spawn_app_on(database, |_| {}).await;
        assert_erased_in_place(&app, &bob, &group, &alice).await;
        assert_nothing_left(&app, &group, &upload_id).await;

        // Restoring the database from before the erasure brings back its keys and
        // content; starting on it re-applies the erasure recorded outside it.
        let database = app.stop().await;
        database.restore().await;
        let app = spawn_app_on(database, |_| {}).await;
        // Not `settle`, which gives up after the consistency wait: on a loaded machine
        // the restored read models may take longer to apply the erasure again.
        settled(&app).await;
        // Its keys went before it served anything; its read models once they applied
        // the erasure recorded again.
        assert_no_secret("the restored database", &database_bytes(&app).await);
        assert_erased_in_place(&app, &bob, &group, &alice).await;
        let verified = parley_cli(&app.database, &["audit", "verify"]);
        assert!(verified.status.success());
        app.stop().await;
    }
}

const SET_RETENTION: &str =
    "mutation($c: ID!, $d: Int) { setRetention(conversationId: $c, days: $d) { id retentionDays } }";

#[tokio::test]
async fn set_retention_is_for_owners_and_admins_with_whole_days_and_null_is_the_default() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let app = spawn_app_on(database, |config| config.retention_days = Some(30)).await;
        let (alice, bob, carol) = (
            user(&app, "alice").await,
            user(&app, "bob").await,
            user(&app, "carol").await,
        );
        let group = create_group(&app, &alice, "team", &[&bob]).await;
        let shown = gql_ok(
            &app,
            &bob,
            "query($c: ID!) { conversation(id: $c) { retentionDays } }",
            json!({ "c": group }),
        )
        .await;
        assert_eq!(shown["data"]["conversation"]["retentionDays"], 30);

        for days in [-1, 0, 36_501] {
            let refused = gql(
                &app,
                &alice,
                SET_RETENTION,
                json!({ "c": group, "d": days }),
            )
            .await;
            assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
            assert_eq!(error_field(&refused), Some("days"));
        }
        let member = gql(&app, &bob, SET_RETENTION, json!({ "c": group, "d": 7 })).await;
        assert_eq!(error_code(&member), Some("FORBIDDEN"), "{member}");
        let outsider = gql(&app, &carol, SET_RETENTION, json!({ "c": group, "d": 7 })).await;
        assert!(
            matches!(error_code(&outsider), Some("FORBIDDEN" | "NOT_FOUND")),
            "{outsider}"
        );
        let direct = gql_ok(
            &app,
            &alice,
            "mutation($u: ID!) { createDirectConversation(userId: $u) { id } }",
            json!({ "u": carol.id }),
        )
        .await;
        let direct = text(&direct, "/data/createDirectConversation/id").to_owned();
        let refused = gql(&app, &alice, SET_RETENTION, json!({ "c": direct, "d": 7 })).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");

        let set = gql_ok(&app, &alice, SET_RETENTION, json!({ "c": group, "d": 7 })).await;
        assert_eq!(set["data"]["setRetention"]["retentionDays"], 7);
        let reset = gql_ok(
            &app,
            &alice,
            SET_RETENTION,
            json!({ "c": group, "d": null }),
        )
        .await;
        assert_eq!(reset["data"]["setRetention"]["retentionDays"], 30);
        app.stop().await;
    }
}

#[tokio::test]
async fn messages_past_the_window_vanish_everywhere_and_newer_ones_stay() {
    const OLD: [&str; 3] = [
        "pineappleancient",
        "oldholidayphoto.png",
        "editedawaylychee",
    ];
    const NEW: &str = "mangofreshtoday";
    for (backend, store) in setups() {
        eprintln!("backend: {backend:?}, store: {store:?}");
        let clock = TestClock::new();
        let app = spawn(backend, store, clock.clone()).await;
        let (alice, bob) = (user(&app, "alice").await, user(&app, "bob").await);
        let group = create_group(&app, &alice, "team", &[&bob]).await;
        gql_ok(&app, &alice, SET_RETENTION, json!({ "c": group, "d": 2 })).await;
        // Another keeps the server's window, which the sweeper is given below.
        let other = create_group(&app, &bob, "other", &[&alice]).await;
        send_ok(&app, &bob, &other, "defaultwindowquince").await;

        let old = send_ok(&app, &alice, &group, OLD[2]).await;
        gql_ok(
            &app,
            &alice,
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"pineappleancient @bob\") { id } }",
            json!({ "m": old }),
        )
        .await;
        gql_ok(
            &app,
            &bob,
            "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"👍\") { id } }",
            json!({ "m": old }),
        )
        .await;
        let completed = upload(&app, &alice, &group, OLD[1], "image/png", png(32, 32)).await;
        let file = text(&completed, "/data/completeUpload/id").to_owned();
        gql_ok(
            &app,
            &alice,
            SEND_WITH_FILE,
            json!({ "i": { "conversationId": group, "body": "photo", "attachmentIds": [file] } }),
        )
        .await;
        let notified = gql_ok(
            &app,
            &bob,
            "query { notifications { nodes { id } } }",
            json!({}),
        )
        .await;
        assert!(!notified["data"]["notifications"]["nodes"]
            .as_array()
            .expect("nodes")
            .is_empty());

        // Nothing has passed a window yet.
        let (expired, _) = app
            .state
            .privacy
            .expire(clock.now(), Some(2))
            .await
            .expect("sweep");
        assert_eq!(expired, 0);

        clock.advance(time::Duration::days(3));
        let kept = send_ok(&app, &bob, &group, NEW).await;
        // Without a server window only the conversation with its own expires.
        let (expired, position) = app
            .state
            .privacy
            .expire(clock.now(), None)
            .await
            .expect("sweep");
        assert_eq!(expired, 1);
        app.state.settle(position).await;
        let others = gql_ok(&app, &bob, HISTORY, json!({ "c": other })).await;
        assert_eq!(
            others["data"]["messages"]["nodes"].as_array().map(Vec::len),
            Some(1)
        );
        let (expired, position) = app
            .state
            .privacy
            .expire(clock.now(), Some(2))
            .await
            .expect("sweep");
        assert_eq!(expired, 1, "the server's window applies where none is set");
        app.state.settle(position).await;
        let others = gql_ok(&app, &bob, HISTORY, json!({ "c": other })).await;
        assert_eq!(others["data"]["messages"]["nodes"], json!([]));

        let seen = gql_ok(&app, &bob, HISTORY, json!({ "c": group })).await;
        let nodes = seen["data"]["messages"]["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 1, "{seen}");
        assert_eq!(nodes[0]["id"], kept.as_str());
        assert_eq!(nodes[0]["body"], NEW);
        for word in ["pineappleancient", "lychee"] {
            assert_eq!(
                search(&app, &bob, word).await,
                Vec::<String>::new(),
                "{word}"
            );
        }
        assert_eq!(search(&app, &bob, NEW).await, vec![NEW.to_owned()]);
        let notified = gql_ok(
            &app,
            &bob,
            "query { notifications { nodes { id } } }",
            json!({}),
        )
        .await;
        assert_eq!(notified["data"]["notifications"]["nodes"], json!([]));
        assert!(
            !objects(&app).await.iter().any(|key| key.contains(&file)),
            "the expired message's file is left"
        );
        // A second sweep finds nothing more to do.
        let (again, _) = app
            .state
            .privacy
            .expire(clock.now(), Some(2))
            .await
            .expect("sweep");
        assert_eq!(again, 0);

        let bytes = database_bytes(&app).await;
        assert_none_of("the database", &bytes, &OLD);
        assert!(holds(&bytes, NEW));
        let verified = parley_cli(&app.database, &["audit", "verify"]);
        assert!(
            verified.status.success(),
            "{}",
            String::from_utf8_lossy(&verified.stdout)
        );

        // A rebuild from the log agrees, and so does an export.
        let database = app.stop().await;
        let rebuilt = parley_cli(&database, &["projections", "rebuild", "--all"]);
        assert!(
            rebuilt.status.success(),
            "{}",
            String::from_utf8_lossy(&rebuilt.stderr)
        );
        let export = database.dir.path().join("export.jsonl");
        let exported = parley_cli(
            &database,
            &[
                "export",
                "events",
                "--format",
                "jsonl",
                "--output",
                export.to_str().expect("path"),
            ],
        );
        assert!(exported.status.success());
        let exported = std::fs::read(&export).expect("export");
        assert_none_of("the export", &exported, &OLD);
        let app = spawn_app_with(database, |_| {}, clock.clone()).await;
        let seen = gql_ok(&app, &bob, HISTORY, json!({ "c": group })).await;
        assert_eq!(
            seen["data"]["messages"]["nodes"].as_array().map(Vec::len),
            Some(1)
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn events_written_before_sealing_load_as_they_are_and_erasure_empties_the_read_models() {
    const LEGACY: &str = "plaintextfromlastyear";
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let app = spawn_app(backend).await;
        let alice = register_as(&app, "alice", SECRETS[0]).await;
        let bob = user(&app, "bob").await;
        let group = create_group(&app, &bob, "team", &[&alice]).await;

        // An earlier release appended without a master key: its events are in clear.
        let legacy = parley_store::Db::connect(&app.database.url, 2)
            .await
            .expect("connect");
        assert!(!legacy.keys.enabled());
        let conversations =
            parley_store::CommandBus::<parley_aggregates::conversation::Conversation>::new(
                &legacy,
                parley::startup::conversation_services(&app.state.config, &legacy),
            );
        let group_id = uuid::Uuid::parse_str(&group).expect("id");
        let alice_id = uuid::Uuid::parse_str(&alice.id).expect("id");
        let at = time::OffsetDateTime::now_utc();
        let committed = conversations
            .execute(
                &group,
                (
                    group_id,
                    parley_aggregates::conversation::ConversationCommand::PostMessage {
                        message_id: uuid::Uuid::now_v7(),
                        author_id: alice_id,
                        body: LEGACY.to_owned(),
                        reply_to: None,
                        client_message_id: None,
                        attachment_ids: Vec::new(),
                        named: Default::default(),
                        at,
                    },
                ),
                &parley_store::CommandMeta::new(Some(alice_id), at),
            )
            .await
            .expect("a legacy post");
        legacy.close().await;
        app.state.settle(committed.position).await;

        let seen = gql_ok(&app, &bob, HISTORY, json!({ "c": group })).await;
        assert_eq!(
            seen["data"]["messages"]["nodes"][0]["body"], LEGACY,
            "{seen}"
        );

        gql_ok(
            &app,
            &alice,
            "mutation { deleteAccount(password: \"correct horse battery\") }",
            json!({}),
        )
        .await;
        let seen = gql_ok(&app, &bob, HISTORY, json!({ "c": group })).await;
        assert_eq!(
            seen["data"]["messages"]["nodes"][0]["erased"], true,
            "{seen}"
        );
        assert_eq!(seen["data"]["messages"]["nodes"][0]["body"], Value::Null);
        // The read models hold none of it; the log still does, as the README says.
        let read_models = dump(&app.state.db, &["messages", "message_edits", "users"]).await;
        assert!(!read_models.concat().contains(LEGACY));
        let logged: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'MessagePosted'",
        )
        .fetch_all(&app.state.db.read)
        .await
        .expect("events");
        assert!(logged.concat().contains(LEGACY));
        app.stop().await;
    }
}

/// Runs the CLI on `database` with `master_key` (or none) and a data directory of its own.
fn cli_with_key(
    database: &TestDatabase,
    data_dir: &std::path::Path,
    master_key: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let mut command = parley_command(database);
    command
        .env("PARLEY_DATA_DIR", data_dir)
        .env("PARLEY_LOG", "warn")
        .env_remove("PARLEY_MASTER_KEY")
        .args(args);
    if let Some(key) = master_key {
        command.env("PARLEY_MASTER_KEY", key);
    }
    command.output().expect("parley runs")
}

#[tokio::test]
async fn a_master_key_is_generated_once_and_a_different_one_is_refused_at_start() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let database = TestDatabase::new(backend).await;
        let data_dir = tempfile::tempdir().expect("temp dir");
        let first = cli_with_key(&database, data_dir.path(), None, &["migrate"]);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&first.stdout),
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(said.contains("PARLEY_MASTER_KEY is not set"), "{said}");
        let generated = data_dir.path().join("master-key");
        let key = std::fs::read_to_string(&generated).expect("generated into the data dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&generated)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Generated once: the next start uses it again.
        let again = cli_with_key(&database, data_dir.path(), None, &["migrate"]);
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(std::fs::read_to_string(&generated).expect("kept"), key);

        let other = tempfile::tempdir().expect("temp dir");
        let refused = cli_with_key(&database, other.path(), Some(MASTER_KEY), &["migrate"]);
        assert!(
            !refused.status.success(),
            "a different master key is refused"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("PARLEY_MASTER_KEY"), "{stderr}");
        let bad = cli_with_key(&database, other.path(), Some("not base64"), &["migrate"]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("PARLEY_MASTER_KEY"));
    }
}
