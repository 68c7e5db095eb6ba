//! `spawn_app`: a real server on port 0 against a fresh database, and a GraphQL client.

use std::sync::Arc;

use clap::Parser as _;
use parley::app::AppState;
use parley::auth::Argon2Hasher;
use parley::config::{Config, Switch};
use parley::startup::Server;
use parley_store::MasterKey;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::oneshot;

pub use crate::common::{backends, Backend, TestDatabase, MASTER_KEY};

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub struct TestApp {
    pub address: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    pub database: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(database: &TestDatabase) -> Config {
    // Through clap, so every setting not named here takes its documented default.
    let mut config = parley::cli::Cli::try_parse_from(["parley"])
        .expect("defaults parse")
        .config;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = database.dir.path().to_path_buf();
    config.database_url = Some(database.url.clone().into());
    config.jwt_secret = Some(JWT_SECRET.to_owned().into());
    config.master_key = Some(MasterKey::from_base64(MASTER_KEY).expect("test master key"));
    config.log = "warn".to_owned();
    config.db_max_connections = 8;
    config.consistency_wait_ms = 5_000;
    // Tests send faster than any person; the rate-limit tests turn limits back on.
    config.rate_limits = Switch::Off;
    config
}

/// Waits until every projector has applied the log's head as of now, failing the test
/// if one is marked failed or has not got there within two minutes (a loaded machine
/// may need far longer than a mutation's consistency wait).
pub async fn settled(app: &TestApp) {
    let head = parley_store::log::head(&app.state.db).await.expect("head");
    assert!(
        app.state
            .projections
            .wait_for(head, std::time::Duration::from_secs(120))
            .await,
        "the read models reach the log's head"
    );
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let database = TestDatabase::new(backend).await;
    spawn_app_on(database, |_| {}).await
}

pub async fn spawn_app_on(database: TestDatabase, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(database, configure, Arc::new(parley::clock::SystemClock)).await
}

/// A clock the test moves by hand.
pub struct TestClock(std::sync::Mutex<time::OffsetDateTime>);

impl TestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(time::OffsetDateTime::now_utc())))
    }

    pub fn advance(&self, by: time::Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl parley::clock::Clock for TestClock {
    fn now(&self) -> time::OffsetDateTime {
        self.0
            .lock()
            .map(|now| *now)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
    }
}

pub async fn spawn_app_with(
    database: TestDatabase,
    configure: impl FnOnce(&mut Config),
    clock: Arc<dyn parley::clock::Clock>,
) -> TestApp {
    let mut config = test_config(&database);
    configure(&mut config);
    let server = Server::build_with_clock(config, Argon2Hasher::new().expect("hasher"), clock)
        .await
        .expect("server builds");
    let address = format!("http://{}", server.local_addr().expect("bound"));
    let state = server.state();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        state,
        client: reqwest::Client::new(),
        database,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// The `/readyz` report.
    pub async fn readyz(&self) -> Value {
        self.client
            .get(format!("{}/readyz", self.address))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("readyz json")
    }

    /// Posts a GraphQL operation, with a bearer token when given.
    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON response")
    }

    pub async fn register(&self, username: &str, password: &str) -> Value {
        self.graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id username displayName } } }",
            json!({ "input": { "username": username, "password": password, "displayName": username } }),
            None,
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Value {
        self.graphql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { id username } } }",
            json!({ "input": { "username": username, "password": password } }),
            None,
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Value {
        self.graphql(
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken refreshToken user { username } } }",
            json!({ "t": refresh_token }),
            None,
        )
        .await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
        self.database
    }
}

/// Runs the `parley` binary against `database`, with no other `PARLEY_` setting.
pub fn parley_cli(database: &TestDatabase, args: &[&str]) -> std::process::Output {
    parley_command(database)
        .args(args)
        .output()
        .expect("parley runs")
}

/// The `parley` binary set up as the test's servers are (database, data directory,
/// secrets), with no other `PARLEY_` setting, for a test to adjust before running it.
pub fn parley_command(database: &TestDatabase) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")) {
        command.env_remove(key);
    }
    command
        .env("PARLEY_DATABASE_URL", &database.url)
        .env("PARLEY_DATA_DIR", database.dir.path())
        .env("PARLEY_JWT_SECRET", JWT_SECRET)
        .env("PARLEY_MASTER_KEY", MASTER_KEY)
        .env("PARLEY_LOG", "error");
    command
}

/// A signed-in test user.
pub struct Client {
    pub id: String,
    pub token: String,
}

/// Registers `name` and signs in.
pub async fn user(app: &TestApp, name: &str) -> Client {
    let registered = app.register(name, "correct horse battery").await;
    Client {
        id: text(&registered, "/data/register/user/id").to_owned(),
        token: text(&registered, "/data/register/accessToken").to_owned(),
    }
}

/// Runs an operation as `who`.
pub async fn gql(app: &TestApp, who: &Client, query: &str, variables: Value) -> Value {
    app.graphql(query, variables, Some(&who.token)).await
}

