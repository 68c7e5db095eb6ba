//! Live-delivery latency: from `sendMessage` returning to the message reaching every
//! WebSocket subscriber of one conversation, with 1, 100 and 1,000 subscribers.
//!
//! `cargo bench --bench latency` starts a real server in this process on a fresh SQLite
//! database for each subscriber count, each in a tokio runtime of its own; with
//! `PARLEY_BENCH_POSTGRES_URL` (a server URL whose role may create databases) it repeats
//! the runs on fresh PostgreSQL databases, then once more with two nodes on one
//! database ("A→B": messages sent through node A, subscribers on node B, the path a
//! deployment behind a load balancer takes). Other `PARLEY_*` variables still reach the
//! server's configuration, so unset them.
//!
//! Every subscriber is one WebSocket (graphql-transport-ws) of the same user, subscribed
//! to `conversationEvents` of one group: delivery costs the server per subscription, not
//! per user, and each registration is a deliberately slow password hash. Each socket
//! has its own reader task, which stamps a frame with `Instant::now()` before parsing it.
//! Warm-up messages are posted until every socket has received one, so all
//! subscriptions are live, then a few unmeasured rounds run.
//!
//! A round sends one message over HTTP and waits until every subscriber has it before
//! the next starts: one message in flight, so this is latency, not throughput. Columns:
//!
//! - `send p50`: the `sendMessage` round trip.
//! - `p50`, `p99`, `max`: arrival minus the moment the response arrived, over every
//!   subscriber and round. Delivery can beat the response (the live tail and the
//!   mutation wait for the same projectors, then both read the message); such samples
//!   count as zero, and `early` is their share.
//! - `all p50`: per round, until the last subscriber had the message.
//! - `req p50`: arrival minus the moment the request went out, which is never zero.
//! - `p50/1`, `req p50/1`: the p50 over the one-subscriber p50 of the same backend in the
//!   same run; `n/a` when that baseline is zero, as it mostly is for `p50`.
//!
//! Server and clients share this process and its runtime, so the figures include the
//! clients' own work; what the team reports is the ratio against one subscriber.
//! 1,000 subscribers need about 2,100 file descriptors (both ends of each socket live
//! here): run `ulimit -n 4096` first if the soft limit is lower.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser as _;
use futures::{SinkExt as _, StreamExt as _};
use parley::auth::Argon2Hasher;
use parley::config::Config;
use parley::startup::Server;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// Subscriber counts and the measured rounds for each.
const RUNS: [(usize, usize); 3] = [(1, 200), (100, 200), (1_000, 100)];
/// Unmeasured rounds after every subscription is live: the first messages pay for cold
/// statement caches and connection setup.
const WARMUP_ROUNDS: usize = 10;
const LIVE_ATTEMPTS: usize = 30;
/// How long a warm-up attempt waits after the last arrival before posting another.
const LIVE_IDLE: Duration = Duration::from_secs(2);
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Handshakes in flight at once; all at once would overflow the listen backlog.
const CONNECT_CONCURRENCY: usize = 32;
/// The server closes a graphql-transport-ws client that has sent nothing for 60 s,
/// even while it is receiving events, so a long run must ping.
const PING_EVERY: Duration = Duration::from_secs(20);
/// After closing its sockets, how long to leave the server per subscriber: each
/// disconnection writes presence, and one left over when the server stops logs a
/// warning against the closed pool (1,000 take over a second in a dev build).
const CLOSE_GRACE_PER_SUBSCRIBER: Duration = Duration::from_millis(10);
/// File descriptors needed besides the sockets: database, listener, runtime.
const FD_MARGIN: u64 = 128;

const JWT_SECRET: &str = "bench-secret-0123456789abcdef-0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";
const EVENTS: &str = "subscription($c: ID!) { conversationEvents(conversationId: $c) { \
    __typename ... on MessagePosted { message { body } } } }";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[derive(Clone)]
enum Backend {
    Sqlite,
    /// A server URL; each run gets a database of its own on it.
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping any query string.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    match query {
        Some(query) => format!("{}/{name}?{query}", &base[..authority_end]),
        None => format!("{}/{name}", &base[..authority_end]),
    }
}

