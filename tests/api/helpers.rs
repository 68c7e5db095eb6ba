//! `spawn_app`: a real server on port 0 against a fresh database, and a GraphQL client.

use std::sync::Arc;

use clap::Parser as _;
use parley::app::AppState;
use parley::auth::Argon2Hasher;
use parley::config::{Config, Switch};
use parley::startup::Server;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use crate::common::{backends, Backend, TestDatabase};

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
    config.log = "warn".to_owned();
    config.db_max_connections = 8;
    config.consistency_wait_ms = 5_000;
    // Tests send faster than any person; the rate-limit tests turn limits back on.
    config.rate_limits = Switch::Off;
    config
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