/// The response's `data`, after checking it carries no error.
pub fn ok(response: &Value) -> &Value {
    assert!(
        response["errors"].is_null(),
        "unexpected errors: {response}"
    );
    &response["data"]
}

/// Runs an operation as `who` that must succeed; the whole response.
pub async fn gql_ok(app: &TestApp, who: &Client, query: &str, variables: Value) -> Value {
    let response = gql(app, who, query, variables).await;
    ok(&response);
    response
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// The `extensions.field` of the first error, if any.
pub fn error_field(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["field"].as_str()
}

/// A string at a JSON pointer, or a panic naming the response.
pub fn text<'a>(response: &'a Value, pointer: &str) -> &'a str {
    response
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {response}"))
}

/// A group with `who` as its only member; its id.
pub async fn own_group(app: &TestApp, who: &Client) -> String {
    let response = gql(
        app,
        who,
        "mutation { createGroup(input: { title: \"t\", memberIds: [] }) { id } }",
        serde_json::json!({}),
    )
    .await;
    text(&response, "/data/createGroup/id").to_owned()
}

/// The end of the log now, to subscribe from without missing what follows.
pub async fn live_cursor_of(app: &TestApp, who: &Client) -> String {
    let response = gql(app, who, "{ liveCursor }", serde_json::json!({})).await;
    text(&response, "/data/liveCursor").to_owned()
}

/// Posts `body` as `who`, which must succeed.
pub async fn post_ok(app: &TestApp, who: &Client, conversation: &str, body: &str) {
    ok(&gql(
        app,
        who,
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        serde_json::json!({ "i": { "conversationId": conversation, "body": body } }),
    )
    .await);
}

/// Whether tests of several nodes can run: they need PostgreSQL. Without it they are
/// skipped with a printed reason, except in CI (`CI` set, as `.ci/run` runs), where a
/// missing PostgreSQL fails loudly rather than passing silently. scripts/test.sh
/// always provides one.
pub fn several_nodes() -> bool {
    if backends().contains(&Backend::Postgres) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "several nodes need PostgreSQL: set PARLEY_TEST_POSTGRES_URL (scripts/test.sh does)"
    );
    eprintln!("skipped: several nodes need PostgreSQL (set PARLEY_TEST_POSTGRES_URL)");
    false
}

/// Every row of the projector's tables, as sorted text.
pub async fn dump(db: &parley_store::Db, tables: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&db.read)
            .await
            .expect("dump");
        let mut lines: Vec<String> = rows
            .iter()
            .map(|row| {
                let cells: Vec<String> = (0..row.len())
                    .map(|i| {
                        row.try_get::<Option<String>, _>(i)
                            .map(|v| format!("{v:?}"))
                            .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                            .unwrap_or_else(|_| "?".to_owned())
                    })
                    .collect();
                format!("{table}: {}", cells.join(" | "))
            })
            .collect();
        lines.sort();
        out.extend(lines);
    }
    out
}

pub async fn create_group(
    app: &TestApp,
    owner: &Client,
    title: &str,
    members: &[&Client],
) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let response = gql(
        app,
        owner,
        "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id kind title myRole } }",
        json!({ "i": { "title": title, "memberIds": ids } }),
    )
    .await;
    assert_eq!(ok(&response)["createGroup"]["myRole"], "OWNER");
    text(&response, "/data/createGroup/id").to_owned()
}

pub const SEND: &str =
    "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id seq body replyTo { id } } }";

pub async fn send(app: &TestApp, who: &Client, conversation: &str, body: &str) -> Value {
    gql(
        app,
        who,
        SEND,
        json!({ "i": { "conversationId": conversation, "body": body } }),
    )
    .await
}

pub async fn send_ok(app: &TestApp, who: &Client, conversation: &str, body: &str) -> String {
    let response = send(app, who, conversation, body).await;
    text(&response, "/data/sendMessage/id").to_owned()
}

