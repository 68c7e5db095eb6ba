//! A Parley client as an app would be one: GraphQL over HTTP for commands, and
//! graphql-transport-ws sockets for `conversationEvents`. Only what the scenarios use.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Long enough for a registration queued behind dozens of password hashes on a
/// debug build; a request that takes longer counts as an error, not a sample.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// At least 10 bytes, as the server requires.
const PASSWORD: &str = "parley-load password";
/// tungstenite allocates 128 KiB read and write buffers per socket by default, which
/// at thousands of sockets would make this process, not the server, the bottleneck.
const SOCKET_BUFFER_BYTES: usize = 4096;

const REGISTER: &str = "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }";
const CREATE_GROUP: &str = "mutation($i: CreateGroupInput!) { createGroup(input: $i) { id } }";
const CREATE_CHANNEL: &str =
    "mutation($i: CreateChannelInput!) { createChannel(input: $i) { id } }";
const JOIN_CHANNEL: &str = "mutation($c: ID!) { joinChannel(conversationId: $c) { id } }";
const SEND_MESSAGE: &str = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }";
/// What a chat client shows of a new message: who wrote it, when, and what.
const EVENTS: &str = "subscription($c: ID!) { conversationEvents(conversationId: $c) { \
    __typename ... on MessagePosted { message { id seq body createdAt author { id displayName } } } } }";

/// A signed-in user.
pub struct Session {
    pub token: String,
}