struct App {
    address: SocketAddr,
    /// So a second node can join the same database.
    database_url: String,
    http: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Holds the SQLite file (or nothing, on PostgreSQL) until the run is over.
    _dir: tempfile::TempDir,
    /// The server URL and database to drop afterwards, on PostgreSQL.
    drop_database: Option<(String, String)>,
}

impl App {
    async fn start(backend: &Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let (database_url, drop_database) = match backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("parley.db").display()
                ),
                None,
            ),
            Backend::Postgres(server) => {
                let name = format!("parley_bench_{}", uuid::Uuid::now_v7().simple());
                let mut admin = sqlx::PgConnection::connect(server)
                    .await
                    .context("connect to PARLEY_BENCH_POSTGRES_URL")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .context("create the bench database")?;
                admin.close().await.ok();
                (with_database(server, &name), Some((server.clone(), name)))
            }
        };
        Self::start_on(database_url, dir, drop_database).await
    }

    /// Another node on this one's PostgreSQL database, for cross-node delivery.
    async fn second_node(&self) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        Self::start_on(self.database_url.clone(), dir, None).await
    }

    async fn start_on(
        database_url: String,
        dir: tempfile::TempDir,
        drop_database: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        let data_dir = dir.path().display().to_string();
        // Through clap, so fields added to `Config` later take their defaults here too.
        let cli = Cli::try_parse_from([
            "parley",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--database-url",
            &database_url,
            "--jwt-secret",
            JWT_SECRET,
            "--log",
            "warn",
            // The 1,000-subscriber run can outlast the default 15 minutes in a dev build.
            "--access-token-ttl",
            "86400",
            // One user, one address, a thousand sockets: a load, not an abuse.
            "--rate-limits",
            "off",
            "--max-connections-per-user",
            "2000",
        ])
        .context("bench configuration")?;
        // The server's warnings and errors (a failed subscription, lagging read models)
        // explain a failed run; only the first call installs the subscriber.
        parley::telemetry::init(&cli.config.log, cli.config.log_format)?;
        let server = Server::build(cli.config, Argon2Hasher::new()?)
            .await
            .context("server builds")?;
        let address = server.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            address,
            database_url,
            http: reqwest::Client::new(),
            shutdown,
            server,
            _dir: dir,
            drop_database,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .context("server did not stop within 30 s")?
            .context("server task")?
            .context("server ran")?;
        if let Some((server, name)) = self.drop_database {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        Ok(())
    }

    /// Posts an operation and returns its `data`, or fails with its `errors`.
    async fn graphql(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(format!("http://{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response: Value = request
            .send()
            .await
            .context("request sent")?
            .error_for_status()
            .context("HTTP status")?
            .json()
            .await
            .context("JSON response")?;
        if let Some(errors) = response.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].take())
    }

    /// Registers a user; returns its id and access token.
    async fn register(&self, username: &str) -> anyhow::Result<(String, String)> {
        let data = self
            .graphql(
                "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } } }",
                json!({ "i": { "username": username, "password": PASSWORD, "displayName": username } }),
                None,
            )
            .await?;
        let field = |pointer: &str| {
            data.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no {pointer} in {data}"))
        };
        Ok((field("/register/user/id")?, field("/register/accessToken")?))
    }

    async fn create_group(&self, token: &str, members: &[&str]) -> anyhow::Result<String> {
        let data = self
            .graphql(
                "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }",
                json!({ "i": { "title": "Latency", "memberIds": members } }),
                Some(token),
            )
            .await?;
        data.pointer("/createGroup/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no conversation id in {data}"))
    }

    async fn send_message(
        &self,
        token: &str,
        conversation: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        self.graphql(
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
            json!({ "i": { "conversationId": conversation, "body": body } }),
            Some(token),
        )
        .await
        .map(drop)
    }

    /// Opens a socket, authenticates and subscribes; events are the caller's to read.
    async fn subscribe(&self, token: &str, conversation: &str) -> anyhow::Result<Socket> {
        let mut request = format!("ws://{}/graphql", self.address).into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().context("header")?,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("WebSocket connects (\"Too many open files\": run `ulimit -n 4096`)")?;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        socket.send(Message::Text(init.to_string().into())).await?;
        loop {
            let frame = tokio::time::timeout(ROUND_TIMEOUT, socket.next())
                .await
                .context("no connection_ack in time")?
                .context("socket closed before connection_ack")??;
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(text.as_str())?;
                match message["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping" | "pong") => {}
                    _ => bail!("expected connection_ack, got {message}"),
                }
            }
        }
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": { "c": conversation } } });
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await?;
        Ok(socket)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Warmup(usize),
    Round(usize),
}