/// A history that touches every read model: a group with mentions, a reply, an edit,
/// a reaction, a channel, an invitation accepted, notification levels, receipts,
/// deletions, an attachment, moderation (a role, a mute, a removal with a reason) and a
/// member leaving.
/// Returns the users (alice, bob, carol) and the group's id.
pub async fn busy_history(app: &TestApp) -> (Client, Client, Client, String) {
    let (alice, bob, carol) = (
        user(app, "alice").await,
        user(app, "bob").await,
        user(app, "carol").await,
    );
    let group = create_group(app, &alice, "Everything", &[&bob]).await;
    let hello = send_ok(app, &bob, &group, "hello @alice").await;
    let reply = gql(
        app,
        &alice,
        SEND,
        json!({ "i": { "conversationId": group, "body": "hi", "replyToId": hello } }),
    )
    .await;
    let reply = text(&reply, "/data/sendMessage/id").to_owned();
    gql(app, &bob, "mutation($m: ID!) { editMessage(messageId: $m, body: \"hello @alice and @carol\") { id } }", json!({ "m": hello })).await;
    gql(
        app,
        &bob,
        "mutation($m: ID!) { addReaction(messageId: $m, emoji: \"🎉\") { id } }",
        json!({ "m": reply }),
    )
    .await;
    gql(
        app,
        &carol,
        "mutation { createChannel(input: { name: \"Lobby\", visibility: PUBLIC }) { id } }",
        json!({}),
    )
    .await;
    let invite = gql(
        app,
        &alice,
        "mutation($c: ID!, $u: ID!) { inviteMember(conversationId: $c, userId: $u) { id } }",
        json!({ "c": group, "u": carol.id }),
    )
    .await;
    gql(
        app,
        &carol,
        "mutation($i: ID!) { acceptInvitation(invitationId: $i) { id } }",
        json!({ "i": text(&invite, "/data/inviteMember/id") }),
    )
    .await;
    gql(
        app,
        &carol,
        "mutation($c: ID!) { setNotificationLevel(conversationId: $c, level: MENTIONS) { id } }",
        json!({ "c": group }),
    )
    .await;
    gql(
        app,
        &bob,
        "mutation($c: ID!, $m: ID!) { markRead(conversationId: $c, messageId: $m) { id } }",
        json!({ "c": group, "m": reply }),
    )
    .await;
    gql(
        app,
        &bob,
        "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }",
        json!({ "m": hello }),
    )
    .await;
    gql(
        app,
        &alice,
        "mutation { markAllNotificationsRead }",
        json!({}),
    )
    .await;
    // An attachment: uploaded, checked and sent.
    let created = gql(
        app,
        &alice,
        "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id uploadUrl headers { name value } } }",
        json!({ "i": { "conversationId": group, "filename": "notes.txt", "contentType": "text/plain", "size": 5 } }),
    )
    .await;
    let upload = &ok(&created)["createUpload"];
    let mut put = app
        .client
        .put(upload["uploadUrl"].as_str().expect("uploadUrl"));
    for header in upload["headers"].as_array().into_iter().flatten() {
        put = put.header(
            header["name"].as_str().unwrap_or_default(),
            header["value"].as_str().unwrap_or_default(),
        );
    }
    let status = put
        .body(b"notes".to_vec())
        .send()
        .await
        .expect("PUT")
        .status();
    assert!(status.is_success(), "{status}");
    ok(&gql(
        app,
        &alice,
        "mutation($id: ID!) { completeUpload(uploadId: $id) { id } }",
        json!({ "id": upload["id"] }),
    )
    .await);
    ok(&gql(
        app,
        &alice,
        SEND,
        json!({ "i": { "conversationId": group, "body": "notes attached", "attachmentIds": [upload["id"]] } }),
    )
    .await);
    let carols = send_ok(app, &carol, &group, "off topic rant").await;
    let moderation = [
        (&alice, "mutation($c: ID!, $u: ID!) { setMemberRole(conversationId: $c, userId: $u, role: ADMIN) { id } }", json!({ "c": group, "u": bob.id })),
        (&bob, "mutation($c: ID!, $u: ID!) { muteMember(conversationId: $c, userId: $u, reason: \"hush\") { id } }", json!({ "c": group, "u": carol.id })),
        (&bob, "mutation($m: ID!) { deleteMessage(messageId: $m, reason: \"off topic\") { id } }", json!({ "m": carols })),
    ];
    for (who, query, variables) in moderation {
        ok(&gql(app, who, query, variables).await);
    }
    gql(
        app,
        &carol,
        "mutation($c: ID!) { leaveConversation(conversationId: $c) }",
        json!({ "c": group }),
    )
    .await;

    (alice, bob, carol, group)
}

/// Waits until `/readyz` reports projector `name` failed; the report that did.
pub async fn marked_failed(app: &TestApp, name: &str) -> serde_json::Value {
    let mut tries = 0;
    loop {
        let report = app.readyz().await;
        let failed = report["projectors"].as_array().is_some_and(|projectors| {
            projectors
                .iter()
                .any(|p| p["name"] == name && p["state"] == "failed")
        });
        if failed {
            return report;
        }
        tries += 1;
        assert!(tries < 600, "{name} never marked failed: {report}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Appends an event of `aggregate_type` whose `payload` no projector can decode.
pub async fn poison_with(
    db: &parley_store::Db,
    aggregate_type: &str,
    event_type: &str,
    payload: &str,
) {
    let metadata = r#"{"occurred_at": "2026-01-01T00:00:00Z"}"#;
    match db.backend {
        parley_store::Backend::Sqlite => sqlx::query(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) \
             VALUES ($1, $2, $3, 1, $4, '1', $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(aggregate_type)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(event_type)
        .bind(payload)
        .bind(metadata)
        .bind("ab".repeat(32))
        .execute(&db.write)
        .await
        .expect("poison"),
        parley_store::Backend::Postgres => sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ($1, $2, 1, $3, '1', CAST($4 AS JSONB), CAST($5 AS JSONB))",
        )
        .bind(aggregate_type)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(event_type)
        .bind(payload)
        .bind(metadata)
        .execute(&db.write)
        .await
        .expect("poison"),
    };
}