/// Why a call failed, coarse enough to tally: the HTTP status, the GraphQL error code,
/// or what went wrong on the way.
#[derive(Debug)]
pub enum CallError {
    Transport(&'static str, String),
    Status(u16),
    GraphQl(String, String),
    Shape(String),
}

impl CallError {
    /// The key errors are counted under.
    pub fn kind(&self) -> String {
        match self {
            Self::Transport(kind, _) => format!("transport {kind}"),
            Self::Status(status) => format!("http {status}"),
            Self::GraphQl(code, _) => format!("graphql {code}"),
            Self::Shape(_) => "unexpected response".to_owned(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(kind, detail) => write!(f, "{kind}: {detail}"),
            Self::Status(status) => write!(f, "HTTP status {status}"),
            Self::GraphQl(code, message) => write!(f, "GraphQL error {code}: {message}"),
            Self::Shape(detail) => write!(f, "unexpected response: {detail}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<reqwest::Error> for CallError {
    fn from(error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else if error.is_decode() {
            "decode"
        } else {
            "request"
        };
        Self::Transport(kind, error.to_string())
    }
}

/// One server: its `/graphql` endpoint over HTTP and WebSocket, with a pooled HTTP client.
pub struct Api {
    http: reqwest::Client,
    graphql_url: String,
    ws_url: String,
}

impl Api {
    /// `base` is the server's HTTP root, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let ws_base = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            bail!("--url must start with http:// or https://, got {base}");
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .context("HTTP client")?;
        Ok(Self {
            http,
            graphql_url: format!("{base}/graphql"),
            ws_url: format!("{ws_base}/graphql"),
        })
    }

    /// Posts an operation; its `data`, or the first error's `extensions.code`.
    pub async fn call(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> Result<Value, CallError> {
        let mut request = self
            .http
            .post(&self.graphql_url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        // GraphQL errors come with 200; a body with `errors` says more than the status.
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(_) if !status.is_success() => return Err(CallError::Status(status.as_u16())),
            Err(error) => return Err(error.into()),
        };
        if let Some(error) = body.pointer("/errors/0") {
            let code = error
                .pointer("/extensions/code")
                .and_then(Value::as_str)
                .unwrap_or("NO_CODE");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(CallError::GraphQl(code.to_owned(), message.to_owned()));
        }
        if !status.is_success() {
            return Err(CallError::Status(status.as_u16()));
        }
        match body.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(CallError::Shape(format!("no data in {body}"))),
        }
    }

    pub async fn register(&self, username: &str) -> anyhow::Result<Session> {
        let input = json!({ "username": username, "password": PASSWORD, "displayName": username });
        let data = self
            .call(REGISTER, json!({ "i": input }), None)
            .await
            .with_context(|| format!("register {username}"))?;
        Ok(Session {
            token: string_at(&data, "/register/accessToken")?,
        })
    }

    /// Registers `{prefix}{i}` for each i, `concurrency` at a time: each is a
    /// deliberately slow password hash, and all at once only queue on the server's cores.
    pub async fn register_many(
        &self,
        prefix: &str,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Session>> {
        futures::stream::iter(0..count)
            .map(|i| async move { self.register(&format!("{prefix}{i}")).await })
            .buffered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// A group with only its creator in it; its id.
    pub async fn create_group(&self, token: &str, title: &str) -> anyhow::Result<String> {
        let input = json!({ "title": title, "memberIds": [] });
        let data = self
            .call(CREATE_GROUP, json!({ "i": input }), Some(token))
            .await
            .context("createGroup")?;
        string_at(&data, "/createGroup/id")
    }

    /// A public channel; its id.
    pub async fn create_channel(&self, token: &str, slug: &str) -> anyhow::Result<String> {
        let input = json!({ "name": slug, "slug": slug, "visibility": "PUBLIC" });
        let data = self
            .call(CREATE_CHANNEL, json!({ "i": input }), Some(token))
            .await
            .context("createChannel")?;
        string_at(&data, "/createChannel/id")
    }

    pub async fn join_channel(&self, token: &str, conversation: &str) -> anyhow::Result<()> {
        self.call(JOIN_CHANNEL, json!({ "c": conversation }), Some(token))
            .await
            .context("joinChannel")
            .map(drop)
    }

    pub async fn send_message(
        &self,
        token: &str,
        conversation: &str,
        body: &str,
        client_message_id: &str,
    ) -> Result<(), CallError> {
        let input = json!({
            "conversationId": conversation,
            "body": body,
            "clientMessageId": client_message_id,
        });
        self.call(SEND_MESSAGE, json!({ "i": input }), Some(token))
            .await
            .map(drop)
    }

    /// Opens a socket, signs in and subscribes to a conversation's events. The server
    /// does not acknowledge a subscription, so the caller learns it is live only when
    /// an event arrives.
    pub async fn subscribe(&self, token: &str, conversation: &str) -> anyhow::Result<Socket> {
        let mut request = self.ws_url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().context("header")?,
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(SOCKET_BUFFER_BYTES)
            .write_buffer_size(0);
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .context("WebSocket handshake")?;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        socket.send(Message::text(init.to_string())).await?;
        loop {
            let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.next())
                .await
                .context("no connection_ack in time")?
                .context("socket ended before connection_ack")??;
            match frame {
                Message::Text(text) => match frame_type(text.as_str()).as_deref() {
                    Some("connection_ack") => break,
                    Some("ping" | "pong") => {}
                    _ => bail!("expected connection_ack, got {}", text.as_str()),
                },
                Message::Close(Some(close)) => bail!(
                    "closed before connection_ack: {} {}",
                    u16::from(close.code),
                    close.reason.as_str()
                ),
                Message::Close(None) => bail!("closed before connection_ack"),
                _ => {}
            }
        }
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": EVENTS, "variables": { "c": conversation } } });
        socket.send(Message::text(subscribe.to_string())).await?;
        Ok(socket)
    }
}

fn string_at(data: &Value, pointer: &str) -> anyhow::Result<String> {
    data.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {pointer} in {data}"))
}

/// What a subscription frame means to a reader.
pub enum Incoming {
    /// A message was posted; its body.
    Posted(String),
    /// The server's keep-alive, which graphql-transport-ws clients answer.
    Ping,
    /// Anything else that leaves the subscription running.
    Other,
    /// The subscription is over, and why.
    Ended(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Next {
    payload: NextPayload,
}

#[derive(Deserialize)]
struct NextPayload {
    #[serde(default)]
    data: Option<EventData>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(rename = "conversationEvents")]
    event: Option<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    message: Option<Posted>,
}

#[derive(Deserialize)]
struct Posted {
    #[serde(default)]
    body: Option<String>,
}

fn frame_type(text: &str) -> Option<String> {
    serde_json::from_str::<Envelope>(text)
        .ok()
        .map(|envelope| envelope.kind)
}

/// Reads one text frame of a `conversationEvents` subscription. Typed rather than a
/// `Value`: with a thousand sockets every frame is parsed a thousand times, on the
/// same two cores the server runs on.
pub fn interpret(text: &str) -> Incoming {
    let Some(kind) = frame_type(text) else {
        return Incoming::Ended(format!("unreadable frame: {text}"));
    };
    match kind.as_str() {
        "next" => match serde_json::from_str::<Next>(text) {
            Ok(next) => {
                if let Some(errors) = next.payload.errors {
                    return Incoming::Ended(format!("subscription error {}", error_code(&errors)));
                }
                let body = next
                    .payload
                    .data
                    .and_then(|data| data.event)
                    .and_then(|event| event.message)
                    .and_then(|message| message.body);
                body.map_or(Incoming::Other, Incoming::Posted)
            }
            Err(error) => Incoming::Ended(format!("unreadable next frame: {error}")),
        },
        "ping" => Incoming::Ping,
        "pong" => Incoming::Other,
        "error" => {
            let errors = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|mut frame| frame.get_mut("payload").map(Value::take))
                .unwrap_or(Value::Null);
            Incoming::Ended(format!("subscription error {}", error_code(&errors)))
        }
        "complete" => Incoming::Ended("subscription completed by the server".to_owned()),
        other => Incoming::Ended(format!("unexpected frame type {other}")),
    }
}

fn error_code(errors: &Value) -> String {
    errors
        .pointer("/0/extensions/code")
        .and_then(Value::as_str)
        .unwrap_or("without a code")
        .to_owned()
}