impl Body {
    fn text(self) -> String {
        match self {
            Self::Warmup(n) => format!("warmup {n}"),
            Self::Round(n) => format!("round {n}"),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (kind, n) = text.split_once(' ')?;
        let n = n.parse().ok()?;
        match kind {
            "warmup" => Some(Self::Warmup(n)),
            "round" => Some(Self::Round(n)),
            _ => None,
        }
    }
}

enum Report {
    Arrived {
        socket: usize,
        body: Body,
        at: Instant,
    },
    Failed {
        socket: usize,
        reason: String,
    },
}

/// What one frame means: a message, nothing of interest, or the end of this socket.
fn interpret(text: &str) -> Result<Option<Body>, String> {
    let message: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    match message["type"].as_str() {
        Some("next") => {
            if let Some(errors) = message.pointer("/payload/errors") {
                return Err(format!("subscription error: {errors}"));
            }
            let body = message
                .pointer("/payload/data/conversationEvents/message/body")
                .and_then(Value::as_str);
            // Other event kinds of the conversation carry no body; none are expected.
            Ok(body.and_then(Body::parse))
        }
        Some("ping" | "pong") => Ok(None),
        _ => Err(format!("unexpected message: {message}")),
    }
}

async fn read(index: usize, mut socket: Socket, reports: mpsc::UnboundedSender<Report>) {
    let first_ping = tokio::time::Instant::now() + PING_EVERY;
    let mut ping = tokio::time::interval_at(first_ping, PING_EVERY);
    let fail = |reason: String| {
        let _ = reports.send(Report::Failed {
            socket: index,
            reason,
        });
    };
    loop {
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = ping.tick() => {
                let ping = json!({ "type": "ping" }).to_string();
                if let Err(error) = socket.send(Message::Text(ping.into())).await {
                    return fail(format!("ping failed: {error}"));
                }
                continue;
            }
        };
        // Stamped before parsing, so the figure is the server's and the network's.
        let at = Instant::now();
        match frame {
            Some(Ok(Message::Text(text))) => match interpret(text.as_str()) {
                Ok(Some(body)) => {
                    let arrived = Report::Arrived {
                        socket: index,
                        body,
                        at,
                    };
                    if reports.send(arrived).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(reason) => return fail(reason),
            },
            Some(Ok(Message::Close(frame))) => {
                return fail(format!("closed by the server: {frame:?}"))
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return fail(error.to_string()),
            None => return fail("socket ended".to_owned()),
        }
    }
}

/// Every subscriber's reader, and the channel they report arrivals on.
struct Fleet {
    size: usize,
    reports: mpsc::UnboundedReceiver<Report>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    async fn open(app: &App, token: &str, conversation: &str, size: usize) -> anyhow::Result<Self> {
        let sockets: Vec<Socket> = futures::stream::iter(0..size)
            .map(|_| app.subscribe(token, conversation))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let (sender, reports) = mpsc::unbounded_channel();
        let readers = sockets
            .into_iter()
            .enumerate()
            .map(|(index, socket)| tokio::spawn(read(index, socket, sender.clone())))
            .collect();
        Ok(Self {
            size,
            reports,
            readers,
        })
    }

    /// The next arrival before `deadline`, `None` past it; a failed socket is an error.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<Option<(usize, Body, Instant)>> {
        let report = tokio::time::timeout_at(deadline.into(), self.reports.recv()).await;
        match report {
            Err(_) => Ok(None),
            Ok(None) => bail!("every reader stopped"),
            Ok(Some(Report::Arrived { socket, body, at })) => Ok(Some((socket, body, at))),
            Ok(Some(Report::Failed { socket, reason })) => bail!("subscriber {socket}: {reason}"),
        }
    }
}

impl Fleet {
    /// Closes every socket and gives the server a moment to see it, so its
    /// per-connection cleanup does not run into the database closing at shutdown.
    async fn close(mut self) {
        for reader in std::mem::take(&mut self.readers) {
            reader.abort();
            let _ = reader.await;
        }
        let subscribers = u32::try_from(self.size).unwrap_or(u32::MAX);
        tokio::time::sleep(CLOSE_GRACE_PER_SUBSCRIBER * subscribers).await;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Posts warm-up messages until one reaches every socket: a subscription without a
/// cursor starts at whatever is newest once the server has set it up, which the client
/// cannot otherwise observe. Returns with nothing in flight, since each socket receives
/// in order and every socket got the last one.
async fn until_live(
    app: &App,
    token: &str,
    conversation: &str,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let mut best = 0;
    for attempt in 0..LIVE_ATTEMPTS {
        app.send_message(token, conversation, &Body::Warmup(attempt).text())
            .await?;
        let mut seen = vec![false; fleet.size];
        let mut count = 0;
        while let Some((socket, body, _)) = fleet.next(Instant::now() + LIVE_IDLE).await? {
            if body == Body::Warmup(attempt) && !std::mem::replace(&mut seen[socket], true) {
                count += 1;
                if count == fleet.size {
                    return Ok(());
                }
            }
        }
        best = best.max(count);
    }
    bail!(
        "after {LIVE_ATTEMPTS} warm-up messages at most {best} of {} subscriptions were live",
        fleet.size
    )
}

struct Measured {
    /// Arrival minus response, per subscriber and round.
    samples: Vec<Duration>,
    /// Arrival minus the moment the request went out, per subscriber and round: never
    /// zero, so a usable baseline when one subscriber mostly beats the response.
    from_request: Vec<Duration>,
    /// Per round: until the last subscriber had it.
    all: Vec<Duration>,
    /// Per round: the `sendMessage` round trip.
    sends: Vec<Duration>,
    /// Samples that arrived before the response did (counted as zero).
    early: usize,
}

async fn measure(
    app: &App,
    token: &str,
    conversation: &str,
    fleet: &mut Fleet,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let mut measured = Measured {
        samples: Vec::with_capacity(rounds * fleet.size),
        from_request: Vec::with_capacity(rounds * fleet.size),
        all: Vec::with_capacity(rounds),
        sends: Vec::with_capacity(rounds),
        early: 0,
    };
    for round in 0..WARMUP_ROUNDS + rounds {
        let keep = round >= WARMUP_ROUNDS;
        let body = Body::Round(round);
        let sent = Instant::now();
        app.send_message(token, conversation, &body.text()).await?;
        let returned = Instant::now();
        let deadline = returned + ROUND_TIMEOUT;
        let mut seen = vec![false; fleet.size];
        let (mut count, mut last) = (0, Duration::ZERO);
        while count < fleet.size {
            let Some((socket, arrived, at)) = fleet.next(deadline).await? else {
                bail!(
                    "round {round}: {count} of {} subscribers had the message after {ROUND_TIMEOUT:?}",
                    fleet.size
                );
            };
            if arrived != body {
                bail!("round {round}: subscriber {socket} received {arrived:?}");
            }
            if std::mem::replace(&mut seen[socket], true) {
                bail!("round {round}: subscriber {socket} received the message twice");
            }
            count += 1;
            let latency = at.saturating_duration_since(returned);
            last = last.max(latency);
            if keep {
                measured.early += usize::from(at < returned);
                measured.samples.push(latency);
                measured
                    .from_request
                    .push(at.saturating_duration_since(sent));
            }
        }
        if keep {
            measured.all.push(last);
            measured.sends.push(returned - sent);
        }
    }
    Ok(measured)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The soft limit on open files, where the platform says (Linux).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where subscribers connect: to the node messages are sent through, or (PostgreSQL)
/// to a second node sharing its database.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodes {
    One,
    Two,
}

async fn run(
    backend: &Backend,
    nodes: Nodes,
    subscribers: usize,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let app = App::start(backend).await?;
    let other = match nodes {
        Nodes::One => None,
        Nodes::Two => Some(app.second_node().await?),
    };
    let receiving = other.as_ref().unwrap_or(&app);
    let (_, sender) = app.register("bench_sender").await?;
    let (listener_id, listener) = app.register("bench_listener").await?;
    let conversation = app.create_group(&sender, &[&listener_id]).await?;
    let mut fleet = Fleet::open(receiving, &listener, &conversation, subscribers).await?;
    until_live(&app, &sender, &conversation, &mut fleet).await?;
    let measured = measure(&app, &sender, &conversation, &mut fleet, rounds).await?;
    fleet.close().await;
    if let Some(other) = other {
        other.stop().await?;
    }
    app.stop().await?;
    Ok(measured)
}

/// One subscriber count on a fresh server, in a runtime of its own: dropping it ends
/// whatever the server leaves running after it stops (its live tail polls a closed pool
/// and logs about it every 100 ms).
fn run_isolated(
    backend: &Backend,
    nodes: Nodes,
    subscribers: usize,
    rounds: usize,
) -> anyhow::Result<Measured> {
    // Multi-threaded like a deployed server; the clients share its workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let measured = runtime.block_on(run(backend, nodes, subscribers, rounds));
    runtime.shutdown_timeout(Duration::from_secs(5));
    measured.with_context(|| format!("{} with {subscribers} subscribers", backend.name()))
}

/// `p50` over the baseline's, or "n/a" when the baseline is zero.
fn ratio(p50: Duration, baseline: Duration) -> String {
    if baseline.is_zero() {
        "n/a".to_owned()
    } else {
        format!("{:.2}", p50.as_secs_f64() / baseline.as_secs_f64())
    }
}

const HEADER: [&str; 12] = [
    "backend",
    "subs",
    "rounds",
    "send p50",
    "p50",
    "p99",
    "max",
    "early",
    "all p50",
    "req p50",
    "p50/1",
    "req p50/1",
];

fn row(cells: &[String]) {
    let widths = [9, 5, 6, 9, 9, 9, 9, 6, 9, 9, 6, 9];
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (cell, width))| {
            if i == 0 {
                format!("{cell:<width$}")
            } else {
                format!("{cell:>width$}")
            }
        })
        .collect();
    println!("{}", line.join(" "));
}

fn bench(backend: &Backend, nodes: Nodes) -> anyhow::Result<()> {
    let mut baseline: Option<(Duration, Duration)> = None;
    let name = match nodes {
        Nodes::One => backend.name().to_owned(),
        Nodes::Two => format!("{} A→B", backend.name()),
    };
    for (subscribers, rounds) in RUNS {
        let mut measured = run_isolated(backend, nodes, subscribers, rounds)?;
        measured.samples.sort_unstable();
        measured.from_request.sort_unstable();
        measured.all.sort_unstable();
        measured.sends.sort_unstable();
        let p50 = percentile(&measured.samples, 0.50);
        let request_p50 = percentile(&measured.from_request, 0.50);
        let (base, request_base) = *baseline.get_or_insert((p50, request_p50));
        let early = 100.0 * measured.early as f64 / measured.samples.len().max(1) as f64;
        row(&[
            name.clone(),
            subscribers.to_string(),
            rounds.to_string(),
            ms(percentile(&measured.sends, 0.50)),
            ms(p50),
            ms(percentile(&measured.samples, 0.99)),
            ms(measured.samples.last().copied().unwrap_or_default()),
            format!("{early:.1}%"),
            ms(percentile(&measured.all, 0.50)),
            ms(request_p50),
            ratio(p50, base),
            ratio(request_p50, request_base),
        ]);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let largest = RUNS.iter().map(|&(n, _)| n as u64).max().unwrap_or(0);
    if let Some(limit) = open_files_limit() {
        let needed = 2 * largest + FD_MARGIN;
        if limit < needed {
            bail!(
                "{largest} subscribers need about {needed} open files and the soft limit is \
                 {limit}: run `ulimit -n 4096` in this shell first"
            );
        }
    }
    println!("latency from sendMessage returning to delivery at each subscriber, in ms");
    row(&HEADER.map(str::to_owned));
    bench(&Backend::Sqlite, Nodes::One)?;
    match std::env::var("PARLEY_BENCH_POSTGRES_URL") {
        Ok(server) => {
            let backend = Backend::Postgres(server);
            bench(&backend, Nodes::One)?;
            // Sent through node A, delivered by node B: the cross-node path.
            bench(&backend, Nodes::Two)?;
        }
        Err(_) => println!("postgres  skipped (set PARLEY_BENCH_POSTGRES_URL to measure it)"),
    }
    Ok(())
}
